"""Where the time of one ITM pair goes on a GPU, and what CUDA graphs change: for ONNX Runtime's CUDA provider,
wall time vs the summed kernel time and kernel count (read with torch.profiler, whose CUPTI tracing sees every CUDA
kernel in the process, ONNX Runtime's included), and the same chain replayed as CUDA graphs (`enable_cuda_graph`,
inputs and outputs bound once at fixed device addresses, refreshed in place).

    python3 -m benchmarks.gpu_profile EXPORT_DIR [--precision fp16] [--batch 1] [--json out.json]

Needs torch with CUDA (for the profiler only) and onnxruntime-gpu.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bt_runtime.manifest import GRAPH_NAMES as GRAPHS

from .timing import Case, interleave, summarize


def profile(fn, iterations: int = 20) -> dict:
    """Wall ms per call, kernel ms per call, kernels per call."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        for _ in range(iterations):
            fn()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - started) / iterations
    kernels = [e for e in prof.events() if str(getattr(e, "device_type", "")).endswith("CUDA")]
    busy_us = sum(e.time_range.elapsed_us() for e in kernels)  # each CUDA-side event is one kernel or copy
    return {"wall_ms": wall * 1e3, "kernel_ms": busy_us / iterations / 1e3, "kernels": len(kernels) / iterations}


def median_ms(fn, runs: int = 50, warmup: int = 5) -> float:
    case = Case("chain", fn)
    interleave([case], runs, warmup)
    return summarize(case.samples)["p50_ms"]


def inputs(manifest, batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    size = manifest.config.image_size
    ids = rng.integers(5, manifest.tokenizer.vocab_size - 5, (batch, seq)).astype(np.int64)
    ids[:, 0], ids[:, -1] = manifest.tokenizer.bos_token_id, manifest.tokenizer.eos_token_id
    return {"pixel_values": rng.standard_normal((batch, 3, size, size)).astype(np.float32), "input_ids": ids,
            "attention_mask": np.ones((batch, seq), np.int64), "image_index": np.arange(batch, dtype=np.int64)}


def cuda_graph_chain(manifest, precision: str, feeds: dict[str, np.ndarray]):
    """Three sessions with enable_cuda_graph; every input and output bound once to a fixed device buffer."""
    import onnxruntime as ort

    # the options of the measured run (benchmarks/results/*-h200.md), not the runtime's full set
    options = {"device_id": "0", "enable_cuda_graph": "1", "use_tf32": "0" if precision == "fp32" else "1"}
    sessions = {g: ort.InferenceSession(str(manifest.graph_path(g, precision)),
                                        providers=[("CUDAExecutionProvider", options)]) for g in GRAPHS}
    device = {name: ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0) for name, array in feeds.items()}
    batch, seq = feeds["input_ids"].shape
    sizes = {"batch": batch, "seq": seq, "image_batch": batch}
    bindings = {}
    for graph, session in sessions.items():
        binding = session.io_binding()
        for tensor in manifest.graph_io(graph).inputs:
            binding.bind_ortvalue_input(tensor.name, device[tensor.name])
        for tensor in manifest.graph_io(graph).outputs:
            shape = [sizes.get(d, d) for d in tensor.shape]
            device[tensor.name] = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0)
            binding.bind_ortvalue_output(tensor.name, device[tensor.name])
        bindings[graph] = binding

    def run() -> np.ndarray:
        for graph in GRAPHS:
            sessions[graph].run_with_iobinding(bindings[graph])
        return device["itm_logits"].numpy()

    def refresh(new: dict[str, np.ndarray]) -> None:
        for name, array in new.items():
            device[name].update_inplace(array)

    return run, refresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--batch", type=int, nargs="*", default=[1, 32])
    parser.add_argument("--seq", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch  # noqa: F401  CUDA libraries loaded before onnxruntime-gpu looks for them

    from benchmarks.gpu_report import ort_chain
    from bt_runtime import BridgeTowerRuntime

    results = []
    runtime = BridgeTowerRuntime.load(args.export_dir, precision=args.precision, device="cuda")
    for batch in args.batch:
        feeds = inputs(runtime.manifest, batch, args.seq)
        plain = lambda feeds=feeds: ort_chain(runtime, feeds["pixel_values"], feeds["input_ids"],  # noqa: E731
                                  feeds["attention_mask"])["itm_logits"]
        row = {"precision": args.precision, "batch": batch, "seq": args.seq, "iobinding_ms": median_ms(plain),
               "iobinding_profile": profile(plain)}
        try:
            run, refresh = cuda_graph_chain(runtime.manifest, args.precision, feeds)
            run()  # captures
            reference = plain()
            fresh = inputs(runtime.manifest, batch, args.seq)
            fresh["pixel_values"] = fresh["pixel_values"][::-1].copy() * 0.5
            refresh(fresh)
            replayed = run()
            expected = ort_chain(runtime, fresh["pixel_values"], fresh["input_ids"], fresh["attention_mask"])
            row["cuda_graph_max_abs_vs_plain"] = float(np.abs(replayed - expected["itm_logits"]).max())
            row["cuda_graph_inputs_changed_output"] = bool(np.abs(replayed - reference).max() > 0)
            row["cuda_graph_ms"] = median_ms(run)
            row["cuda_graph_profile"] = profile(run)
        except Exception as err:  # report why CUDA graphs could not be used
            row["cuda_graph_error"] = f"{type(err).__name__}: {str(err)[:400]}"
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
