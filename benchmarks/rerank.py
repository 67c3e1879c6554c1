"""1 image × N texts ITM: bt_runtime (vision tower once, cross-modal batched) vs the transformers documentation's
loop (one processor + model call per text), interleaved run by run on the same inputs.

    python3 -m benchmarks.rerank exports/base --checkpoint base-itm-mlm --random-init --tokenizer DIR --image PHOTO
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

DEFAULT_TEXTS = ["An image of two cats chilling on a couch", "A football player scoring a goal",
                 "a cat looking out of the window", "a bowl of fruit on a wooden table next to a glass of water"]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def texts_of(count: int) -> list[str]:
    return [f"{DEFAULT_TEXTS[i % len(DEFAULT_TEXTS)]} ({i})" for i in range(count)]


def measure_rerank(export_dir: Path, image, texts: list[str], eager, runs: int = 3, warmup: int = 1,
                   batch_size: int = 32) -> dict:
    """Interleave runtime.itm_scores and eager's per-text loop; medians, ratio and the agreement of both."""
    from bt_runtime import BridgeTowerRuntime

    runtime = BridgeTowerRuntime.load(export_dir)
    from PIL import Image

    pil = Image.open(image) if isinstance(image, (str, Path)) else image
    samples = {"runtime": [], "eager_loop": []}
    scores = {}
    for iteration in range(warmup + runs):
        started = time.perf_counter()
        scores["runtime"] = runtime.itm_scores(image, texts, batch_size=batch_size)
        runtime_seconds = time.perf_counter() - started
        started = time.perf_counter()
        scores["eager_loop"] = np.array([eager.itm_probability(pil, text) for text in texts])
        eager_seconds = time.perf_counter() - started
        if iteration >= warmup:
            samples["runtime"].append(runtime_seconds)
            samples["eager_loop"].append(eager_seconds)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {"texts": len(texts), "runs": runs, "warmup": warmup, "batch_size": batch_size,
            "median_s": medians, "samples_s": samples, "speedup": medians["eager_loop"] / medians["runtime"],
            "max_abs_diff": float(np.abs(scores["runtime"] - scores["eager_loop"]).max()),
            "machine": {"cpu": cpu_name(), "cores": __import__("os").cpu_count(), "python": platform.python_version()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--checkpoint", default="tiny")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--num-texts", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    import torch

    from bt_export.eager import EagerBridgeTower

    eager = EagerBridgeTower(args.checkpoint, args.export_dir, random_init=args.random_init, tokenizer=args.tokenizer)
    result = measure_rerank(args.export_dir, args.image, texts_of(args.num_texts), eager, args.runs, args.warmup)
    result["torch_threads"] = torch.get_num_threads()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
