"""`export_checkpoint`: checkpoint → validated ONNX graphs (the three, + cross_modal_pooled with an MLM head) per
precision + tokenizer + manifest.json, written atomically."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from bt_runtime.cpu import isa_class
from bt_runtime.manifest import Parity, RejectedVariant, Variant, checked, write_manifest

from .checkpoints import load_checkpoint
from .errors import BtExportError, ParityError, VariantsRejected
from .fused import ATTENTION_MODES, count_attention
from .manifest import build_manifest, graph_file_entry
from .onnx_export import DEFAULT_OPSET, MIN_OPSET, example_inputs, export_graph
from .parity import ParityRow, check_parity, check_runtime_loads, check_task_parity, eager_references
from .precision import INT8_EXCLUDED, PRECISIONS, variant_details, variant_file, write_variant
from .samples import DEFAULT_TEXTS, hf_processor, load_images, make_samples, shapes_calibration
from .specs import VARIANT_BOUNDS, computes, graph_specs
from .staging import check_output_dir, staged_directory
from .tokenizer_files import copy_tokenizer

# Measured on this project's CPU machine (full-size base, 1 pair, int8): ONNX Attention 312 ms, com.microsoft
# MultiHeadAttention 348 ms, fp32 within noise of each other. `onnx` is also the portable one (TensorRT ≥ 10.14).
DEFAULT_ATTENTION = "onnx"


@dataclass
class ExportResult:
    output: Path
    manifest: object  # bt_runtime.manifest.Manifest
    parity: dict[str, list[ParityRow]] = field(default_factory=dict)  # precision → rows
    seconds: float = 0.0

    @property
    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.output.iterdir() if p.is_file())


# Lowest ONNX Runtime that loads and runs a variant, by the highest default-domain opset in its files. Measured with
# scripts/ort_floor.py on the tiny export, every variant (fp32, fp16, int8) of each attention mode run on the golden
# inputs (docs/development.md, "Minimum ONNX Runtime"):
#   opset 23 (the default `--attention onnx`, and `ort`): 1.23.0 runs them; 1.22.1, 1.20.1 refuse the opset.
#   opset 18 (`--attention none --opset 17`, which torch.onnx writes as 18; IR version 10): 1.18.1, 1.19.2, 1.20.1,
#   1.22.1 run them; 1.17.3 refuses IR version 10.
# Other opsets were not measured: the manifest then says null.
MIN_ONNXRUNTIME = {23: "1.23.0", 18: "1.18.1"}


def export_graphs(model, specs: dict, samples, refs, directory: Path, opset: int, attention: str,
                  log=lambda message: None) -> None:
    """Trace the three graphs into `directory`, with the eager references' bridges as cross-modal examples."""
    # image_bridge example of a smaller batch than the texts, so tracing keeps `image_batch` and `batch` apart
    image_rows = max(2, samples.input_ids.shape[0] // 2)
    bridges = {"text_bridge": torch.from_numpy(refs.graph_outputs["text_tower"]["text_bridge"]),
               "image_bridge": torch.from_numpy(refs.graph_outputs["vision_tower"]["image_bridge"][:image_rows])}
    for spec in specs.values():
        log(f"exporting {spec.file} (attention: {attention})")
        inputs = example_inputs(spec, samples, bridges)
        if computes(spec.name) == "cross_modal":
            inputs = (*inputs[:3], inputs[3] % image_rows)
        export_graph(model, spec, inputs, directory, opset, attention)


def _check_choices(attention: str, precisions: tuple[str, ...]) -> tuple[str, ...]:
    if attention not in ATTENTION_MODES:
        raise BtExportError(f"--attention {attention!r}; valid: {', '.join(ATTENTION_MODES)}")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        raise BtExportError(f"--precision {','.join(precisions)!r}; valid: a comma list of {', '.join(PRECISIONS)}")
    return tuple(p for p in PRECISIONS if p in precisions)  # fp32 first: the others are made from it


def export_checkpoint(checkpoint: str, output: str | Path, *, random_init: bool = False,
                      tokenizer: str | Path | None = None, revision: str | None = None, overwrite: bool = False,
                      validate: bool = True, parity_images: list[str | Path] | None = None,
                      opset: int = DEFAULT_OPSET, attention: str = DEFAULT_ATTENTION,
                      precisions: tuple[str, ...] = ("fp32",), int8_excluded: tuple[str, ...] = INT8_EXCLUDED,
                      int8_search: bool = False, log=lambda message: None) -> ExportResult:
    """Export `checkpoint` into `output`.

    fp32 failing a bound raises ParityError and nothing is written. A reduced precision failing its bounds is left
    out, recorded under the manifest's `rejected_variants`, and VariantsRejected is raised after the export (fp32
    and the passing variants) has been committed. The last step before the commit loads the staged directory
    with bt_runtime and scores one pair against eager transformers. int8_search: choose the int8 blocks by
    measurement on the parity pairs (bt_export.int8_search) instead of `int8_excluded`."""
    started = time.perf_counter()
    output = Path(output)
    precisions = _check_choices(attention, tuple(precisions))
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= DEFAULT_OPSET:
        # torch.onnx writes below 18 as 18 and falls back to 18 where it cannot convert up (an opset 99 request
        # failed deep in the export): only the range this exporter writes as asked
        raise BtExportError(f"--opset {opset!r}; valid: {MIN_OPSET} to {DEFAULT_OPSET} ({DEFAULT_OPSET}, the default, "
                            f"for fused attention; {MIN_OPSET} with --attention none is the portable recipe)")
    if attention != "none" and opset < 23:
        raise BtExportError(f"--attention {attention} needs --opset ≥ 23 (ONNX Attention), got {opset}")
    if int8_search and "int8" not in precisions:
        raise BtExportError("--int8-search chooses the blocks of the int8 variant: add int8 to --precision")
    for pattern in int8_excluded:  # a bad pattern would fail only after every graph is exported
        try:
            re.compile(pattern)
        except re.error as err:
            raise BtExportError(f"--int8-exclude {pattern!r}: not a regular expression ({err}); patterns match "
                                "'<graph>/<module path>', e.g. '^text_tower/'") from None
    if int8_search and not validate:
        raise BtExportError("--int8-search measures every candidate against eager PyTorch: it cannot run with "
                            "--no-validate")
    check_output_dir(output, overwrite)  # fail before spending a minute on loading
    images, image_names = load_images([Path(p) for p in parity_images]) if parity_images else (None, None)
    log(f"loading {checkpoint}{' (random init)' if random_init else ''}")
    loaded = load_checkpoint(checkpoint, random_init=random_init, tokenizer=tokenizer, revision=revision)
    if loaded.unused:
        log(f"{loaded.unused_note()} (not exported)")
    specs = graph_specs(loaded.config, loaded.heads)
    with staged_directory(output, overwrite) as staging:
        tokenizer_files = copy_tokenizer(loaded, staging)
        processor = hf_processor(loaded.image_processor, staging)
        # Reduced precisions are judged in task terms over every image × caption pair.
        texts = DEFAULT_TEXTS
        if images is None and loaded.source.get("kind") == "shapes":
            images, image_names, texts = shapes_calibration()
        samples = make_samples(processor, images, image_names, texts, grid=precisions != ("fp32",))
        log(f"computing eager PyTorch references on {len(samples.texts)} image-text pairs")
        refs = eager_references(loaded.model, samples, specs, loaded.heads)
        export_graphs(loaded.model, specs, samples, refs, staging, opset, attention, log)
        variants, rejected, parity = {}, {}, {}
        for precision in precisions:
            files = {name: variant_file(spec.file, precision) for name, spec in specs.items()}
            searched = None
            if precision == "int8" and int8_search:
                from .int8_search import search

                log(f"int8 search over the blocks of every graph on {len(samples.texts)} calibration pairs")
                int8_excluded, searched = search(staging, specs, refs, VARIANT_BOUNDS["int8"], log)
            details = variant_details(precision, int8_excluded)
            if searched is not None:
                details["search"] = {"calibration_pairs": len(samples.texts), "isa": isa_class(),
                                     "chosen": [r.block for r in searched if r.chosen],
                                     "blocks": [r.to_json() for r in searched]}
            if precision != "fp32":
                log(f"writing {precision} variants")
                for name, spec in specs.items():
                    written = write_variant(precision, name, staging / spec.file, staging / files[name], int8_excluded)
                    if written is None:  # identical to fp32: share that file
                        files[name] = spec.file
                        details.setdefault("graphs", {})[name] = "fp32 (all excluded)"
                    elif written:
                        details.setdefault("graphs", {})[name] = written
            rows = []
            if validate:
                log(f"checking {precision} parity with ONNX Runtime")
                rows = (check_parity(staging, specs, refs, files) if precision == "fp32" else
                        check_task_parity(staging, specs, refs, files, VARIANT_BOUNDS[precision]))
            parity[precision] = rows
            record = Parity(validated=validate, passed=all(r.passed for r in rows) if validate else None,
                            inputs={"texts": samples.texts, "images": samples.image_names},
                            rows=[r.to_json() for r in rows])
            failed = [r for r in rows if not r.passed]
            if failed and precision == "fp32":
                raise ParityError(f"{len(failed)} fp32 check(s) disagree with eager PyTorch beyond their bound: "
                                  + _describe(failed), rows=parity)
            if failed:  # a reduced precision that misses its bounds is left out, never the whole export
                for name, file in files.items():
                    if file != specs[name].file:
                        (staging / file).unlink(missing_ok=True)
                        (staging / f"{file}.data").unlink(missing_ok=True)  # its weights (onnx_export.save_model)
                rejected[precision] = RejectedVariant(f"missed its bounds on {isa_class()}: {_describe(failed)}",
                                                      record)
                log(f"{precision} rejected: {_describe(failed)}")
                continue
            entries = {name: graph_file_entry(staging, f) for name, f in files.items()}
            variants[precision] = Variant(
                attention=attention, io_dtype=details.pop("io_dtype"), details=details, parity=record,
                fused_attention_nodes={name: count_attention(onnx.load(str(staging / f), load_external_data=False))
                                       for name, f in files.items()},
                files=entries, validated_isa=isa_class() if precision == "int8" and validate else None,
                min_onnxruntime=MIN_ONNXRUNTIME.get(max(e.opset for e in entries.values())))
            if precision == "int8" and validate:  # recipes for this CPU's class, measured here (docs/int8.md)
                from .int8_recipes import measure_recipes

                variants[precision].recipes, left_out = measure_recipes(
                    staging, specs, refs, files, _checkpoint_words(checkpoint, random_init), log)
                if left_out:
                    variants[precision].details["recipes_left_out"] = left_out
        manifest = build_manifest(loaded, specs, staging, processor, tokenizer_files, variants, rejected)
        if validate:
            log("opening the staged export with bt_runtime (no torch) to score one pair")
            row, manifest.golden = check_runtime_loads(checked(manifest, staging), samples, refs, loaded.heads)
            parity["fp32"].append(row)
            manifest.variants["fp32"].parity.rows.append(row.to_json())
        write_manifest(staging, manifest)  # once, complete
    result = ExportResult(output, manifest, parity, time.perf_counter() - started)
    if rejected:
        raise VariantsRejected(f"precision variant(s) {sorted(rejected)} missed their bounds and were left out; "
                               f"{output} holds {sorted(variants)}", result=result)
    return result


def _checkpoint_words(checkpoint: str, random_init: bool) -> str:
    return f"{checkpoint}{' (random init)' if random_init else ''}"


def _describe(rows: list[ParityRow]) -> str:
    return ", ".join(f"{r.check}/{r.output} {r.metric}={r.value:.3g} (bound {r.bound:.3g})" for r in rows)
