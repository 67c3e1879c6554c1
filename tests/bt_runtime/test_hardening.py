"""Integrity gaps and raw tracebacks of issue 22, each a one-line project error now: a tampered
tokenizer_config.json, a graph re-pointed to unlisted external data, manifests that pass the schema but not the
graphs, malformed goldens, fill_mask masks beyond truncation and `top_k=True`, `verify` mismatches reported as
mismatches (exit 1), and the per-call text limit."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from bt_runtime import BridgeTowerRuntime
from bt_runtime.cli import app
from bt_runtime.errors import BtRuntimeError, ManifestError, TextInputError
from bt_runtime.text import text_limit
from tests.conftest import edit_manifest


@pytest.fixture(scope="module")
def runtime(tiny_export):
    with BridgeTowerRuntime.load(tiny_export) as runtime:
        yield runtime


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def itm(export, photos_dir, text="a cat"):
    return invoke("itm", export, "--image", sorted(photos_dir.iterdir())[0], "--text", text)


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


# ---- integrity


def test_a_tampered_tokenizer_config_is_refused_at_load(export_copy):
    (export_copy / "tokenizer_config.json").write_text('{"model_max_length": 100000}')
    with pytest.raises(ManifestError, match="tokenizer_config.json' does not match the sha256"):
        BridgeTowerRuntime.load(export_copy)
    BridgeTowerRuntime.load(export_copy, verify_checksums=False).close()  # the documented way out still works


def test_a_graph_repointed_to_unlisted_external_data_is_refused(export_copy):
    onnx = pytest.importorskip("onnx")
    from bt_runtime.integrity import sha256_file

    graph = export_copy / "vision_tower.onnx"
    model = onnx.load(str(graph), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "weights.bin"
    (export_copy / "vision_tower.onnx.data").rename(export_copy / "weights.bin")
    onnx.save(model, str(graph))
    (export_copy / "vision_tower.onnx.data").write_bytes(b"")  # the listed name, emptied: its hash fails too
    digest = sha256_file(graph)

    def repoint(data):  # the attacker re-hashes the graph and the listed file, and lists no weights.bin
        entry = data["variants"]["fp32"]["files"]["vision_tower"]
        entry["sha256"] = digest
        entry["external_data"][0]["sha256"] = sha256_file(export_copy / "vision_tower.onnx.data")
    edit_manifest(export_copy, repoint)
    with BridgeTowerRuntime.load(export_copy) as runtime:
        with pytest.raises(ManifestError, match=r"reads external data from \['weights.bin'\]"):
            runtime.encode_pixels(np.zeros((1, 3, 96, 96), np.float32))


# ---- manifests that pass the schema but not the graphs


def _rename_output(data):
    text = json.dumps(data).replace('"itm_logits"', '"../x"')
    data.clear()
    data.update(json.loads(text))


def _image_size_64(data):
    data["preprocessing"].update(image_size=64)
    data["preprocessing"]["center_crop"].update(height=64, width=64)
    data["graphs"]["vision_tower"]["inputs"][0]["shape"] = ["batch", 3, 64, 64]


MANIFEST_EDITS = {
    "max_length": (lambda d: d["tokenizer"].update(max_length=100000), "manifest.tokenizer.max_length: 100000"),
    "pad_id": (lambda d: d["tokenizer"].update(pad_token_id=99999), "manifest.tokenizer.pad_token_id: 99999"),
    "image_size": (_image_size_64, "vision_tower.onnx declares float32 ['batch', 3, 96, 96]"),
    "output_name": (_rename_output, "cross_modal_pooled.onnx declares"),
    "shortest_edge": (lambda d: d["preprocessing"]["resize"].update(shortest_edge=10**9, longest_edge=10**9),
                      "manifest.preprocessing.resize: shortest_edge 1000000000"),
}


@pytest.mark.parametrize("edit", sorted(MANIFEST_EDITS))
def test_manifests_the_graphs_refuse_are_one_line_errors(export_copy, photos_dir, edit):
    change, message = MANIFEST_EDITS[edit]
    edit_manifest(export_copy, change)
    one_line_error(itm(export_copy, photos_dir, "a cat " * 200), message)


def _golden(index_of, **changes):
    def edit(data):
        tensors = {t["name"]: t for t in data["golden"]["tensors"]}
        tensors[index_of].update(changes)
    return edit


def _swap_files(data):
    tensors = {t["name"]: t for t in data["golden"]["tensors"]}
    a, b = tensors["pixel_values"], tensors["decoded_rgb"]
    for key in ("file", "sha256"):
        a[key], b[key] = b[key], a[key]


@pytest.mark.parametrize("edit, message", [
    (_golden("input_ids", dtype="foo"), "dtype: 'foo'; valid:"),
    (_golden("input_ids", dtype="object"), "dtype: 'object'; valid:"),
    (_golden("pixel_values", shape=[7, 7]), "(pixel_values): golden.pixel_values.bin holds"),
    (_swap_files, "(decoded_rgb): golden.pixel_values.bin holds"),
])
def test_malformed_goldens_are_one_line_errors(export_copy, edit, message):
    edit_manifest(export_copy, edit)
    one_line_error(invoke("verify", export_copy), message)


def test_a_verify_mismatch_says_mismatch_with_exit_code_1(export_copy):
    def swap(data):  # two float32 files of one size swapped with their hashes: the values differ
        tensors = {t["name"]: t for t in data["golden"]["tensors"]}
        a, b = tensors["text_embeds"], tensors["cross_embeds"]
        for key in ("file", "sha256"):
            a[key], b[key] = b[key], a[key]
    edit_manifest(export_copy, swap)
    result = invoke("verify", export_copy)
    assert result.exit_code == 1 and "mismatch:" in result.output and "text_embeds" in result.output
    assert "internal error" not in result.output


# ---- fill_mask


def test_masks_beyond_truncation_are_an_error_not_fewer_masks(runtime):
    text = "a <mask> cat " + "word " * 3_000 + "and a <mask>"  # the second mask is cut off, the first is not
    with pytest.raises(TextInputError, match="1 of the 2 <mask> in .* are cut off by truncation at 128 tokens"):
        runtime.fill_mask(np.zeros((8, 8, 3), np.uint8), text)
    assert len(runtime.fill_mask(np.zeros((8, 8, 3), np.uint8), "a <mask> and a <mask>").masks) == 2


@pytest.mark.parametrize("top_k", [True, False, 1.0, "5"])
def test_top_k_must_be_an_integer_not_a_bool(runtime, top_k):
    with pytest.raises(BtRuntimeError, match=f"top_k must be a positive integer, got {top_k!r}"):
        runtime.fill_mask(np.zeros((8, 8, 3), np.uint8), "a <mask>", top_k=top_k)


@pytest.mark.parametrize(("option", "value", "wanted"), [
    ("batch_size", 0, "a positive integer"), ("batch_size", -1, "a positive integer"),
    ("batch_size", None, "a positive integer"), ("top_k", True, "a positive integer"),
    ("rerank", True, "an integer ≥ 0"), ("rerank", -1, "an integer ≥ 0"), ("rerank", 2.0, "an integer ≥ 0")])
def test_retrieve_checks_its_counts_before_any_work(runtime, option, value, wanted, monkeypatch):
    monkeypatch.setattr(runtime, "encode_texts", lambda *a, **k: pytest.fail("the query was embedded first"))
    for index in (None, "an-index-dir"):  # both paths: streamed and from a `bt-run index` directory
        with pytest.raises(BtRuntimeError, match=f"^{option} must be {wanted}, got {value!r}$"):
            runtime.retrieve("a cat", None if index else [np.zeros((8, 8, 3), np.uint8)] * 3, index=index,
                             **{option: value})


def test_numpy_integers_are_counts_too(runtime):
    images = [np.zeros((8, 8, 3), np.uint8)] * 3
    hits = runtime.retrieve("a cat", images, top_k=np.int64(2), rerank=np.int32(1), batch_size=np.int64(2))
    assert [h.index for h in hits] == [h.index for h in runtime.retrieve("a cat", images, top_k=2, rerank=1,
                                                                          batch_size=2)]
    assert len(runtime.fill_mask(images[0], "a <mask>", top_k=np.int64(3)).masks[0].token_ids) == 3


# ---- the per-call text limit


def test_text_limit_applies_to_its_own_calls_only(runtime):
    long = "cat " * 6_000  # 24,000 characters: above the default 20,000
    seen = {}

    def other_thread():  # a caller sharing the runtime keeps the tokenizer's own limit meanwhile
        try:
            runtime.embed_texts([long])
        except TextInputError as err:
            seen["other"] = str(err)

    with text_limit(30_000):
        assert runtime.embed_texts([long]).shape[0] == 1
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert "above the limit of 20,000" in seen["other"]
    assert runtime.tokenizer.max_chars == 20_000
    with pytest.raises(TextInputError, match="above the limit of 20,000"):
        runtime.embed_texts([long])
    with pytest.raises(TextInputError, match="max_chars must be a positive integer"), text_limit(True):
        pass


def test_fill_mask_takes_one_text_and_says_so(runtime):
    with pytest.raises(TextInputError, match=r"^text: expected one string with <mask> in it \(fill_mask takes one "
                                             r"text per call\), got list$"):
        runtime.fill_mask(np.zeros((8, 8, 3), np.uint8), ["a <mask>"])
