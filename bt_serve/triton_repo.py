"""A Triton model repository from an export, for users who run the Triton container themselves
(`bt-run triton-repo EXPORT DIR`): one ONNX Runtime backend model per graph, and an ensemble `itm` wiring
vision_tower → text_tower → cross_modal_pooled (cross_modal in exports without it) as the manifest's `wiring` says.

Layout and what it needs:
- Every tensor is batch first (manifest schema 3 and later), so each graph model declares `max_batch_size` and Triton's
  dynamic batcher merges requests. Dims below are per request, without the batch axis.
- `cross_modal` (and `cross_modal_pooled`) in the repository is the export's graph with `image_index` replaced by
  `arange(batch)` inside the graph (one image per text, paired): a per-request `image_index` cannot survive Triton's
  batching (request k's index 0 would point at request 0's image). The export's own graph keeps the broadcast input
  for bt_runtime.
- The ensemble takes preprocessed tensors (`pixel_values` [3, S, S] FP32, `input_ids` / `attention_mask` [-1]
  INT64): Triton's ONNX Runtime backend has no image decoding or tokenizer. Preprocess client-side with bt_runtime
  (or a port of the manifest's preprocessing spec). Triton merges only requests whose shapes are equal: pad texts
  to one length (e.g. the tokenizer's max_length, or a few buckets) or requests of different lengths run alone.
- Where the export has TensorRT engines, each also gets a `<graph>_trt` model (`tensorrt_plan`).
Every config.pbtxt is parsed with the model-config protobuf that tritonclient ships (`validate()`), and
`simulate_itm()` runs the repository's graphs in the ensemble's order with ONNX Runtime. The ensemble itself was
never run in a Triton server here: there is no Triton ONNX Runtime backend on PyPI.

Needs the `onnx` package (graph edit) — installed with bt-toolkit's `export` extra, or `pip install onnx`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bt_runtime.errors import BtRuntimeError
from bt_runtime.features import check_positive
from bt_runtime.integrity import sha256_file
from bt_runtime.manifest import Manifest, TensorInfo, read_manifest
from bt_runtime.outputs import check_output_path, swap_into_place

MARKER = "bt-triton-repo.json"  # what bt-run wrote: every entry, recursively, files with their sha256
MARKER_FORMAT = "bt-triton-repo/2"
STAGING_BYTES = len(".") + len(".partial-") + 8  # `.NAME.partial-XXXXXXXX` (tempfile.mkdtemp) beside REPO
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "uint8": "TYPE_UINT8"}


def _dims(tensor: TensorInfo, where: str) -> list[int]:
    """Per-request dims: the batch axis (first) dropped, symbolic axes → -1."""
    if not tensor.shape or not isinstance(tensor.shape[0], str):
        raise BtRuntimeError(f"{where}.{tensor.name}: shape {tensor.shape} is not batch first (re-export with this "
                             "bt-export: manifest schema 3)")
    return [d if isinstance(d, int) else -1 for d in tensor.shape[1:]]


def _tensor_block(kind: str, tensors: list[TensorInfo], where: str) -> str:
    entries = []
    for t in tensors:
        entries.append(f'  {{\n    name: "{t.name}"\n    data_type: {TRITON_DTYPES[t.dtype]}\n'
                       f'    dims: [ {", ".join(str(d) for d in _dims(t, where))} ]\n  }}')
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def graph_config(name: str, backend: str, inputs: list[TensorInfo], outputs: list[TensorInfo], max_batch: int,
                 queue_delay_us: int, instances: int, kind: str, model_file: str) -> str:
    platform = 'backend: "onnxruntime"' if backend == "onnxruntime" else 'platform: "tensorrt_plan"'
    return (f'name: "{name}"\n{platform}\ndefault_model_filename: "{model_file}"\nmax_batch_size: {max_batch}\n'
            + _tensor_block("input", inputs, name) + _tensor_block("output", outputs, name)
            + f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}\n"
            + f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]\n")


def ensemble_config(manifest: Manifest, max_batch: int, outputs: list[str], suffix: str = "") -> str:
    """`itm{suffix}`: pixel_values, input_ids, attention_mask → the cross-modal `outputs`, steps wired from the
    manifest's wiring (each cross-modal input from the graph output or shared input it names); the cross-modal
    step is the cheapest graph that gives `outputs` (cross_modal_pooled where the export has it)."""
    cross = manifest.wiring.substitute_for("cross_modal", outputs)
    io = {g: manifest.graph_io(g) for g in ("vision_tower", "text_tower", cross)}
    inputs = io["vision_tower"].inputs + io["text_tower"].inputs
    out_tensors = [t for t in io[cross].outputs if t.name in outputs]
    steps = []

    def step(graph, input_map, output_map):
        ins = "".join(f'      input_map {{\n        key: "{k}"\n        value: "{v}"\n      }}\n'
                      for k, v in input_map.items())
        outs = "".join(f'      output_map {{\n        key: "{k}"\n        value: "{v}"\n      }}\n'
                       for k, v in output_map.items())
        steps.append(f'    {{\n      model_name: "{graph}{suffix}"\n      model_version: -1\n{ins}{outs}    }}')

    step("vision_tower", {t.name: t.name for t in io["vision_tower"].inputs}, {"image_bridge": "image_bridge"})
    step("text_tower", {t.name: t.name for t in io["text_tower"].inputs}, {"text_bridge": "text_bridge"})
    cross_inputs = {}
    for wire in manifest.wiring.wires:
        if wire.graph == cross:
            cross_inputs[wire.input] = wire.source  # graph outputs and shared inputs have ensemble-wide names
    step(cross, cross_inputs, {name: name for name in outputs})
    return (f'name: "itm{suffix}"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n'
            + _tensor_block("input", inputs, "itm") + _tensor_block("output", out_tensors, "itm")
            + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n")


def paired_cross_modal(source: Path, destination: Path, manifest: Manifest, graph_name: str = "cross_modal") -> None:
    """Copy the cross-modal graph with the broadcast input replaced by arange(batch of attention_mask)."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:
        raise BtRuntimeError("triton-repo needs the onnx package to edit the cross-modal graph: pip install onnx "
                             "(or bt-toolkit's export extra)") from None
    broadcast = manifest.wiring.broadcast
    model = onnx.load(str(source), load_external_data=False)
    graph = model.graph
    kept = [i for i in graph.input if i.name != broadcast.index_input]
    if len(kept) == len(graph.input):
        raise BtRuntimeError(f"{source.name} has no input {broadcast.index_input!r} to replace")
    paired_with = next(w.input for w in manifest.wiring.wires if w.graph == graph_name and w.source_kind == "input")
    names = {suffix: f"bt_paired_{suffix}" for suffix in ("shape", "batch", "zero", "one")}
    nodes = [
        helper.make_node("Shape", [paired_with], [names["shape"]], start=0, end=1),
        helper.make_node("Squeeze", [names["shape"]], [names["batch"]]),
        helper.make_node("Constant", [], [names["zero"]], value=helper.make_tensor("zero", TensorProto.INT64, [], [0])),
        helper.make_node("Constant", [], [names["one"]], value=helper.make_tensor("one", TensorProto.INT64, [], [1])),
        helper.make_node("Range", [names["zero"], names["batch"], names["one"]], [broadcast.index_input]),
    ]
    del graph.input[:]
    graph.input.extend(kept)
    for node in reversed(nodes):
        graph.node.insert(0, node)
    onnx.save(model, str(destination))
    onnx.checker.check_model(str(destination))  # by path: its external data (copied beside it first) is found


