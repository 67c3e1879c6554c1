"""`bt-bench EXPORT --scenario accuracy`: task accuracy of every backend on the shapes held-out data, same run.

Scorers give one interface over eager transformers (HF classes on the checkpoint's weights, batched pairs), bt_runtime
(its public API only: itm_pairs, itm_matrix, embed_images/embed_texts, retrieve, itm_scores, fill_mask) and the naive
whole-model export (ITM pairs only). Metric definitions: benchmarks.accuracy."""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass

import numpy as np

from bt_runtime.features import softmax

from . import machine
from .accuracy import (
    RECALL_AT,
    EvalSet,
    TaskOutputs,
    check_bars,
    itm_accuracy,
    make_eval_set,
    mlm_accuracy,
    ranking,
    recall_at,
    task_agreement,
)

PAIR_BATCH = 64  # pairs per cross-modal call, every backend alike


def _match_probability(logits: np.ndarray) -> np.ndarray:
    """ITM logits (B, 2) → P(match) (B,), the runtime's own softmax (bt_runtime.features), so eager, the naive
    export and the runtime backends turn logits into probabilities alike."""
    return softmax(np.asarray(logits, dtype=np.float32))[:, 1]


class RuntimeScorer:
    """A bt_runtime backend through the public API, as a user calls it."""

    def __init__(self, runtime, label: str):
        self.runtime, self.label, self.heads = runtime, label, tuple(runtime.heads)
        self.mask_token = runtime.tokenizer.mask_token

    def prepare(self, images: list) -> None:
        pass

    def itm_pairs(self, images: list, texts: list[str]) -> np.ndarray:
        return self.runtime.itm_pairs(images, texts, batch_size=PAIR_BATCH)

    def itm_matrix(self, images: list, texts: list[str]) -> np.ndarray:  # (I, T)
        return self.runtime.itm_matrix(images, texts, batch_size=PAIR_BATCH)

    def embed_images(self, images: list) -> np.ndarray:
        return self.runtime.embed_images(images)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.runtime.embed_texts(texts)

    def two_stage_t2i(self, query: str, images: list, index: np.ndarray, k: int, top: int) -> list[int]:
        return [hit.index for hit in self.runtime.retrieve(query, images, top_k=top, rerank=k, index=index)]

    def itm_scores(self, image, texts: list[str]) -> np.ndarray:
        return self.runtime.itm_scores(image, texts)

    def fill_mask(self, image, text: str) -> tuple[int, str]:
        mask = self.runtime.fill_mask(image, text, top_k=1).masks[0]
        return mask.token_ids[0], mask.tokens[0]


class PairScorer:
    """Scorers that run the whole model on every (image, text) pair: images preprocessed once by the HF
    processor (not timed: a user's loop would do it per call), texts tokenized per call."""

    heads: tuple = ("itm",)

    def __init__(self, processor, label: str):
        self.processor, self.label = processor, label
        self.tokenizer = processor.tokenizer
        self.mask_token = self.tokenizer.mask_token
        self._pixels, self._images = None, None

    def prepare(self, images: list) -> None:
        """Preprocess the split's images once; later calls look them up by identity."""
        self._images = {id(image): n for n, image in enumerate(images)}
        self._pixels = self.processor.image_processor(images, return_tensors="np")["pixel_values"].astype(np.float32)

    def _rows(self, images: list) -> np.ndarray:
        return np.array([self._images[id(image)] for image in images])

    def _encode(self, texts: list[str]):
        encoded = self.tokenizer(list(texts), padding=True, return_tensors="np")
        return encoded["input_ids"].astype(np.int64), encoded["attention_mask"].astype(np.int64)

    def _pairs(self, run, image_rows: np.ndarray, texts: list[str], text_rows: np.ndarray) -> list:
        ids, mask = self._encode(texts)
        out = []
        for start in range(0, len(image_rows), PAIR_BATCH):
            t = text_rows[start:start + PAIR_BATCH]
            length = int(mask[t].sum(axis=1).max())  # trim the padding this batch does not need
            out.append(run(self._pixels[image_rows[start:start + PAIR_BATCH]], ids[t, :length], mask[t, :length]))
        return out

    def itm_pairs(self, images: list, texts: list[str]) -> np.ndarray:
        return np.concatenate(self._pairs(self._itm, self._rows(images), texts, np.arange(len(texts))))

    def itm_matrix(self, images: list, texts: list[str]) -> np.ndarray:
        image_rows, text_rows = np.divmod(np.arange(len(images) * len(texts)), len(texts))
        scores = np.concatenate(self._pairs(self._itm, self._rows(images)[image_rows], texts, text_rows))
        return scores.reshape(len(images), len(texts))

    def itm_scores(self, image, texts: list[str]) -> np.ndarray:
        return self.itm_pairs([image] * len(texts), texts)


