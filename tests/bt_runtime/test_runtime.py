"""Task pipelines on the tiny export vs transformers eager (HF processor + HF model of the same checkpoint)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bt_runtime import BridgeTowerRuntime, read_manifest
from bt_runtime.errors import BtRuntimeError, ImageInputError, TaskUnavailableError, TextInputError

pytest.importorskip("torch")
from bt_export.eager import EagerBridgeTower  # noqa: E402
from bt_export.specs import RUNTIME_FP32_BOUNDS, SAME_GRAPH_ABS  # noqa: E402

CAPTIONS = ["two cats chilling on a couch", "A football player scoring a goal", "a dog",
            "a photo of the camera man standing in a field next to a small tripod"]


@pytest.fixture(scope="module")
def runtime(tiny_export):
    return BridgeTowerRuntime.load(tiny_export)


@pytest.fixture(scope="module")
def eager(tiny_export):
    return EagerBridgeTower("tiny", tiny_export)


@pytest.fixture(scope="module")
def photos(photos_dir):
    return sorted(photos_dir.iterdir())


def test_itm_scores_match_hf_loop(runtime, eager, photos):
    for photo in photos:
        scores = runtime.itm_scores(photo, CAPTIONS)
        expected = np.array([eager.itm_probability(__import__("PIL.Image").Image.open(photo), t) for t in CAPTIONS])
        assert scores.shape == (len(CAPTIONS),)
        assert np.max(np.abs(scores - expected)) <= RUNTIME_FP32_BOUNDS["itm_probability_abs"]


def test_itm_matrix_and_pairs_agree_with_itm_scores(runtime, photos):
    matrix = runtime.itm_matrix(photos, CAPTIONS, batch_size=3)  # batches that straddle images
    assert matrix.shape == (len(photos), len(CAPTIONS))
    for row, photo in enumerate(photos):
        np.testing.assert_allclose(matrix[row], runtime.itm_scores(photo, CAPTIONS), atol=SAME_GRAPH_ABS)
    pairs = runtime.itm_pairs(photos, CAPTIONS[:len(photos)])
    np.testing.assert_allclose(pairs, np.diag(matrix[:, :len(photos)]), atol=SAME_GRAPH_ABS)


def test_itm_matrix_runs_each_tower_once_per_input(runtime, photos, monkeypatch):
    calls = dict.fromkeys(runtime.backend.graphs, 0)
    real_run = runtime.backend.run

    def counting(graph, feeds, outputs=None):
        calls[graph] += next(iter(feeds.values())).shape[0]  # batch first in every graph
        return real_run(graph, feeds, outputs)

    monkeypatch.setattr(runtime.backend, "run", counting)
    runtime.itm_matrix(photos, CAPTIONS, batch_size=5)
    # ITM runs the head-specific graph (no MLM head, the last layer at the class positions), never cross_modal
    assert calls == {"vision_tower": len(photos), "text_tower": len(CAPTIONS), "cross_modal": 0,
                     "cross_modal_pooled": len(photos) * len(CAPTIONS)}


def test_fill_mask_top1_matches_hf(runtime, eager, photos):
    from PIL import Image

    text = "a <mask> looking out of the <mask>"
    for photo in photos:
        result = runtime.fill_mask(photo, text, top_k=3)
        logits, ids = eager.mlm_logits(Image.open(photo), text)
        positions = np.flatnonzero(ids == runtime.tokenizer.mask_token_id)
        assert [m.position for m in result.masks] == positions.tolist()
        assert [m.token_ids[0] for m in result.masks] == logits[positions].argmax(-1).tolist()
        assert all(len(m.tokens) == 3 and m.probabilities == sorted(m.probabilities, reverse=True)
                   for m in result.masks)
        assert "<mask>" not in result.sentence


def test_embeddings_match_hf(runtime, eager, photos):
    from PIL import Image

    images = [Image.open(p) for p in photos]
    texts = CAPTIONS[:len(images)]
    hf_images, hf_texts = eager.contrastive(images, texts)
    image_embeds, text_embeds = runtime.embed_images(photos), runtime.embed_texts(texts)
    for ours, theirs in ((image_embeds, hf_images), (text_embeds, hf_texts)):
        # a property of float32, not a product bound: unit vectors normalized in float32 (eps 1.2e-7 per step)
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        cosine = np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
        assert cosine.min() >= RUNTIME_FP32_BOUNDS["embedding_cosine_min"]


def test_retrieve_ranks_like_brute_force_eager_itm(runtime, eager, photos):
    from PIL import Image

    originals = [Image.open(p) for p in photos]
    gallery = originals + [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in originals]  # 8, no duplicates
    query = "two cats chilling on a couch"
    expected = np.array([eager.itm_probability(image, query) for image in gallery])
    assert len(np.unique(expected.round(6))) == len(gallery)  # no ties, so the ranking is well defined
    hits = runtime.retrieve(query, gallery, top_k=len(gallery), rerank=len(gallery), batch_size=3)
    assert [h.index for h in hits] == np.argsort(-expected).tolist()
    np.testing.assert_allclose([h.itm_score for h in hits], expected[[h.index for h in hits]],
                               atol=RUNTIME_FP32_BOUNDS["itm_probability_abs"])
    # two-stage: the ITC shortlist of 3 is reranked by ITM; ITC-only ranks by cosine
    shortlist = runtime.retrieve(query, gallery, top_k=2, rerank=3)
    by_itc = runtime.retrieve(query, gallery, top_k=3, rerank=0)
    assert {h.index for h in shortlist} <= {h.index for h in by_itc}
    assert all(h.itm_score is None for h in by_itc) and [h.score for h in by_itc] == sorted(
        [h.score for h in by_itc], reverse=True)


def test_retrieve_with_an_index_ranks_as_streaming_and_encodes_only_the_shortlist(runtime, photos):
    """An ITC index computed once gives the hits of the streaming two-stage path; per query only the shortlisted
    images reach the vision tower (rerank=0: none); equal similarities rank the higher image index first."""
    from PIL import Image

    originals = [Image.open(p) for p in photos]
    gallery = originals + [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in originals]
    index = runtime.embed_images(gallery)
    query = "two cats chilling on a couch"
    seen = []
    real = runtime.encode_pixels
    runtime.encode_pixels = lambda pixels: seen.append(len(pixels)) or real(pixels)
    try:
        for top_k, rerank in ((3, 5), (10, 10), (4, 0)):
            seen.clear()
            indexed = runtime.retrieve(query, gallery, top_k=top_k, rerank=rerank, index=index, batch_size=16)
            assert seen == ([min(max(rerank, top_k), len(gallery))] if rerank else [])
            streamed = runtime.retrieve(query, gallery, top_k=top_k, rerank=rerank)
            assert [h.index for h in indexed] == [h.index for h in streamed]
            np.testing.assert_allclose([h.score for h in indexed], [h.score for h in streamed], atol=SAME_GRAPH_ABS)
        missing = [Path("/nonexistent.png")] * len(gallery)  # rerank=0 never opens an image
        assert [h.index for h in runtime.retrieve(query, missing, top_k=3, rerank=0, index=index)] == \
            [h.index for h in indexed[:3]]
    finally:
        runtime.encode_pixels = real
    tied = np.repeat(index[:1], len(gallery), axis=0)
    assert [h.index for h in runtime.retrieve(query, missing, top_k=3, rerank=0, index=tied)] == [7, 6, 5]
    with pytest.raises(ImageInputError, match=r"images\[7\]"):  # named by its place in the gallery
        runtime.retrieve(query, missing, top_k=3, rerank=3, index=tied)


@pytest.mark.parametrize("index,says", [
    (lambda e: e[:-1], r"index must be .* shape \(3, 32\) .* got float32 array of shape \(2, 32\)"),
    (lambda e: e[:, :8], r"shape \(3, 32\)"),
    (lambda e: e.tolist(), "got list"),
    (lambda e: e.astype(np.int64), "got int64 array"),
    (lambda e: np.where(e > 0, np.nan, e), "non-finite"),
    (lambda e: e * 2, r"index row 0 has L2 norm 2 \(3 of 3 rows are not unit vectors within 0.01\)"),
    (lambda e: np.concatenate([e[:2], e[2:] * 0.9]), r"row 2 has L2 norm 0.9 \(1 of 3"),
])
def test_retrieve_refuses_an_index_that_is_not_the_gallerys(runtime, photos, index, says):
    gallery = [str(p) for p in photos[:3]]
    with pytest.raises(BtRuntimeError, match=says):
        runtime.retrieve("a cat", gallery, index=index(runtime.embed_images(gallery)))


@pytest.mark.parametrize("call,error,message", [
    (lambda rt, img: rt.itm_scores(img, []), TextInputError, "texts: empty list"),
    (lambda rt, img: rt.itm_scores(img, "a cat"), TextInputError, "list of strings"),
    (lambda rt, img: rt.itm_scores(b"\x89PNG broken", ["a"]), ImageInputError, "image: not a decodable image"),
    (lambda rt, img: rt.itm_scores(object(), ["a"]), ImageInputError, "image: unsupported type"),
    (lambda rt, img: rt.itm_matrix([], ["a"]), ImageInputError, "images: empty list"),
    (lambda rt, img: rt.itm_matrix([img, b""], ["a"]), ImageInputError, r"images\[1\]: empty bytes"),
    (lambda rt, img: rt.itm_pairs([img, img], ["a"]), BtRuntimeError, "images has 2 items but texts has 1"),
    (lambda rt, img: rt.fill_mask(img, "no mask here"), TextInputError, "has no <mask>"),
    (lambda rt, img: rt.fill_mask(img, "a <mask>", top_k=0), BtRuntimeError, "top_k must be a positive"),
    (lambda rt, img: rt.retrieve("q", [img], rerank=-1), BtRuntimeError, "rerank must be"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_input_names_the_argument(runtime, photos, call, error, message):
    with pytest.raises(error, match=message):
        call(runtime, photos[0])


def test_long_text_is_truncated_not_crashing(runtime, photos):
    scores = runtime.itm_scores(photos[0], ["two cats " * 300, "a cat"])
    assert scores.shape == (2,) and np.isfinite(scores).all()


@pytest.fixture(scope="module")
def itm_only_export(tmp_path_factory):
    from transformers import BridgeTowerForImageAndTextRetrieval

    from bt_export import export_checkpoint

    from ..bt_export.checkpoint_dirs import save_checkpoint, small_config

    root = tmp_path_factory.mktemp("itm-only")
    checkpoint = save_checkpoint(root / "ckpt", BridgeTowerForImageAndTextRetrieval, small_config())
    export_checkpoint(str(checkpoint), root / "export")
    return root / "export"


def test_tasks_without_their_head_say_so(itm_only_export, photos):
    runtime = BridgeTowerRuntime.load(itm_only_export)
    assert runtime.heads == ("itm",)
    with pytest.raises(TaskUnavailableError, match="embed_images: this export has no contrastive"):
        runtime.embed_images(photos)
    with pytest.raises(TaskUnavailableError, match="embed_texts"):
        runtime.embed_texts(["a"])
    with pytest.raises(TaskUnavailableError, match="fill_mask: this export has no masked-LM"):
        runtime.fill_mask(photos[0], "a <mask>")
    hits = runtime.retrieve("a cat", photos, top_k=2)  # no ITC: ITM over every image
    scores = runtime.itm_matrix(photos, ["a cat"])[:, 0]
    assert [h.index for h in hits] == list(np.argsort(-scores)[:2])
    with pytest.raises(TaskUnavailableError, match="retrieve with an index: this export has no contrastive"):
        runtime.retrieve("a cat", photos, index=np.zeros((len(photos), 32), np.float32))


def test_an_itm_only_export_has_one_cross_modal_graph_computed_for_the_poolers(itm_only_export):
    """Without an MLM head nothing reads the last layer beyond the class positions: cross_modal itself is the
    head-specific form (its parity with transformers is checked at export) and no second graph is written."""
    manifest = read_manifest(itm_only_export)
    assert sorted(manifest.graphs) == ["cross_modal", "text_tower", "vision_tower"]
    assert manifest.wiring.substitutes == []
    assert manifest.variants["fp32"].parity.passed
    assert not list(itm_only_export.glob("cross_modal_pooled*"))


def test_itm_opens_the_pooled_graph_and_fill_mask_the_full_one(tiny_export, photos):
    with BridgeTowerRuntime.load(tiny_export) as runtime:
        runtime.itm_scores(photos[0], ["a cat"])
        assert sorted(runtime.backend._sessions) == ["cross_modal_pooled", "text_tower", "vision_tower"]
        runtime.fill_mask(photos[0], "a <mask> on a couch")
        assert "cross_modal" in runtime.backend._sessions
        assert runtime.cross_graph(["mlm_logits"]) == "cross_modal"
        assert runtime.cross_graph(["pooler_output", "itm_logits"]) == "cross_modal_pooled"


@pytest.mark.parametrize("spinning, entries", [
    ("per-run", {"session.force_spinning_stop": "1"}),
    ("off", {"session.intra_op.allow_spinning": "0"}),
    ("on", {}),
])
def test_threads_spin_as_asked(tiny_export, spinning, entries):
    """per-run (the default) spins while a graph runs and stops when it returns; "on" leaves ONNX Runtime's default."""
    kwargs = {} if spinning == "per-run" else {"spinning": spinning}
    with BridgeTowerRuntime.load(tiny_export, **kwargs) as runtime:
        options = runtime.backend.session("text_tower").get_session_options()
        for key in ("session.force_spinning_stop", "session.intra_op.allow_spinning"):
            if key in entries:
                assert options.get_session_config_entry(key) == entries[key]
            else:
                with pytest.raises(Exception, match=key.split(".")[-1]):
                    options.get_session_config_entry(key)