def _copy_graph(manifest: Manifest, entry, directory: Path) -> str:
    """The graph file and its external data into `directory` (names kept: the graph refers to them)."""
    shutil.copyfile(manifest.path(entry.file), directory / entry.file)
    _copy_external_data(manifest, entry, directory)
    return entry.file


def _copy_external_data(manifest: Manifest, entry, directory: Path) -> None:
    for data in entry.external_data:
        shutil.copyfile(manifest.path(data.file), directory / data.file)


def _record(root: Path) -> dict:
    """Every entry under `root` (the marker aside): directories by path, regular files by path → sha256."""
    files, directories = {}, []
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if name == MARKER:
            continue
        if path.is_dir():
            directories.append(name)
        else:
            files[name] = sha256_file(path)
    return {"directories": directories, "files": files}


def _read_marker(output: Path, given: str) -> dict:
    """The content record of an earlier `triton-repo`, or a one-line error when the marker is not one."""
    path = output / MARKER
    why = None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        data, why = None, f"unreadable ({type(err).__name__})"
    if why is None and not (isinstance(data, dict) and data.get("format") == MARKER_FORMAT
                            and isinstance(data.get("files"), dict) and isinstance(data.get("directories"), list)):
        why = (f"not a {MARKER_FORMAT} record (a repository written before bt-run recorded content, or edited)"
               if isinstance(data, dict) else f"a JSON {type(data).__name__}, not a {MARKER_FORMAT} record")
    if why is not None:
        raise BtRuntimeError(f"{given!r}: its {MARKER} is {why}; --overwrite replaces only what bt-run recorded "
                             "writing. Remove the directory yourself, or choose another")
    return data


