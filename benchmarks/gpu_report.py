"""GPU report in one go: export fp32 + fp16 → parity on CUDA against eager transformers fp32 on the same GPU →
interleaved timings (eager CUDA fp32/fp16/bf16 vs ONNX Runtime CUDA fp32/fp16) → Markdown + JSON.

    python3 -m benchmarks.gpu_report --out gpu-out --checkpoint base-itm-mlm --random-init \\
        --tokenizer ../shared/assets/roberta-base --images ../shared/assets/images

Needs torch with CUDA (the eager baseline) and onnxruntime-gpu (the runtime path; bt_runtime itself never imports
torch). Sized for < 8 minutes on an H100/H200 including the export. Every stage records its own failure and the
report is written after each stage, so a stage that breaks does not lose the others.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import time
import traceback
from pathlib import Path

import numpy as np

from bt_runtime.features import softmax

from .timing import Case, interleave, summarize

CAPTION = "An image of two cats chilling on a couch"


def gpu_facts() -> dict:
    import onnxruntime as ort
    import torch

    facts = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
             "onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(),
             "python": platform.python_version()}
    try:
        facts["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                         capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        facts["driver"] = "unknown"
    import transformers

    facts["transformers"] = transformers.__version__
    return facts


class Eager:
    """transformers' classes on the GPU over the export's own weights (random init is reproduced by its seed)."""

    def __init__(self, export_dir: Path, checkpoint: str, random_init: bool, device: str = "cuda"):
        import torch

        from bt_export.eager import EagerBridgeTower

        self.torch = torch
        self.base = EagerBridgeTower(checkpoint, export_dir, random_init=random_init, tokenizer=export_dir)
        self.processor = self.base.processor
        self.models, self.device = {}, device
        model = self.base.loaded.model.to(device).eval()
        for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
            typed = model if dtype is torch.float32 else copy.deepcopy(model).to(dtype)
            from bt_export.model import hf_reference

            self.models[name] = {head: hf_reference(typed, head) for head in ("itm", "mlm")}
            self.models[name]["dtype"] = dtype

    def inputs(self, images, texts):
        encoding = self.processor(images=images, text=texts, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in encoding.items()}

    def logits(self, precision: str, head: str, inputs) -> np.ndarray:
        torch = self.torch
        model = self.models[precision]
        feed = dict(inputs, pixel_values=inputs["pixel_values"].to(model["dtype"]))
        with torch.no_grad():
            out = model[head](**feed).logits
        return out.float().cpu().numpy()  # the copy synchronizes


def ort_chain(runtime, pixel_values: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray,
              outputs=("itm_logits",), image_index: np.ndarray | None = None) -> dict:
    """vision → text → cross-modal with the bridges kept on the GPU (IOBinding); only `outputs` come back."""
    run = runtime.backend.run_bound
    image = run("vision_tower", {"pixel_values": pixel_values}, ["image_bridge"], keep=("image_bridge",))
    text = run("text_tower", {"input_ids": input_ids, "attention_mask": attention_mask}, ["text_bridge"],
               keep=("text_bridge",))
    index = np.arange(input_ids.shape[0], dtype=np.int64) if image_index is None else image_index
    return run(runtime.cross_graph(list(outputs)), {"text_bridge": text["text_bridge"],
                                                    "image_bridge": image["image_bridge"],
                                                    "attention_mask": attention_mask, "image_index": index},
               list(outputs))


def parity(eager: Eager, runtimes: dict, images, texts) -> list[dict]:
    """16 photo × caption pairs, HF processor inputs fed to both sides; eager fp32 on the same GPU is the reference."""
    from bt_export.specs import FP32_TOLERANCES, VARIANT_BOUNDS

    pairs = [(i, t) for i in range(len(images)) for t in range(len(texts))]
    inputs = eager.inputs([images[i] for i, _ in pairs], [texts[t] for _, t in pairs])
    ref_itm, ref_mlm = eager.logits("fp32", "itm", inputs), eager.logits("fp32", "mlm", inputs)
    feeds = {k: v.cpu().numpy() for k, v in inputs.items()}
    attended = feeds["attention_mask"].astype(bool)
    rows = []
    for label, runtime in runtimes.items():
        out = ort_chain(runtime, feeds["pixel_values"], feeds["input_ids"], feeds["attention_mask"],
                        ("itm_logits", "mlm_logits"))
        itm, mlm = out["itm_logits"], out["mlm_logits"]
        row = {"backend": label, "pairs": len(pairs),
               "itm_logits_max_abs": float(np.abs(itm - ref_itm).max()),
               "mlm_logits_max_abs": float(np.abs(mlm - ref_mlm).max()),
               "itm_probability_abs": float(np.abs(softmax(itm)[:, 1] - softmax(ref_itm)[:, 1]).max()),
               "itm_decision_agreement": float(np.mean(itm.argmax(-1) == ref_itm.argmax(-1))),
               "mlm_top1_agreement": float((mlm.argmax(-1) == ref_mlm.argmax(-1))[attended].mean())}
        if "fp32" in label:
            row["bounds"] = {"itm_logits_max_abs": FP32_TOLERANCES["itm_logits"],
                             "mlm_logits_max_abs": FP32_TOLERANCES["mlm_logits"]}
            row["passed"] = (row["itm_logits_max_abs"] <= FP32_TOLERANCES["itm_logits"]
                             and row["mlm_logits_max_abs"] <= FP32_TOLERANCES["mlm_logits"])
        else:
            bounds = VARIANT_BOUNDS["fp16"]
            row["bounds"] = {k: bounds[k] for k in ("itm_probability_abs", "itm_decision_agreement",
                                                    "mlm_top1_agreement")}
            row["passed"] = (row["itm_probability_abs"] <= bounds["itm_probability_abs"]
                             and row["itm_decision_agreement"] >= bounds["itm_decision_agreement"]
                             and row["mlm_top1_agreement"] >= bounds["mlm_top1_agreement"])
        rows.append(row)
    return rows


def timed(name: str, cases: list[Case], runs: int, warmup: int, params: dict) -> list[dict]:
    interleave(cases, runs, warmup)
    return [{"scenario": name, "backend": c.name, "work": c.work, **params, **summarize(c.samples)} for c in cases]


def bench(eager: Eager, runtimes: dict, image, runs: int) -> list[dict]:
    torch = eager.torch
    rows = []
    for batch in (1, 8, 32):
        inputs = eager.inputs([image] * batch, [CAPTION] * batch)
        feeds = {k: v.cpu().numpy() for k, v in inputs.items()}
        cases = [Case(f"torch:{eager.device}:{p}",
                      lambda p=p, inputs=inputs: softmax(eager.logits(p, "itm", inputs))[:, 1], batch)
                 for p in ("fp32", "fp16", "bf16")]
        cases += [Case(label, lambda rt=rt, feeds=feeds: softmax(ort_chain(
                           rt, feeds["pixel_values"], feeds["input_ids"], feeds["attention_mask"])["itm_logits"])[:, 1],
                       batch)
                  for label, rt in runtimes.items()]
        rows += timed("pair", cases, runs, 3, {"batch": batch, "text_tokens": int(feeds["input_ids"].shape[1]),
                                               "note": "preprocessed tensors; host→device copy of inputs included"})
    for count in (32, 256):
        texts = [f"{CAPTION} number {i}" for i in range(count)]
        cases = []
        if count == 32:  # the transformers documentation's loop: processor + model per text
            cases.append(Case(f"torch:{eager.device}:fp32 docs loop",
                              lambda texts=texts: np.array([softmax(eager.logits("fp32", "itm",
                                                                                 eager.inputs(image, t)))[0, 1]
                                                for t in texts]), count))

        def batched(precision, texts=texts):
            chunks = [texts[i:i + 64] for i in range(0, len(texts), 64)]
            return np.concatenate([softmax(eager.logits(precision, "itm", eager.inputs([image] * len(c), c)))[:, 1]
                                   for c in chunks])

        cases += [Case(f"torch:{eager.device}:{p} batched", lambda p=p: batched(p), count) for p in ("fp32", "fp16")]
        cases += [Case(label, lambda rt=rt, texts=texts: rt.itm_scores(image, texts, batch_size=64), count)
                  for label, rt in runtimes.items()]
        rows += timed("rerank", cases, max(3, runs // 4), 1,
                      {"num_texts": count, "note": "image + raw texts in, probabilities out (preprocessing and "
                                                   "tokenization included on every side)"})
    pixels = eager.inputs([image] * 32, [CAPTION] * 32)["pixel_values"]
    host_pixels = pixels.cpu().numpy()
    def eager_vision(precision):
        model = eager.models[precision]["itm"].bridgetower
        with torch.no_grad():
            out = model.vision_model(pixels.to(eager.models[precision]["dtype"]))
        if eager.device == "cuda":
            torch.cuda.synchronize()
        return out

    cases = [Case(f"torch:{eager.device}:{p}", lambda p=p: eager_vision(p), 32) for p in ("fp32", "fp16")]
    cases += [Case(label, lambda rt=rt: rt.backend.run_bound("vision_tower", {"pixel_values": host_pixels},
                                                             ["image_bridge"], keep=("image_bridge",)), 32)
              for label, rt in runtimes.items()]
    rows += timed("embed-images", cases, runs, 3, {"batch": 32, "note": "vision encoder only (eager: HF vision "
                                                   "model; ORT: vision_tower graph, bridges kept on the GPU)"})
    return rows


def markdown(report: dict) -> str:
    facts = report.get("facts", {})
    lines = [f"# GPU report — {facts.get('gpu', '?')}", "",
             f"driver {facts.get('driver')}, torch {facts.get('torch')} (CUDA {facts.get('torch_cuda')}), "
             f"transformers {facts.get('transformers')}, onnxruntime-gpu {facts.get('onnxruntime')}, "
             f"Python {facts.get('python')}. Checkpoint: {report.get('checkpoint')}. "
             f"Command: `{report.get('command')}`",
             ""]
    if report.get("export"):
        lines += [f"Export (fp32 + fp16, CPU parity included): {report['export']}", ""]
    if report.get("parity"):
        lines += ["## Parity on CUDA (vs eager transformers fp32 on the same GPU, 16 photo × caption pairs)", "",
                  "| backend | ITM logits max \\|Δ\\| | MLM logits max \\|Δ\\| | ITM \\|Δp\\| | decisions "
                  "| MLM top-1 | "
                  "bounds | pass |", "|---|---|---|---|---|---|---|---|"]
        for r in report["parity"]:
            lines.append(f"| {r['backend']} | {r['itm_logits_max_abs']:.2e} | {r['mlm_logits_max_abs']:.2e} | "
                         f"{r['itm_probability_abs']:.2e} | {r['itm_decision_agreement']:.3f} | "
                         f"{r['mlm_top1_agreement']:.3f} | {r['bounds']} | {'yes' if r['passed'] else 'NO'} |")
        lines.append("")
    if report.get("timings"):
        lines += ["## Timings (interleaved, same run; p50 / p90 ms; ratio = p50 of the first torch row ÷ p50)", ""]
        groups: dict = {}
        for row in report["timings"]:
            key = (row["scenario"], row.get("batch"), row.get("num_texts"))
            groups.setdefault(key, []).append(row)
        for (scenario, batch, count), rows in groups.items():
            lines += [f"### {scenario}" + (f", batch {batch}" if batch else "") + (f", {count} texts" if count else ""),
                      "", "| backend | p50 ms | p90 ms | items/s | vs first row |", "|---|---|---|---|---|"]
            base = rows[0]["p50_ms"]
            for r in rows:
                lines.append(f"| {r['backend']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                             f"{r['work'] / r['p50_ms'] * 1000:.0f} | {base / r['p50_ms']:.2f}× |")
            lines.append("")
    if report.get("errors"):
        lines += ["## Stages that failed", ""] + [f"- {e}" for e in report["errors"]] + [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", default="base-itm-mlm")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--images", type=Path)
    parser.add_argument("--export", type=Path, help="Use this existing export (fp32 + fp16) instead of exporting.")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script's logic without a GPU")
    args = parser.parse_args()
    import sys

    import onnxruntime as ort
    import torch  # CUDA libraries first: onnxruntime-gpu then finds them loaded

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(sys.argv), "checkpoint": args.checkpoint + (" (random init)" if args.random_init
                                                                              else ""), "errors": []}

    def save():
        (args.out / "gpu_report.json").write_text(json.dumps(report, indent=2, default=str))
        (args.out / "gpu_report.md").write_text(markdown(report))

    def stage(name, work):
        started = time.perf_counter()
        print(f"[gpu_report] {name} …", flush=True)
        try:
            result = work()
        except Exception as err:  # a broken stage is reported, the others still run
            report["errors"].append(f"{name}: {type(err).__name__}: {err}")
            traceback.print_exc()
            result = None
        print(f"[gpu_report] {name}: {time.perf_counter() - started:.1f} s", flush=True)
        save()
        return result

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible to torch")
    report["facts"] = stage("facts", gpu_facts) if args.device == "cuda" else {"gpu": "none (dry run on CPU)"}
    export_dir = args.export or args.out / "export"

    def do_export():
        from bt_export import export_checkpoint
        from bt_export.errors import VariantsRejected

        started = time.perf_counter()
        try:
            result = export_checkpoint(args.checkpoint, export_dir, random_init=args.random_init,
                                       tokenizer=args.tokenizer, overwrite=True,
                                       parity_images=[args.images] if args.images else None,
                                       precisions=("fp32", "fp16"))
        except VariantsRejected as err:
            result = err.result
        return (f"{time.perf_counter() - started:.0f} s, variants {list(result.manifest.variants)}, rejected "
                f"{list(result.manifest.rejected_variants)}, fp16 CPU parity rows "
                f"{[(r.metric, round(r.value, 5)) for r in result.parity.get('fp16', [])]}")

    if args.export is None:
        report["export"] = stage("export", do_export)
    from bt_export.samples import DEFAULT_TEXTS, load_images, synthetic_images
    from bt_runtime import BridgeTowerRuntime

    images = load_images([args.images])[0] if args.images else synthetic_images(4)
    eager = stage("eager models on the GPU", lambda: Eager(export_dir, args.checkpoint, args.random_init,
                                                             args.device))
    runtimes = stage("ONNX Runtime CUDA sessions", lambda: {
        f"onnxruntime:{p}:{args.device}": BridgeTowerRuntime.load(export_dir, precision=p, device=args.device)
        for p in ("fp32", "fp16")})
    if runtimes:
        for label, runtime in runtimes.items():
            report.setdefault("session_providers", {})[label] = {
                g: runtime.backend.session(g).get_providers() for g in ("vision_tower", "text_tower", "cross_modal")}
    if eager and runtimes:
        report["parity"] = stage("parity on CUDA", lambda: parity(eager, runtimes, images[:4], list(DEFAULT_TEXTS)))
        report["timings"] = stage("timings", lambda: bench(eager, runtimes, images[0], args.runs))
    save()
    print(markdown(report))


if __name__ == "__main__":
    main()
