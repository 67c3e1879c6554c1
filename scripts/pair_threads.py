"""One pair's latency (vision → text → pooled cross-modal) under ONNX Runtime session settings, each setting in its
own process, interleaved round by round (issue 21; results: docs/int8.md, "Threads and fusions").

    python3 scripts/pair_threads.py EXPORT [--precision fp32|int8[@RECIPE]] [--rounds 11] [--naive naive_itm.onnx]
                                           [--cases per-run,off,on,off+fused,naive] [--concurrent K]

One process per case: a setting that leaves threads spinning after its run (ONNX Runtime's default) would tax
whichever case ran next in a shared process, which is not what a process serving one model sees. The rounds are
shuffled (seeded) and each call waits 50 ms first, so no case inherits another's spinning threads.

Cases: `per-run`, `off`, `on` are the runtime's `spinning=` settings with its CPU sessions (residual + LayerNorm
unfused); `MODE+fused` keeps ONNX Runtime's SkipLayerNormalization fusion (`off+fused` is the runtime before issue
21); `naive` is the whole-model graph bt-bench's `onnxruntime-naive` writes (default session options).

`--concurrent K`: each timed call is K pairs started together from K Python threads on the one runtime (as a
server answering K requests at once), and the figure is the time until all K return.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MODES = ("per-run", "off", "on")
CASES = MODES + tuple(f"{mode}+fused" for mode in MODES) + ("naive",)


def worker(export: str, precision: str, case: str, naive: str | None, concurrent: int) -> None:
    """Load one case, print "ready", then time one call per stdin line (ms on stdout)."""
    from benchmarks.scenarios import pair_feeds
    from bt_runtime import BridgeTowerRuntime

    precision, _, recipe = precision.partition("@")  # int8@RECIPE forces an int8 recipe, as bt-bench's backends
    mode, _, fused = case.partition("+")
    if fused:
        from bt_runtime.backends import onnxruntime as backend

        backend.CPU_DISABLED_OPTIMIZERS = []  # this process only, before any session exists
    options = ({"int8_recipe": recipe} if recipe else {}) | ({"spinning": mode} if mode in MODES else {})
    runtime = BridgeTowerRuntime.load(export, precision=precision, **options)
    feeds = pair_feeds(runtime)
    if case == "naive":
        import onnxruntime as ort

        session = ort.InferenceSession(naive, providers=["CPUExecutionProvider"])

        def call():
            return session.run(None, dict(feeds["text_tower"], **feeds["vision_tower"]))
    else:
        run = runtime.backend.run
        cross = runtime.cross_graph(["itm_logits"])

        def call():
            image = run("vision_tower", feeds["vision_tower"])["image_bridge"]
            text = run("text_tower", feeds["text_tower"])["text_bridge"]
            return run(cross, dict(feeds["cross_modal"], text_bridge=text, image_bridge=image), ["itm_logits"])
    call()
    print("ready", flush=True)
    with ThreadPoolExecutor(concurrent) as pool:
        for _ in sys.stdin:
            started = time.perf_counter()
            list(pool.map(lambda _: call(), range(concurrent)))
            print((time.perf_counter() - started) * 1e3, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export")
    parser.add_argument("--precision", default="fp32", help="fp32, fp16, int8, or int8@RECIPE")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--naive", help="The naive whole-model ITM graph (inputs input_ids, attention_mask, "
                                        "pixel_values); needed by the `naive` case")
    parser.add_argument("--cases", default="per-run,off,on,off+fused")
    parser.add_argument("--concurrent", type=int, default=1, help="pairs started together per timed call")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.export, args.precision, args.worker, args.naive, args.concurrent)
    cases = args.cases.split(",")
    unknown = sorted(set(cases) - set(CASES))
    if unknown or ("naive" in cases and not args.naive):
        parser.error(f"--cases: unknown {unknown}, valid {list(CASES)}" if unknown else "the naive case needs --naive")
    processes = {}
    for case in cases:
        command = [sys.executable, __file__, args.export, "--precision", args.precision, "--worker", case,
                   "--concurrent", str(args.concurrent)]
        processes[case] = subprocess.Popen(command + (["--naive", args.naive] if args.naive else []),
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if processes[case].stdout.readline().strip() != "ready":
            raise SystemExit(f"case {case} did not start")
    samples = {case: [] for case in cases}
    load = [os.getloadavg()]
    for round_ in range(args.rounds):
        order = list(cases)
        random.Random(round_).shuffle(order)
        for case in order:
            time.sleep(0.05)
            processes[case].stdin.write("\n")
            processes[case].stdin.flush()
            samples[case].append(float(processes[case].stdout.readline()))
    load.append(os.getloadavg())
    for process in processes.values():
        process.stdin.close()
        process.wait()
    print(json.dumps({"precision": args.precision, "rounds": args.rounds, "concurrent": args.concurrent,
                      "load_average": load,
                      "median_ms": {c: round(float(np.median(v)), 1) for c, v in samples.items()},
                      "samples_ms": {c: [round(x, 1) for x in v] for c, v in samples.items()}}))
    print(f"| case ({args.precision}, {args.concurrent} at once) | median ms | min ms | p90 ms |\n|---|---|---|---|")
    for case, values in samples.items():
        print(f"| {case} | {np.median(values):.1f} | {min(values):.1f} | {np.percentile(values, 90):.1f} |")


if __name__ == "__main__":
    main()