def _foreign_entries(output: Path, record: dict) -> list[str]:
    """Entries under `output` that the record does not hold as they are now: unlisted paths, a file where a
    directory was written (or the reverse), a link, a file whose sha256 changed."""
    files, directories = record["files"], set(record["directories"])
    foreign = []
    for directory, subdirs, names in os.walk(output):  # links to directories are listed, never followed
        for name in sorted(subdirs + names):
            path = Path(directory, name)
            relative = path.relative_to(output).as_posix()
            if relative == MARKER:
                continue
            if path.is_symlink():
                foreign.append(f"{relative} (a symbolic link)")
            elif path.is_dir():
                if relative not in directories:
                    foreign.append(f"{relative}/")
            elif relative not in files or not path.is_file():
                foreign.append(relative)
            elif sha256_file(path) != files[relative]:
                foreign.append(f"{relative} (changed since bt-run wrote it: its sha256 differs)")
    return foreign


def _check_destination(output: Path, overwrite: bool) -> Path:
    given = str(output)
    output = check_output_path(output, "REPO", STAGING_BYTES)
    if output.exists() and not output.is_dir():
        raise BtRuntimeError(f"{given!r} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()):
        if not (output / MARKER).is_file():
            raise BtRuntimeError(f"{given!r} is not empty and is not a repository written by bt-run triton-repo; "
                                 "choose an empty or new directory")
        if not overwrite:
            raise BtRuntimeError(f"{given!r} already holds a model repository; pass --overwrite to replace it")
        foreign = _foreign_entries(output, _read_marker(output, given))
        if foreign:
            raise BtRuntimeError(f"{given!r} holds entries bt-run did not write: {foreign[:8]}"
                                 f"{'…' if len(foreign) > 8 else ''}; --overwrite would delete them. Move them away, "
                                 "or choose another directory")
    return output


def _cannot_write(output: Path, err: OSError) -> str:
    return f"REPO {str(output)!r}: cannot write ({err.strerror or type(err).__name__}: {err.filename or ''})"


def write(export_dir: str | Path, output: str | Path, precision: str = "fp32", max_batch: int = 16,
          queue_delay_us: int = 2000, instances: int = 1, kind: str = "KIND_CPU",
          overwrite: bool = False) -> list[str]:
    """Write the repository atomically (a temp directory beside `output`, renamed into place); the model names."""
    if kind not in ("KIND_CPU", "KIND_GPU"):
        raise BtRuntimeError(f"kind {kind!r}; valid: KIND_CPU, KIND_GPU")
    max_batch, instances = check_positive(max_batch, "max_batch"), check_positive(instances, "instances")
    queue_delay_us = check_positive(queue_delay_us, "queue_delay_us", minimum=0)  # Triton's field is unsigned
    manifest = read_manifest(export_dir)
    if precision not in manifest.variants:
        raise BtRuntimeError(f"precision {precision!r} is not in this export; valid: {list(manifest.precisions)}")
    output = _check_destination(Path(output), overwrite)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    except OSError as err:
        raise BtRuntimeError(_cannot_write(output, err)) from None
    try:
        models = _write_into(staging, manifest, precision, max_batch, queue_delay_us, instances, kind)
        validate(staging)
        marker = {"format": MARKER_FORMAT, "export": str(Path(export_dir).resolve()), "precision": precision,
                  "entries": models, **_record(staging)}
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        os.chmod(staging, 0o755)
        _check_destination(output, overwrite)  # nothing foreign appeared there while we worked
        swap_into_place(staging, output)
    except OSError as err:  # disk full, permissions changed while writing: nothing half-written stays
        shutil.rmtree(staging, ignore_errors=True)
        raise BtRuntimeError(_cannot_write(output, err)) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return models


def _write_into(root: Path, manifest: Manifest, precision: str, max_batch: int, queue_delay_us: int,
                instances: int, kind: str) -> list[str]:
    models = []
    index_input = manifest.wiring.broadcast.index_input
    for graph in manifest.graphs:
        io = manifest.graph_io(graph)
        version = root / graph / "1"
        version.mkdir(parents=True)
        entry = manifest.graph_file(graph, precision)
        inputs = io.inputs
        if index_input in [t.name for t in io.inputs]:  # cross_modal and its head-specific form
            _copy_external_data(manifest, entry, version)  # beside it first: the edited graph is checked by path
            paired_cross_modal(manifest.path(entry.file), version / "model.onnx", manifest, graph)
            model_file = "model.onnx"
            inputs = [t for t in io.inputs if t.name != index_input]
        else:
            model_file = _copy_graph(manifest, entry, version)
        (root / graph / "config.pbtxt").write_text(graph_config(graph, "onnxruntime", inputs, io.outputs, max_batch,
                                                                queue_delay_us, instances, kind, model_file))
        models.append(graph)
    outputs = [t.name for t in manifest.graph_io("cross_modal").outputs if t.name != "mlm_logits"]
    if "itm_logits" in outputs:
        (root / "itm" / "1").mkdir(parents=True)  # an ensemble has an empty version directory
        (root / "itm" / "config.pbtxt").write_text(ensemble_config(manifest, max_batch, ["itm_logits"]))
        models.append("itm")
    section = manifest.tensorrt.get(precision)
    for graph, engine in (section.engines if section else {}).items():
        name = f"{graph}_trt"
        (root / name / "1").mkdir(parents=True)
        shutil.copyfile(manifest.path(engine.file), root / name / "1" / "model.plan")
        io = manifest.graph_io(graph)
        (root / name / "config.pbtxt").write_text(graph_config(name, "tensorrt", io.inputs, io.outputs, max_batch,
                                                               queue_delay_us, instances, "KIND_GPU", "model.plan"))
        models.append(name)
    return models


def validate(root: str | Path) -> dict[str, object]:
    """Parse every config.pbtxt with tritonclient's model-config protobuf (field names, enum values, nesting)
    and check the repository's own consistency: model files present, names match folders, every ensemble step
    names a model of the repository and only tensors that model declares. Returns the parsed configs."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise BtRuntimeError("validating a model repository needs tritonclient[grpc] (pip install "
                             "'tritonclient[grpc]')") from None
    root = Path(root)
    configs = {}
    for path in sorted(root.glob("*/config.pbtxt")):
        config = model_config_pb2.ModelConfig()
        try:
            text_format.Parse(path.read_text(), config)
        except text_format.ParseError as err:
            raise BtRuntimeError(f"{path}: not a valid Triton model config: {err}") from None
        if config.name != path.parent.name:
            raise BtRuntimeError(f"{path}: name {config.name!r} differs from its folder {path.parent.name!r}")
        if config.platform != "ensemble":
            model_file = path.parent / "1" / config.default_model_filename
            if not model_file.is_file():
                raise BtRuntimeError(f"{path}: {model_file} is missing")
        configs[config.name] = config
    for config in configs.values():
        for step in config.ensemble_scheduling.step:
            target = configs.get(step.model_name)
            if target is None:
                raise BtRuntimeError(f"ensemble {config.name}: step names model {step.model_name!r}, not in the "
                                     "repository")
            declared_in = {t.name for t in target.input}
            declared_out = {t.name for t in target.output}
            if set(step.input_map) != declared_in:
                raise BtRuntimeError(f"ensemble {config.name}: step {step.model_name} maps inputs "
                                     f"{sorted(step.input_map)}; the model declares {sorted(declared_in)}")
            if not set(step.output_map) <= declared_out:
                raise BtRuntimeError(f"ensemble {config.name}: step {step.model_name} reads outputs "
                                     f"{sorted(set(step.output_map) - declared_out)} the model does not declare")
    return configs


def simulate_itm(root: str | Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the `itm` ensemble's steps in order with ONNX Runtime on the repository's own files and configs
    (tensor names through input_map/output_map as Triton would) → the ensemble's outputs."""
    import onnxruntime as ort

    configs = validate(root)
    ensemble = configs["itm"]
    values = dict(feeds)
    for step in ensemble.ensemble_scheduling.step:
        config = configs[step.model_name]
        session = ort.InferenceSession(str(Path(root) / step.model_name / "1" / config.default_model_filename),
                                       providers=["CPUExecutionProvider"])
        out = session.run(list(step.output_map), {name: values[source] for name, source in step.input_map.items()})
        values.update({step.output_map[name]: value for name, value in zip(step.output_map, out, strict=True)})
    return {t.name: values[t.name] for t in ensemble.output}
