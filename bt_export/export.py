"""`export_checkpoint`: checkpoint → three validated ONNX graphs + tokenizer + manifest.json, written atomically."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bt_runtime.manifest import MANIFEST_NAME

from .checkpoints import copy_tokenizer, load_checkpoint
from .errors import ParityError
from .manifest import build_manifest, file_entry
from .onnx_export import DEFAULT_OPSET, example_inputs, export_graph
from .parity import ParityRow, check_parity, eager_references
from .samples import hf_processor, load_images, make_samples
from .specs import graph_specs
from .staging import check_output_dir, staged_directory


@dataclass
class ExportResult:
    output: Path
    manifest: dict
    parity: list[ParityRow] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.output.iterdir() if p.is_file())


def export_checkpoint(checkpoint: str, output: str | Path, *, random_init: bool = False,
                      tokenizer: str | Path | None = None, revision: str | None = None, overwrite: bool = False,
                      validate: bool = True, parity_images: list[str | Path] | None = None,
                      opset: int = DEFAULT_OPSET, log=lambda message: None) -> ExportResult:
    """Export `checkpoint` into `output`. Raises ParityError (nothing written) if any output exceeds its tolerance."""
    started = time.perf_counter()
    output = Path(output)
    check_output_dir(output, overwrite)  # fail before spending a minute on loading
    images, image_names = load_images([Path(p) for p in parity_images]) if parity_images else (None, None)
    log(f"loading {checkpoint}{' (random init)' if random_init else ''}")
    loaded = load_checkpoint(checkpoint, random_init=random_init, tokenizer=tokenizer, revision=revision)
    specs = graph_specs(loaded.config, loaded.heads)
    with staged_directory(output, overwrite) as staging:
        tokenizer_files = copy_tokenizer(loaded, staging)
        processor = hf_processor(loaded.image_processor, staging)
        samples = make_samples(processor, images, image_names)
        log("computing eager PyTorch references")
        refs = eager_references(loaded.model, samples, specs, loaded.heads)
        # image_bridge example of a smaller batch than the texts, so tracing keeps `image_batch` and `batch` apart
        image_rows = max(2, samples.input_ids.shape[0] // 2)
        bridges = {"text_bridge": torch.from_numpy(refs.graph_outputs["text_tower"]["text_bridge"]),
                   "image_bridge": torch.from_numpy(refs.graph_outputs["vision_tower"]["image_bridge"][:, :image_rows])}
        for spec in specs.values():
            log(f"exporting {spec.file}")
            inputs = example_inputs(spec, samples, bridges)
            if spec.name == "cross_modal":
                inputs = (*inputs[:3], inputs[3] % image_rows)
            export_graph(loaded.model, spec, inputs, staging, opset)
        rows = []
        if validate:
            log("checking parity with ONNX Runtime")
            rows = check_parity(staging, specs, refs)
        variants = {"fp32": {
            "attention": "unfused", "io_dtype": "float32",
            "files": {name: file_entry(staging, spec.file) for name, spec in specs.items()},
            "parity": {"validated": validate, "passed": all(r.passed for r in rows) if validate else None,
                       "inputs": {"texts": samples.texts, "images": samples.image_names},
                       "rows": [r.to_json() for r in rows]},
        }}
        manifest = build_manifest(loaded, specs, staging, processor, tokenizer_files, variants, opset)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        failed = [r for r in rows if not r.passed]
        if failed:
            raise ParityError(f"{len(failed)} output(s) disagree with eager PyTorch beyond tolerance: "
                              + ", ".join(f"{r.check}/{r.output} ({r.max_abs_diff:.3g} > {r.tolerance:.0e})"
                                          for r in failed), rows)
    return ExportResult(output, manifest, rows, time.perf_counter() - started)