class EagerScorer(PairScorer):
    """Eager transformers (bt_export.eager): BridgeTowerForImageAndTextRetrieval / ForMaskedLM /
    ForContrastiveLearning on batches of pairs; `torch:bf16` under CPU autocast."""

    def __init__(self, eager, label: str = "torch"):
        super().__init__(eager.processor, label)
        self.eager, self.heads = eager, tuple(eager.loaded.heads)

    def _autocast(self):
        import contextlib

        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16) if self.label.endswith(":bf16") else \
            contextlib.nullcontext()

    def _call(self, head: str, pixels, ids, mask):
        import torch

        with torch.no_grad(), self._autocast():
            return self.eager.model(head)(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                          pixel_values=torch.from_numpy(pixels))

    def _itm(self, pixels, ids, mask) -> np.ndarray:
        return _match_probability(self._call("itm", pixels, ids, mask).logits.float().numpy())

    def itm_matrix(self, images: list, texts: list[str]) -> np.ndarray:
        """Every image with every text, (I, T): a gallery × queries matrix is 10⁵ pairs, too many for the whole
        HF model per pair on a CPU, so here eager runs the export's decomposition of the same HF modules
        (bt_export.towers: each tower once per input, the cross-modal stack per pair)."""
        import torch

        from bt_export.towers import CrossModalStack, TextTower, VisionTower

        model = self.eager.loaded.model
        vision, text, cross = VisionTower(model), TextTower(model), CrossModalStack(model, mlm=False)
        first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731 (bridge, [embeds])
        ids, mask = self._encode(texts)
        pixels = self._pixels[self._rows(images)]
        image_rows, text_rows = np.divmod(np.arange(len(images) * len(texts)), len(texts))
        with torch.no_grad(), self._autocast():
            image_bridge = torch.cat([first(vision(torch.from_numpy(pixels[start:start + PAIR_BATCH])))
                                      for start in range(0, len(images), PAIR_BATCH)])  # (I, C, N, D)
            text_bridge = first(text(torch.from_numpy(ids), torch.from_numpy(mask)))  # (T, C, S, D)
            scores = []
            for start in range(0, len(image_rows), 4 * PAIR_BATCH):
                t = torch.from_numpy(text_rows[start:start + 4 * PAIR_BATCH])
                length = int(mask[t.numpy()].sum(axis=1).max())
                logits = cross(text_bridge[t, :, :length], image_bridge, torch.from_numpy(mask)[t, :length],
                               torch.from_numpy(image_rows[start:start + 4 * PAIR_BATCH]))[1]  # (B, 2)
                scores.append(_match_probability(logits.float().numpy()))
        return np.concatenate(scores).reshape(len(images), len(texts))

    def embed_images(self, images: list) -> np.ndarray:  # ITC embeddings are unimodal: any caption pairs
        out = self._pairs(lambda *a: self._call("itc", *a).image_embeds.float().numpy(), self._rows(images),
                          ["a"], np.zeros(len(images), np.int64))
        return np.concatenate(out)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = self._pairs(lambda *a: self._call("itc", *a).text_embeds.float().numpy(),
                          np.zeros(len(texts), np.int64), texts, np.arange(len(texts)))
        return np.concatenate(out)

    def two_stage_t2i(self, query: str, images: list, index: np.ndarray, k: int, top: int) -> list[int]:
        similarity = index @ self.embed_texts([query])[0]
        shortlist = np.lexsort((np.arange(len(images)), -similarity))[:max(k, top)]
        scores = self.itm_pairs([images[i] for i in shortlist], [query] * len(shortlist))
        return [int(shortlist[i]) for i in np.lexsort((-shortlist, -scores))[:top]]  # ties: as retrieve ranks them

    def fill_mask(self, image, text: str) -> tuple[int, str]:
        ids, mask = self._encode([text])
        logits = self._call("mlm", self._pixels[self._rows([image])], ids, mask).logits[0].float().numpy()
        position = int(np.flatnonzero(ids[0] == self.tokenizer.mask_token_id)[0])
        token = int(logits[position].argmax())
        return token, self.tokenizer.decode([token]).strip()