def test_spinning_refuses_an_unknown_mode(tiny_export):
    with pytest.raises(BtRuntimeError, match="spinning 'sometimes'; valid: \\['per-run', 'off', 'on'\\]"):
        BridgeTowerRuntime.load(tiny_export, spinning="sometimes")
    with pytest.raises(BtRuntimeError, match="allow_spinning is now spinning='on' \\(True\\) or spinning='off'"):
        BridgeTowerRuntime.load(tiny_export, allow_spinning=False)  # the option before issue 21


def test_cpu_sessions_keep_residual_and_layernorm_unfused(tiny_export, tmp_path, monkeypatch):
    """ONNX Runtime ignores an optimizer name it does not know, so check the name still removes the fusion (a
    renamed optimizer would silently bring the slow fused kernel back), and that the runtime passes it on CPU."""
    import onnx
    import onnxruntime as ort

    from bt_runtime.backends.onnxruntime import CPU_DISABLED_OPTIMIZERS, session_options

    def optimized_ops(disabled):
        options = session_options()
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(str(tiny_export / "text_tower.onnx"), options, providers=["CPUExecutionProvider"],
                             disabled_optimizers=disabled)
        optimized = onnx.load(options.optimized_model_filepath, load_external_data=False)
        return {node.op_type for node in optimized.graph.node}

    assert "SkipLayerNormalization" in optimized_ops(None)  # else the opt-out has nothing left to do
    unfused = optimized_ops(CPU_DISABLED_OPTIMIZERS)
    assert "SkipLayerNormalization" not in unfused and "LayerNormalization" in unfused

    seen = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    with BridgeTowerRuntime.load(tiny_export) as runtime:
        runtime.backend.session("text_tower")
    assert seen[-1]["disabled_optimizers"] == CPU_DISABLED_OPTIMIZERS


