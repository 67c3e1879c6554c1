"""Benchmark scenarios. Each builds one Case per backend on the same inputs, times them interleaved, checks every
backend's outputs against eager PyTorch (a fast but wrong backend is reported as failing), and states its work in
FLOPs from the config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import flops
from .backends import TorchBackend, agreement_bounds
from .timing import Case, interleave, summarize

SCENARIOS = ("pair", "rerank", "embed-images", "embed-texts", "retrieve", "cold-start")
CAPTIONS = ["An image of two cats chilling on a couch", "A football player scoring a goal",
            "a cat looking out of the window", "a bowl of fruit on a wooden table next to a glass of water"]


@dataclass
class Settings:
    text_length: int = 40
    num_texts: int = 16
    gallery: int = 8
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    runs: int = 3
    warmup: int = 1
    top_k: int = 5
    rerank: int | None = None  # ITM rerank shortlist in `retrieve` (ITC exports); None: 2 × top_k
    brute_force_sample: int = 16  # eager brute force in `retrieve` timed on this many images, scaled to the gallery
    settle_s: float = 0.0  # sleep before each timed call (benchmarks.timing.interleave); bt-bench's default 0.1


@dataclass
class Row:
    scenario: str
    backend: str
    work: int  # items per call
    unit: str  # "pairs", "images", "texts", "processes"
    flops: float | None  # per call
    summary: dict
    agreement: dict = field(default_factory=dict)  # {metric: value, "bound": …, "passed": bool}
    samples_s: list[float] = field(default_factory=list)
    params: dict = field(default_factory=dict)  # what defines the measurement (rows compare within equal params)
    extra: dict = field(default_factory=dict)  # other measured facts (peak RSS, …)


def fixed_text(tokenizer, length: int) -> str:
    """A caption that tokenizes to exactly `length` tokens (<s> and </s> included)."""
    words = ["two cats chilling on a couch"] * length
    for count in range(1, length + 1):
        text = " ".join(words[:count]).replace("  ", " ")
        if tokenizer([text]).input_ids.shape[1] >= length:
            break
    text_ids = tokenizer([text]).input_ids[0][1:length - 1]
    return tokenizer.decode(text_ids)


def pair_feeds(runtime, tokens: int = 40) -> dict[str, dict[str, np.ndarray]]:
    """The one pair issue 21's measurement scripts time: a synthetic image and a `tokens`-token caption, as the feeds
    of vision_tower, text_tower and the cross-modal graph less its two bridges, which the towers give
    (`dict(feeds["cross_modal"], text_bridge=…, image_bridge=…)`; the layout of `bt_export.int8_recipes.pair_feeds`)."""
    from bt_export.samples import synthetic_images

    encoded = runtime.tokenizer([fixed_text(runtime.tokenizer, tokens)])
    return {"vision_tower": {"pixel_values": runtime.preprocess(synthetic_images(1))},
            "text_tower": {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask},
            "cross_modal": {"attention_mask": encoded.attention_mask, "image_index": np.zeros(1, np.int64)}}


def _rows(scenario, cases, unit, flops_per_call, agreements, params) -> list[Row]:
    return [Row(scenario, c.name, c.work, unit, flops_per_call, summarize(c.samples), agreements.get(c.name, {}),
                list(c.samples), params) for c in cases]


def _agree_probabilities(cases: list[Case], reference: np.ndarray) -> dict[str, dict]:
    result = {}
    for case in cases:
        bound = agreement_bounds(case.name)["itm_probability_abs"]
        diff = float(np.abs(np.asarray(case.output) - reference).max())
        result[case.name] = {"itm_probability_abs": diff, "bound": bound, "passed": bool(diff <= bound)}
    return result


def _per_item(output: np.ndarray) -> np.ndarray:
    """Embeddings (B, E) as they are; bridges (B, C, L, D) → (B, C·L·D), one row per image/text."""
    output = np.asarray(output)
    return output if output.ndim == 2 else output.reshape(output.shape[0], -1)


def _agree_cosine(cases: list[Case], reference: np.ndarray) -> dict[str, dict]:
    result, flat_ref = {}, _per_item(reference)
    for case in cases:
        flat = _per_item(case.output)
        cosine = np.sum(flat * flat_ref, 1) / (np.linalg.norm(flat, axis=1) * np.linalg.norm(flat_ref, axis=1))
        bound = agreement_bounds(case.name)["embedding_cosine_min"]
        result[case.name] = {"cosine_min": float(cosine.min()), "bound": bound, "passed": bool(cosine.min() >= bound)}
    return result


def _reference(backends, cases):
    torch_case = next(c for c, b in zip(cases, backends, strict=True)
                      if isinstance(b, TorchBackend) and b.label == "torch")
    return np.asarray(torch_case.output)


def pair(backends, runtime, image, settings: Settings) -> list[Row]:
    text = fixed_text(runtime.tokenizer, settings.text_length)
    encoded = runtime.tokenizer([text])
    pixels = runtime.preprocess([image])
    cases = [Case(b.label, lambda b=b: b.itm_pair(pixels, encoded.input_ids, encoded.attention_mask), 1)
             for b in backends]
    interleave(cases, settings.runs, settings.warmup, settle_s=settings.settle_s)
    agreement = _agree_probabilities(cases, _reference(backends, cases))
    return _rows("pair", cases, "pairs", flops.pair(runtime.manifest.config, encoded.input_ids.shape[1]),
                 agreement, {"text_tokens": int(encoded.input_ids.shape[1])})


def rerank_flops(config: dict, lengths, reuses_towers: bool) -> float:
    """Matmul work of 1 image × len(lengths) texts: eager runs the vision tower per text, bt_runtime once."""
    per_text = sum(flops.text_tower(config, int(s)) + flops.cross_modal(config, int(s)) for s in lengths)
    return flops.vision_tower(config) * (1 if reuses_towers else len(lengths)) + per_text


def rerank(backends, runtime, image, settings: Settings) -> list[Row]:
    texts = [f"{CAPTIONS[i % len(CAPTIONS)]} ({i})" for i in range(settings.num_texts)]
    cases = [Case(b.label, lambda b=b: b.itm_loop(image, texts), len(texts)) for b in backends]
    interleave(cases, settings.runs, settings.warmup, settle_s=settings.settle_s)
    config, lengths = runtime.manifest.config, runtime.tokenizer(texts).lengths
    rows = _rows("rerank", cases, "pairs", None, _agree_probabilities(cases, _reference(backends, cases)),
                 {"num_texts": len(texts), "note": "torch: one processor + model call per text (transformers docs)"})
    for row, backend in zip(rows, backends, strict=True):  # each backend is credited with the work it does
        row.flops = rerank_flops(config, lengths, reuses_towers=not isinstance(backend, TorchBackend))
    return rows


def embed(kind: str, backends, runtime, image, settings: Settings) -> list[Row]:
    """Tower throughput: contrastive embeddings for ITC exports, the bridges (tower outputs) otherwise."""
    config, rows = runtime.manifest.config, []
    for batch in settings.batch_sizes:
        if kind == "images":
            feeds = {"pixel_values": np.repeat(runtime.preprocess([image]), batch, axis=0)}
            graph, work = "vision_tower", flops.vision_tower(config) * batch
        else:
            encoded = runtime.tokenizer([fixed_text(runtime.tokenizer, settings.text_length)] * batch)
            feeds = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}
            graph, work = "text_tower", flops.text_tower(config, settings.text_length) * batch
        cases = [Case(b.label, lambda b=b, graph=graph, feeds=feeds: b.tower(graph, feeds), batch) for b in backends]
        interleave(cases, settings.runs, settings.warmup, settle_s=settings.settle_s)
        rows += _rows(f"embed-{kind}", cases, kind, work, _agree_cosine(cases, _reference(backends, cases)),
                      {"batch_size": batch, "output": "embeds" if "itc" in runtime.heads else "bridge"})
    return rows


def distinct_gallery(images: list, size: int) -> list:
    """`size` images from `images`, no two identical (exact duplicates tie, which would make recall against brute
    force depend on tie-breaking): each photo as is, then flipped/rotated, then each of those with 2-pixel steps
    cropped off its top-left corner."""
    from PIL import Image

    transforms = [None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_180]
    gallery = []
    for index in range(size):
        image, variant = images[index % len(images)], index // len(images)
        transform, crop = transforms[variant % len(transforms)], variant // len(transforms)
        image = image if transform is None else image.transpose(transform)
        if crop:  # (left, top) differs from (0, 0) and from every other crop
            image = image.crop((2 * (crop % 16), 2 * (crop // 16), image.width, image.height))
        gallery.append(image)
    return gallery


def retrieve(backends, runtime, images: list, settings: Settings) -> list[Row]:
    """1 text query against a gallery of `settings.gallery` images: bt_runtime.retrieve vs brute-force eager ITM
    (the model called on every image). With ITC heads the runtime's gallery is indexed once (`embed_images`, timed
    as its own row, `retrieve-index`) and a query shortlists `rerank` images by cosine, then reranks them by ITM;
    without, it runs ITM over every image.

    Eager brute force is timed on `brute_force_sample` images and scaled to the gallery (its time is linear in the
    gallery: one independent model call per image); the row says so. Recall@top_k is measured against the full
    brute-force ranking: eager's own when the gallery is no larger than the sample, else the fp32 runtime's ITM over
    every image (not timed), which agrees with eager on the sample within the fp32 bound (checked, reported)."""
    gallery = distinct_gallery(images, settings.gallery)
    query, size = CAPTIONS[0], len(gallery)
    rerank = 2 * settings.top_k if settings.rerank is None else settings.rerank
    torch_backend = next(b for b in backends if isinstance(b, TorchBackend) and b.label == "torch")
    sample = gallery[:min(size, settings.brute_force_sample)]
    two_stage = "itc" in runtime.heads
    indexes, rows, itm_all = {}, [], None
    if two_stage:
        index_rows, indexes, itm_all = _index_galleries(backends, runtime, gallery, query)
        rows += index_rows
    cases = []
    for backend in backends:
        if isinstance(backend, TorchBackend):
            cases.append(Case(backend.label, lambda b=backend: np.array(
                [b.eager.itm_probability(image, query) for image in sample]), len(sample)))
        else:
            cases.append(Case(backend.label, lambda b=backend: b.runtime.retrieve(
                query, gallery, top_k=settings.top_k, rerank=rerank, index=indexes.get(b.label)), size))
    interleave(cases, settings.runs, settings.warmup, settle_s=settings.settle_s)
    eager_sample = next(c.output for c in cases if c.name == torch_backend.label)
    brute, source = _brute_force(runtime, gallery, query, eager_sample, itm_all)
    best = set(np.argsort(-brute, kind="stable")[:settings.top_k].tolist())
    agreement = {}
    for case in cases:
        if isinstance(case.output, np.ndarray):
            continue
        scored = [h for h in case.output if h.itm_score is not None]
        diff = max((abs(h.itm_score - float(brute[h.index])) for h in scored), default=0.0)
        bound = agreement_bounds(case.name)["itm_probability_abs"]
        recall = len(best & {h.index for h in case.output}) / settings.top_k
        agreement[case.name] = {"recall_at_k_vs_brute_force": recall, "itm_probability_abs": diff, "bound": bound,
                                "passed": bool(diff <= bound)}
    scale, eager_labels = size / len(sample), {b.label for b in backends if isinstance(b, TorchBackend)}
    for case in cases:  # eager: the sample's time scaled to the whole gallery
        if case.name in eager_labels:
            case.samples, case.work = [t * scale for t in case.samples], size
    config = runtime.manifest.config
    work = size * flops.pair(config, int(runtime.tokenizer([query]).lengths[0]))
    params = {"gallery": size, "top_k": settings.top_k, "rerank": rerank if two_stage else size,
              "two_stage": two_stage}
    query_rows = _rows("retrieve", cases, "images", work, agreement, params)
    for row in query_rows:
        if row.backend in eager_labels:
            row.extra = {"brute_force_timed_on": len(sample), "scaled_by": round(scale, 3)}
        else:
            row.flops = None if two_stage else work  # two-stage work depends on the shortlist, not the gallery
            row.extra = {"brute_force_ranking": source}
    return rows + query_rows


def _index_galleries(backends, runtime, gallery: list, query: str) -> tuple[list[Row], dict, np.ndarray]:
    """Each runtime backend's ITC index of the gallery, built once and timed once (a one-time cost per gallery):
    `embed_images`' work, chunk by chunk. While `runtime`'s chunks are at hand (their bridges), the query's ITM
    probability with every image is computed too, untimed: the brute-force ranking without a second pass."""
    rows, indexes, itm_all = [], {}, None
    for backend in backends:
        if isinstance(backend, TorchBackend):
            continue
        with_itm = backend.runtime is runtime
        chunks = list(_gallery_chunks(backend.runtime, gallery, query if with_itm else None))
        indexes[backend.label] = np.concatenate([embeds for _, embeds, _ in chunks])
        itm_all = np.concatenate([itm for _, _, itm in chunks]) if with_itm else itm_all
        case = Case(backend.label, lambda: None, len(gallery), [sum(seconds for seconds, _, _ in chunks)])
        rows += _rows("retrieve-index", [case], "images", None, {}, {"gallery": len(gallery)})
    return rows, indexes, itm_all


def _gallery_chunks(runtime, gallery: list, query: str | None):
    """(seconds the vision tower took, embeddings, ITM probabilities with `query` or None) per 16 images
    (embed_images' default batch): one chunk's bridges alive at a time; only the encoding is timed."""
    text = runtime.encode_texts([query]) if query is not None else None
    for start in range(0, len(gallery), 16):
        started = time.perf_counter()
        chunk = runtime.encode_images(gallery[start:start + 16])
        seconds, count = time.perf_counter() - started, len(chunk.bridge)
        yield seconds, chunk.embeds, None if text is None else runtime.match_probabilities(
            text, chunk, np.zeros(count, np.int64), np.arange(count), 16, False)


def _brute_force(runtime, gallery: list, query: str, eager_sample: np.ndarray,
                 itm_all: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """ITM probability of `query` with every gallery image: eager's own if it scored them all, else `runtime`'s
    (`itm_all` when the indexing pass computed it), checked against eager on the sample."""
    if len(eager_sample) == len(gallery):
        return eager_sample, "eager"
    if runtime.backend.precision != "fp32":  # before a pass over the whole gallery, not after
        raise RuntimeError(f"the brute-force ranking needs the fp32 runtime, not {runtime.backend.precision}: "
                           "include onnxruntime:fp32 first among the backends")
    if itm_all is None:
        itm_all = np.concatenate([itm for _, _, itm in _gallery_chunks(runtime, gallery, query)])
    diff = float(np.abs(itm_all[:len(eager_sample)] - eager_sample).max())
    bound = agreement_bounds(f"onnxruntime:{runtime.backend.precision}")["itm_probability_abs"]
    if diff > bound:
        raise RuntimeError(f"the fp32 runtime's brute-force ITM differs from eager by {diff:.3g} on the sample "
                           f"(bound {bound}): it cannot stand in for eager's ranking")
    return itm_all, f"{runtime.backend.precision} runtime over all {len(gallery)} images (|Δp| vs eager on the " \
                    f"{len(eager_sample)}-image sample {diff:.2g})"


# Peak RSS from VmHWM: ru_maxrss is carried across fork/exec on Linux, so it would report the parent's peak.
PEAK_RSS = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
RUNTIME_CHILD = """
import json, sys, time
started = time.perf_counter()
from bt_runtime import BridgeTowerRuntime
rt = BridgeTowerRuntime.load(sys.argv[1], precision=sys.argv[2], prepack_weights=sys.argv[4] == "prepack")
score = float(rt.itm_scores(sys.argv[3], ["two cats on a couch"])[0])
print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_mb": PEAK_RSS, "score": score}))
"""
EAGER_CHILD = """
import json, sys, time
started = time.perf_counter()
import torch, transformers
from PIL import Image
model = transformers.BridgeTowerForImageAndTextRetrieval.from_pretrained(sys.argv[1]).eval()
processor = transformers.BridgeTowerProcessor.from_pretrained(sys.argv[1])
inputs = processor(images=Image.open(sys.argv[2]).convert("RGB"), text="two cats on a couch", return_tensors="pt")
with torch.no_grad():
    score = float(torch.softmax(model(**inputs).logits, -1)[0, 1])
print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_mb": PEAK_RSS, "score": score}))
"""


def _child(code: str, args: list[str], env: dict | None = None) -> dict:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code.replace("PEAK_RSS", PEAK_RSS), *args], capture_output=True,
                            text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"cold-start child failed: {result.stderr[-2000:]}")
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    payload["wall_seconds"] = time.perf_counter() - started
    return payload


def cold_start(backends, runtime, image_path: str, eager, settings: Settings) -> list[Row]:
    """A fresh process from start to first score, and its peak RSS: runtime vs import torch + from_pretrained.
    Each runtime backend three times: with its files' digests verified before (bt_runtime.digests: a restart of a
    service, the common case), hashing every file (`… (hash every file)`: the first load of an export, or
    BT_DIGEST_CACHE=off), and without ONNX Runtime's prepacked weight copies (`… (prepack_weights=False)`)."""
    with tempfile.TemporaryDirectory() as checkpoint:
        eager.save_pretrained(checkpoint, "itm")  # what a user would load
        cache = {"BT_DIGEST_CACHE": str(Path(checkpoint) / "verified-digests.json")}
        full = {"BT_DIGEST_CACHE": "off"}
        labels = [label for b in backends for label in (
            [b.label] if isinstance(b, TorchBackend) else
            [b.label, f"{b.label} (hash every file)", f"{b.label} (prepack_weights=False)"])]
        runs = {label: [] for label in labels}
        for backend in backends:  # fill the digest cache (not timed)
            if not isinstance(backend, TorchBackend):
                _child(RUNTIME_CHILD, [str(runtime.manifest.directory), backend.runtime.backend.precision,
                                       str(image_path), "prepack"], cache)
        for _ in range(settings.runs):  # processes alternate, like the in-process scenarios
            for backend in backends:
                if isinstance(backend, TorchBackend):
                    if backend.label == "torch":
                        runs[backend.label].append(_child(EAGER_CHILD, [checkpoint, str(image_path)]))
                else:
                    args = [str(runtime.manifest.directory), backend.runtime.backend.precision, str(image_path)]
                    runs[backend.label].append(_child(RUNTIME_CHILD, args + ["prepack"], cache))
                    runs[f"{backend.label} (hash every file)"].append(_child(RUNTIME_CHILD, args + ["prepack"], full))
                    runs[f"{backend.label} (prepack_weights=False)"].append(
                        _child(RUNTIME_CHILD, args + ["no-prepack"], cache))
    rows = []
    reference = np.median([r["score"] for r in runs["torch"]]) if runs.get("torch") else None
    for label, results in runs.items():
        if not results:
            continue
        samples = [r["wall_seconds"] for r in results]
        agreement = {}
        if reference is not None:
            diff = float(abs(results[-1]["score"] - reference))
            bound = agreement_bounds(label.split(" ")[0])["itm_probability_abs"]
            agreement = {"itm_probability_abs": diff, "bound": bound, "passed": bool(diff <= bound)}
        rows.append(Row("cold-start", label, 1, "processes", None, summarize(samples), agreement, samples, {},
                        {"peak_rss_mb": round(max(r["peak_rss_mb"] for r in results), 1),
                         "in_process_s": round(float(np.median([r["seconds"] for r in results])), 2)}))
    return rows