class NaiveScorer(PairScorer):
    """The naive whole-model export (benchmarks.backends.NaiveExportBackend): ITM pairs only."""

    def __init__(self, naive, label: str = "onnxruntime-naive"):
        super().__init__(naive.processor, label)
        self.naive = naive

    def _itm(self, pixels, ids, mask) -> np.ndarray:
        return _match_probability(self.naive.session.run(["logits"], {"input_ids": ids, "attention_mask": mask,
                                                             "pixel_values": pixels})[0])


@dataclass
class Options:
    gallery: int = 1000
    seed: int = 1234
    queries: int = 100
    k: int = 20  # ITC shortlist of two-stage retrieval
    combos_gallery: int = 200  # the heldout_combos split (0: not evaluated)
    # eager's intra-op threads: 1 unless --threads says otherwise. This scenario measures decisions, not eager's
    # speed, and on a shared 2-core machine two torch threads waiting on each other ran eager 24× slower (measured)
    torch_threads: int = 1


def _timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - started


def evaluate(scorer, data: EvalSet, k: int, naive: bool = False) -> tuple[dict, TaskOutputs, list[str]]:
    """One backend on one split: (metrics, what it decided, skipped-with-reason lines)."""
    result, outputs, skipped = {"timing_s": {}}, TaskOutputs(), []
    images, captions, queries = data.images, data.captions, data.queries
    scorer.prepare(images)
    distinct = data.distinct  # i→t candidates: captions[distinct[u]]
    relevant = data.relevance()[:queries]  # (Q, N): caption q vs image j, and image q vs caption j
    relevant_i2t = relevant[:, distinct]  # (Q, U)
    heads = scorer.heads
    if "itm" in heads:
        positive, seconds = _timed(scorer.itm_pairs, images, captions)
        rows = [i for i, _, _ in data.negatives]
        negative, more = _timed(scorer.itm_pairs, [images[i] for i in rows], [c for _, _, c in data.negatives])
        result["itm"] = itm_accuracy(positive[rows], negative, [kind for _, kind, _ in data.negatives])
        result["timing_s"]["itm_ms_per_pair"] = (seconds + more) / (len(captions) + len(rows)) * 1000
        outputs.itm_comparisons = positive[rows] > negative
        outputs.itm_probabilities["hard_negatives"] = np.concatenate([positive, negative])
        if naive:
            skipped.append(f"{scorer.label}: retrieval and MLM not run (one whole-model graph per pair, no ITC or "
                           "MLM head: brute force over the gallery costs what eager's does)")
        else:
            first, seconds = _timed(scorer.itm_matrix, images, captions[:queries])  # (N, Q)
            i2t = scorer.itm_matrix(images[:queries], [captions[u] for u in distinct])  # (Q, U)
            t2i = first.T  # (Q, N)
            outputs.rankings |= {"brute_force t2i": ranking(t2i)[:, :10], "brute_force i2t": ranking(i2t)[:, :10]}
            result["brute_force"] = {"t2i": recall_at(ranking(t2i), relevant),
                                     "i2t": recall_at(ranking(i2t), relevant_i2t),
                                     "t2i_ms_per_query": seconds / queries * 1000, "pairs": int(t2i.size + i2t.size)}
            outputs.itm_probabilities["brute_force"] = np.concatenate([t2i.ravel(), i2t.ravel()])
    else:
        skipped.append(f"{scorer.label}: no itm head: ITM accuracy and ITM retrieval skipped")
    if "itc" in heads and not naive:
        index, index_s = _timed(scorer.embed_images, images)
        text_embeds = scorer.embed_texts([captions[u] for u in distinct])  # (U, E)
        where = {captions[u]: n for n, u in enumerate(distinct)}
        cosine_t2i = text_embeds[[where[c] for c in captions[:queries]]] @ index.T  # (Q, N)
        cosine_i2t = index[:queries] @ text_embeds.T  # (Q, U)
        result["itc"] = {"t2i": recall_at(ranking(cosine_t2i), relevant),
                         "i2t": recall_at(ranking(cosine_i2t), relevant_i2t)}
        if "itm" in heads:
            result["two_stage"] = _two_stage(scorer, data, index, cosine_i2t, k, (relevant, relevant_i2t),
                                             outputs)
            result["two_stage"]["index_s"] = index_s
    elif not naive:
        skipped.append(f"{scorer.label}: no itc head: ITC and two-stage retrieval skipped")
    if "mlm" in heads and not naive:
        predictions, seconds = _timed(lambda: [scorer.fill_mask(images[i], text) for i, text, _, _ in data.masked])
        outputs.mlm_top1 = np.array([token for token, _ in predictions])
        result["mlm"] = mlm_accuracy([word for _, word in predictions], [w for _, _, w, _ in data.masked],
                                     [c for _, _, _, c in data.masked])
        result["timing_s"]["mlm_ms_per_item"] = seconds / len(data.masked) * 1000
    elif not naive:
        skipped.append(f"{scorer.label}: no mlm head: MLM accuracy skipped")
    return result, outputs, skipped


