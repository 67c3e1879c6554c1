"""`export_checkpoint`: checkpoint → three validated ONNX graphs per precision + tokenizer + manifest.json,
written atomically."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from bt_runtime.manifest import MANIFEST_NAME

from .checkpoints import copy_tokenizer, load_checkpoint
from .errors import BtExportError, ParityError
from .fused import ATTENTION_MODES, count_attention
from .manifest import build_manifest, file_entry
from .onnx_export import DEFAULT_OPSET, example_inputs, export_graph
from .parity import ParityRow, check_parity, check_task_parity, eager_references
from .precision import INT8_EXCLUDED, PRECISIONS, variant_details, variant_file, write_variant
from .samples import hf_processor, load_images, make_samples
from .specs import VARIANT_BOUNDS, graph_specs
from .staging import check_output_dir, staged_directory

# Measured on this project's CPU machine (full-size base, 1 pair, int8): ONNX Attention 312 ms, com.microsoft
# MultiHeadAttention 348 ms, fp32 within noise of each other. `onnx` is also the portable one (TensorRT ≥ 10.14).
DEFAULT_ATTENTION = "onnx"


@dataclass
class ExportResult:
    output: Path
    manifest: dict
    parity: dict[str, list[ParityRow]] = field(default_factory=dict)  # precision → rows
    seconds: float = 0.0

    @property
    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.output.iterdir() if p.is_file())


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
                      log=lambda message: None) -> ExportResult:
    """Export `checkpoint` into `output`. Raises ParityError (nothing written) if any check fails its bound."""
    started = time.perf_counter()
    output = Path(output)
    precisions = _check_choices(attention, tuple(precisions))
    if attention != "none" and opset < 23:
        raise BtExportError(f"--attention {attention} needs --opset ≥ 23 (ONNX Attention), got {opset}")
    check_output_dir(output, overwrite)  # fail before spending a minute on loading
    images, image_names = load_images([Path(p) for p in parity_images]) if parity_images else (None, None)
    log(f"loading {checkpoint}{' (random init)' if random_init else ''}")
    loaded = load_checkpoint(checkpoint, random_init=random_init, tokenizer=tokenizer, revision=revision)
    specs = graph_specs(loaded.config, loaded.heads)
    with staged_directory(output, overwrite) as staging:
        tokenizer_files = copy_tokenizer(loaded, staging)
        processor = hf_processor(loaded.image_processor, staging)
        # Reduced precisions are judged in task terms over every image × caption pair.
        samples = make_samples(processor, images, image_names, grid=precisions != ("fp32",))
        log(f"computing eager PyTorch references on {len(samples.texts)} image-text pairs")
        refs = eager_references(loaded.model, samples, specs, loaded.heads)
        # image_bridge example of a smaller batch than the texts, so tracing keeps `image_batch` and `batch` apart
        image_rows = max(2, samples.input_ids.shape[0] // 2)
        bridges = {"text_bridge": torch.from_numpy(refs.graph_outputs["text_tower"]["text_bridge"]),
                   "image_bridge": torch.from_numpy(refs.graph_outputs["vision_tower"]["image_bridge"][:, :image_rows])}
        for spec in specs.values():
            log(f"exporting {spec.file} (attention: {attention})")
            inputs = example_inputs(spec, samples, bridges)
            if spec.name == "cross_modal":
                inputs = (*inputs[:3], inputs[3] % image_rows)
            export_graph(loaded.model, spec, inputs, staging, opset, attention)
        variants, parity = {}, {}
        for precision in precisions:
            files = {name: variant_file(spec.file, precision) for name, spec in specs.items()}
            details = variant_details(precision, int8_excluded)
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
            variants[precision] = {
                "attention": attention, **details,
                "fused_attention_nodes": {name: count_attention(onnx.load(str(staging / f), load_external_data=False))
                                          for name, f in files.items()},
                "files": {name: file_entry(staging, f) for name, f in files.items()},
                "parity": {"validated": validate, "passed": all(r.passed for r in rows) if validate else None,
                           "inputs": {"texts": samples.texts, "images": samples.image_names},
                           "rows": [r.to_json() for r in rows]},
            }
        manifest = build_manifest(loaded, specs, staging, processor, tokenizer_files, variants, opset)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        failed = [(p, r) for p, rows in parity.items() for r in rows if not r.passed]
        if failed:
            raise ParityError(f"{len(failed)} check(s) disagree with eager PyTorch beyond their bound: "
                              + ", ".join(f"{p} {r.check}/{r.output} {r.metric}={r.value:.3g} (bound {r.bound:.3g})"
                                          for p, r in failed), parity)
    return ExportResult(output, manifest, parity, time.perf_counter() - started)
