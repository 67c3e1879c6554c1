"""fp32 pair latency under ONNX Runtime thread settings, interleaved in one process: how much the hand-off between
the three graphs' thread pools costs, and what recovers it (issue 21; results: docs/int8.md, "fp32 and threads").

    python3 scripts/pair_threads.py EXPORT [--rounds 7] [--naive naive_itm.onnx]

Cases: spinning off (the runtime's default), ONNX Runtime's default spinning, spinning with
`session.force_spinning_stop` (threads spin during a run and stop when it returns), and the vision and text towers
run concurrently from two Python threads; the naive whole-model graph (bt-bench's `onnxruntime-naive` writes one) as
the peer. A process-wide pool (`onnxruntime.set_global_thread_pool_sizes` + `use_per_session_threads = False`) is not
a case: once set, every session the process creates must opt out of per-session threads (ONNX Runtime refuses the
others), so a library cannot set it for its caller.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--naive", help="The naive whole-model ITM graph (inputs input_ids, attention_mask, "
                                        "pixel_values)")
    args = parser.parse_args()

    import onnxruntime as ort

    from benchmarks.scenarios import fixed_text
    from bt_export.samples import synthetic_images
    from bt_runtime import BridgeTowerRuntime

    runtime = BridgeTowerRuntime.load(args.export)
    manifest = runtime.manifest
    encoded = runtime.tokenizer([fixed_text(runtime.tokenizer, 40)])
    pixels = runtime.preprocess(synthetic_images(1))
    cross = runtime.cross_graph(["itm_logits"])
    files = {g: str(manifest.graph_path(g)) for g in ("vision_tower", "text_tower", cross)}
    text_feeds = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}
    cross_feeds = {"attention_mask": encoded.attention_mask, "image_index": np.zeros(1, np.int64)}

    def sessions(entries: dict) -> dict:
        out = {}
        for graph, file in files.items():
            options = ort.SessionOptions()
            options.log_severity_level = 3
            for key, value in entries.items():
                options.add_session_config_entry(key, value)
            out[graph] = ort.InferenceSession(file, options, providers=["CPUExecutionProvider"])
        return out

    def sequential(s):
        image = s["vision_tower"].run(["image_bridge"], {"pixel_values": pixels})[0]
        text = s["text_tower"].run(["text_bridge"], text_feeds)[0]
        return s[cross].run(None, dict(cross_feeds, image_bridge=image, text_bridge=text))[0]

    def concurrent(s):
        box = {}
        worker = threading.Thread(target=lambda: box.update(t=s["text_tower"].run(["text_bridge"], text_feeds)[0]))
        worker.start()
        image = s["vision_tower"].run(["image_bridge"], {"pixel_values": pixels})[0]
        worker.join()
        return s[cross].run(None, dict(cross_feeds, image_bridge=image, text_bridge=box["t"]))[0]

    off = sessions({"session.intra_op.allow_spinning": "0"})
    stop = sessions({"session.force_spinning_stop": "1"})
    on = sessions({})
    cases = {"spinning off (runtime default)": lambda: sequential(off),
             "spinning on (ONNX Runtime default)": lambda: sequential(on),
             "spinning on, stopped after each run": lambda: sequential(stop),
             "spinning off, towers concurrent": lambda: concurrent(off),
             "spinning on + stop, towers concurrent": lambda: concurrent(stop)}
    if args.naive:
        naive = ort.InferenceSession(args.naive, providers=["CPUExecutionProvider"])
        cases["naive whole-model graph"] = lambda: naive.run(None, dict(text_feeds, pixel_values=pixels))
    samples = {name: [] for name in cases}
    names = list(cases)
    for round_ in range(args.rounds + 1):  # round 0 warms up; the order rotates each round
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            started = time.perf_counter()
            cases[name]()
            if round_:
                samples[name].append((time.perf_counter() - started) * 1e3)
    print(f"load average at the end: {os.getloadavg()}, {os.cpu_count()} logical cores")
    print("| case | median ms | min ms |\n|---|---|---|")
    for name, values in samples.items():
        print(f"| {name} | {np.median(values):.1f} | {min(values):.1f} |")


if __name__ == "__main__":
    main()