def _two_stage(scorer, data: EvalSet, index, cosine_i2t, k: int, relevant, outputs: TaskOutputs) -> dict:
    """t→i: the backend's retrieve with a prebuilt ITC index (one call per query, timed); i→t: the ITC shortlist
    of k distinct captions reranked by the backend's itm_scores."""
    images, captions, queries, distinct = data.images, data.captions, data.queries, data.distinct
    top = min(max(RECALL_AT), k)
    t2i, times = [], []
    for query in captions[:queries]:
        order, seconds = _timed(scorer.two_stage_t2i, query, images, index, k, top)
        t2i.append(order)
        times.append(seconds)
    i2t = []
    for q in range(queries):
        shortlist = np.lexsort((np.arange(len(distinct)), -cosine_i2t[q]))[:k]  # candidate positions
        scores = scorer.itm_scores(images[q], [captions[distinct[u]] for u in shortlist])
        i2t.append(shortlist[np.lexsort((shortlist, -scores))])
    t2i, i2t = np.array(t2i), np.array(i2t)
    outputs.rankings |= {"two_stage t2i": t2i, "two_stage i2t": i2t[:, :top]}
    return {"k": k, "t2i": recall_at(t2i, relevant[0]), "i2t": recall_at(i2t, relevant[1]),
            "t2i_ms_per_query_p50": float(np.median(times)) * 1000,
            "t2i_ms_per_query_p90": float(np.percentile(times, 90)) * 1000}


def default_labels(manifest) -> list[str]:
    """torch fp32, every variant on ONNX Runtime's CPU provider (and CUDA where this onnxruntime has it), and the
    naive export where the checkpoint has ITM."""
    import onnxruntime

    labels = ["torch"] + [f"onnxruntime:{p}" for p in manifest.precisions]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        labels += [f"onnxruntime:{p}:cuda" for p in manifest.precisions]
    return labels + (["onnxruntime-naive"] if "itm" in manifest.heads else [])