def test_prepack_weights_false_keeps_one_copy_of_each_weight(tiny_export, photos):
    lean, rt = BridgeTowerRuntime.load(tiny_export, prepack_weights=False), BridgeTowerRuntime.load(tiny_export)
    with lean, rt:
        options = lean.backend.session("vision_tower").get_session_options()
        assert options.get_session_config_entry("session.disable_prepacking") == "1"
        np.testing.assert_allclose(lean.itm_scores(photos[0], ["a cat"]), rt.itm_scores(photos[0], ["a cat"]),
                                   atol=SAME_GRAPH_ABS)


def test_pairs_run_in_batches_of_the_device_default(runtime, photos, monkeypatch):
    """CPU: 8 pairs per cross-modal run unless asked (measured faster than 32 on the full-size base)."""
    from bt_runtime.features import PAIR_BATCH

    sizes = []
    real_run = runtime.backend.run

    def recording(graph, feeds, outputs=None):
        if graph.startswith("cross_modal"):
            sizes.append(feeds["image_index"].shape[0])
        return real_run(graph, feeds, outputs)

    monkeypatch.setattr(runtime.backend, "run", recording)
    texts = [f"a cat ({i})" for i in range(20)]
    default = runtime.itm_scores(photos[0], texts)
    assert PAIR_BATCH["cpu"] == 8 and sizes == [8, 8, 4]
    sizes.clear()
    np.testing.assert_allclose(runtime.itm_scores(photos[0], texts, batch_size=32), default, atol=SAME_GRAPH_ABS)
    assert sizes == [20]
