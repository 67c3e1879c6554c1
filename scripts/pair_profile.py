"""Where one pair's time goes: ONNX Runtime's per-operator profile of the toolkit's three graphs (with the runtime's
CPU session options) and of the naive whole-model graph, summed per operator type (issue 21; results:
docs/int8.md, "Threads and fusions").

    python3 scripts/pair_profile.py EXPORT [--precision fp32|int8[@RECIPE]] [--naive naive_itm.onnx] [--runs 6]
        [--fused]

Each graph runs `--runs` times after one warm-up (profiled too, left out of the sums). `--fused` keeps ONNX
Runtime's SkipLayerNormalization fusion that the runtime turns off on CPU. The toolkit's graphs and the naive graph
are profiled in separate processes (this script runs itself once per side), so neither inherits the other's
spinning threads.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def profile(export: str, precision: str, naive: str | None, runs: int, fused: bool, directory: Path) -> dict:
    import onnxruntime as ort

    from benchmarks.scenarios import pair_feeds
    from bt_runtime import BridgeTowerRuntime
    from bt_runtime.backends import onnxruntime as backend

    precision, _, recipe = precision.partition("@")  # int8@RECIPE forces an int8 recipe, as bt-bench's backends
    runtime = BridgeTowerRuntime.load(export, precision=precision, **({"int8_recipe": recipe} if recipe else {}))
    pair = pair_feeds(runtime)
    if naive:
        graphs = {"naive": naive}
        feeds = {"naive": dict(pair["text_tower"], **pair["vision_tower"])}
    else:
        cross = runtime.cross_graph(["itm_logits"])
        graphs = {g: str(runtime.manifest.path(runtime.backend.files[g].file))
                  for g in ("vision_tower", "text_tower", cross)}
        feeds = {"vision_tower": pair["vision_tower"], "text_tower": pair["text_tower"]}
    sessions = {}
    for graph, path in graphs.items():
        # the naive graph as bt-bench runs it (ONNX Runtime's defaults), the toolkit's as the runtime does
        options = ort.SessionOptions() if naive else backend.session_options()
        options.enable_profiling = True
        options.profile_file_prefix = str(directory / graph)
        disabled = None if naive or fused else backend.CPU_DISABLED_OPTIMIZERS
        sessions[graph] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"],
                                               disabled_optimizers=disabled)
    if not naive:
        image = sessions["vision_tower"].run(None, feeds["vision_tower"])[0]
        text = sessions["text_tower"].run(None, feeds["text_tower"])[0]
        feeds[cross] = dict(pair["cross_modal"], text_bridge=text, image_bridge=image)
    for _ in range(runs + 1):
        for graph, session in sessions.items():
            session.run(None, feeds[graph])
    result = {}
    for graph, session in sessions.items():
        events = json.loads(Path(session.end_profiling()).read_text())
        model_runs = [e["dur"] for e in events if e.get("name") == "model_run"]
        kernel_events = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
        per_run = len(kernel_events) // len(model_runs)
        per_op = collections.defaultdict(float)
        for event in kernel_events[per_run * (len(model_runs) - runs):]:  # the warm-ups' events come first
            per_op[event["args"]["op_name"]] += event["dur"] / runs / 1e3
        model_runs = model_runs[-runs:]
        result[graph] = {"run_ms": round(float(np.median(model_runs)) / 1e3, 1),
                         "ops_ms": {op: round(ms, 2) for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])}}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export")
    parser.add_argument("--naive")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--precision", default="fp32", help="the toolkit's variant: fp32, int8, or int8@RECIPE")
    parser.add_argument("--fused", action="store_true")
    parser.add_argument("--side", choices=("toolkit", "naive"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        with tempfile.TemporaryDirectory(prefix="bt-profile-") as directory:
            naive = args.naive if args.side == "naive" else None
            print(json.dumps(profile(args.export, args.precision, naive, args.runs, args.fused, Path(directory))))
        return
    report = {}
    for side in ("toolkit", "naive") if args.naive else ("toolkit",):
        command = [sys.executable, __file__, args.export, "--runs", str(args.runs), "--side", side,
                   "--precision", args.precision]
        command += (["--naive", args.naive] if args.naive else []) + (["--fused"] if args.fused else [])
        report.update(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    print(json.dumps(report, indent=1))
    for graph, entry in report.items():
        top = ", ".join(f"{op} {ms}" for op, ms in list(entry["ops_ms"].items())[:6])
        print(f"{graph}: run {entry['run_ms']} ms, kernels {sum(entry['ops_ms'].values()):.1f} ms ({top})")


if __name__ == "__main__":
    main()
