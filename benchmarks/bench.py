"""`run_benchmark`: every requested scenario × backend on one export, against eager PyTorch in the same run."""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

from bt_runtime import read_manifest

from . import machine, scenarios
from .backends import BackendUnavailable, make_backend
from .report import build
from .scenarios import SCENARIOS, Settings


def default_backends(manifest) -> list[str]:
    """torch fp32 (the baseline), torch bf16 where the CPU has bf16 instructions, and every variant of the export
    on ONNX Runtime's default provider."""
    bf16 = any(flag in machine.cpu_info()["flags"] for flag in ("avx512_bf16", "amx_bf16"))
    # the peers a user's own export would be: the whole model traced, and its one-line int8
    naive = ["onnxruntime-naive", "onnxruntime-naive:int8"] if "itm" in manifest.heads else []
    return ["torch", *(["torch:bf16"] if bf16 else [])] + [f"onnxruntime:{p}" for p in manifest.precisions] + naive


def eager_for(manifest):
    """Eager transformers on the export's own checkpoint (same weights: random init is reproduced by its seed)."""
    from bt_export.eager import EagerBridgeTower

    source = manifest.checkpoint
    if source.kind == "shapes":  # the shipped reference checkpoint (bt_export/assets/shapes), by its name
        return EagerBridgeTower("shapes", manifest.directory)
    if source.random_init or source.kind == "tiny":
        return EagerBridgeTower(source.alias, manifest.directory, random_init=source.kind != "tiny",
                                tokenizer=manifest.directory)
    return EagerBridgeTower(source.path or source.hub_id, manifest.directory)


def load_images(paths: list[Path] | None) -> list:
    """Decoded PIL images (both sides get the same pixels; decoding is not what is measured)."""
    from bt_export.samples import load_images as decode
    from bt_export.samples import synthetic_images

    return decode(list(paths))[0] if paths else synthetic_images(4)


def run_benchmark(export_dir: Path, scenario_names: list[str] | None = None, backend_labels: list[str] | None = None,
                  settings: Settings | None = None, images: list[Path] | None = None, log=print) -> dict:
    settings = settings or Settings()
    manifest = read_manifest(export_dir)
    unknown = [s for s in scenario_names or [] if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"--scenario {unknown}; valid: {list(SCENARIOS)}")
    chosen = scenario_names or [s for s in SCENARIOS]
    labels = backend_labels or default_backends(manifest)
    if "torch" not in labels:
        labels = ["torch", *labels]  # the baseline every ratio and agreement check is against
    eager = eager_for(manifest)
    backends, skipped = [], []
    workdir = tempfile.TemporaryDirectory(prefix="bt-bench-")  # the naive export's graph, removed at the end
    for label in labels:
        try:
            backends.append(make_backend(label, export_dir, manifest, eager, workdir.name))
        except BackendUnavailable as err:
            skipped.append(str(err))
            log(f"skipped {err}")
    runtime = next((b.runtime for b in backends if hasattr(b, "runtime")), None)
    if runtime is None:  # every backend asked for was skipped: nothing to measure against eager
        raise ValueError(f"no backend of this export could be made ({'; '.join(skipped)}); valid backends: "
                         "onnxruntime:<precision>, onnxruntime-naive[:int8], tensorrt:<precision>")
    gallery = load_images(images)
    log("measuring this machine's matmul rate")
    context = {
        "command": " ".join(shlex.quote(a) for a in ["bt-bench", *sys.argv[1:]]),
        "export": {"directory": str(export_dir), "checkpoint": manifest.checkpoint.alias
                   or manifest.checkpoint.hub_id or manifest.checkpoint.path,
                   "random_init": manifest.checkpoint.random_init,
                   "attention": {p: v.attention for p, v in manifest.variants.items()}},
        "machine": {"cpu": machine.cpu_info(), "gpu": machine.gpu_info()},
        "versions": machine.versions(), "threads": machine.thread_settings(),
        "matmul_gflops": machine.matmul_gflops(),
        "settings": vars(settings) | {"batch_sizes": list(settings.batch_sizes)},
        "skipped": skipped,
        # which int8 files ran (docs/int8.md: the recipe is chosen per CPU class at load) and how busy the machine was
        "int8_recipes": {b.label: f"{b.runtime.backend.int8_recipe}: {b.runtime.backend.int8_recipe_reason}"
                         for b in backends if hasattr(b, "runtime") and b.runtime.backend.precision == "int8"
                         and hasattr(b.runtime.backend, "int8_recipe")},
        "load_average": machine.load_average(),
    }
    rows = []
    image = gallery[0]
    every = backends
    for name in chosen:
        log(f"scenario {name}")
        backends = [b for b in every if name in getattr(b, "scenarios", SCENARIOS)]
        if name == "pair":
            rows += scenarios.pair(backends, runtime, image, settings)
        elif name == "rerank":
            rows += scenarios.rerank(backends, runtime, image, settings)
        elif name in ("embed-images", "embed-texts"):
            rows += scenarios.embed(name.split("-")[1], backends, runtime, image, settings)
        elif name == "retrieve":
            rows += scenarios.retrieve(backends, runtime, gallery, settings)
        elif name == "cold-start":
            rows += scenarios.cold_start(backends, runtime, _saved(image), eager, settings)
    workdir.cleanup()
    report = build(rows, context)
    report["load_average_end"] = machine.load_average()
    report["failing"] = [f"{r['scenario']} {r['backend']}" for r in report["results"]
                         if r["agreement"] and not r["agreement"]["passed"]]
    return report


def _saved(image) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "image.png"
    image.save(path)
    return path