def scorer_for(backend, eager_scorer):
    from .backends import NaiveExportBackend, RuntimeBackend, TorchBackend

    if isinstance(backend, TorchBackend):
        return eager_scorer if backend.label == "torch" else EagerScorer(backend.eager, backend.label)
    if isinstance(backend, NaiveExportBackend):
        return NaiveScorer(backend)
    if isinstance(backend, RuntimeBackend):
        return RuntimeScorer(backend.runtime, backend.label)
    raise TypeError(f"no scorer for {type(backend).__name__}")


def run_accuracy(export_dir, labels: list[str] | None, options: Options, log=print) -> dict:
    """Every backend on the held-out split (and the held-out combinations), against eager fp32 in the same run."""
    import tempfile

    from bt_runtime import read_manifest

    from .backends import BackendUnavailable, make_backend
    from .bench import eager_for

    manifest = read_manifest(export_dir)
    labels = labels or default_labels(manifest)
    labels = labels if "torch" in labels else ["torch", *labels]
    splits = [("heldout", options.gallery, options.queries)]
    if options.combos_gallery:
        splits.append(("heldout_combos", options.combos_gallery, min(options.queries, options.combos_gallery)))
    mask_token = manifest.tokenizer.mask_token
    image_size = manifest.preprocessing.image_size
    data = []  # before loading any model: a bad seed or size fails in a second
    for split, size, queries in splits:
        log(f"generating {size} {split} samples (seed {options.seed})")
        data.append(make_eval_set(options.seed, size, queries=queries, image_size=image_size, split=split,
                                  mask_token=mask_token))
    import torch

    torch.set_num_threads(options.torch_threads)
    eager = eager_for(manifest)
    scorers, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="bt-bench-") as workdir:
        eager_scorer = EagerScorer(eager)
        for label in labels:
            try:
                scorers.append(scorer_for(make_backend(label, export_dir, manifest, eager, workdir), eager_scorer))
            except BackendUnavailable as err:
                skipped.append(str(err))
                log(f"skipped {err}")
        splits_out = {}
        for evalset in data:
            results, decided = {}, {}
            for scorer in scorers:
                log(f"{evalset.split}: {scorer.label}")
                started = time.perf_counter()
                result, outputs, why = evaluate(scorer, evalset, min(options.k, len(evalset.samples)),
                                                naive=isinstance(scorer, NaiveScorer))
                result["timing_s"]["total"] = time.perf_counter() - started
                results[scorer.label], decided[scorer.label] = result, outputs
                skipped += [w for w in why if w not in skipped]
            for label, outputs in decided.items():
                if label != "torch":
                    agreement = task_agreement(decided["torch"], outputs)
                    results[label]["differs_from_eager"] = {m: 1.0 - v for m, v in agreement.items()}
            splits_out[evalset.split] = {"gallery": len(evalset.samples), "queries": evalset.queries,
                                         "negatives": len(evalset.negatives), "masked": len(evalset.masked),
                                         "results": results, "bars": check_bars(results)}
    return {"schema_version": 1, "scenario": "accuracy",
            "command": " ".join(shlex.quote(a) for a in ["bt-bench", *sys.argv[1:]]),
            "export": {"directory": str(export_dir), "checkpoint": manifest.checkpoint.alias
                       or manifest.checkpoint.hub_id or manifest.checkpoint.path or manifest.checkpoint.kind,
                       "kind": manifest.checkpoint.kind, "random_init": manifest.checkpoint.random_init,
                       "precisions": list(manifest.precisions)},
            "machine": {"cpu": machine.cpu_info(), "gpu": machine.gpu_info()},
            "versions": machine.versions(), "threads": machine.thread_settings(),
            "settings": vars(options) | {"pair_batch": PAIR_BATCH}, "skipped": skipped,
            "splits": splits_out, "failing": []}
