"""Hardening of the runtime: every file it reads is hashed and confined, every bad input is a BtRuntimeError with a
clear message (never another exception type, never a silent change), resources are bounded. Property tests draw
images, texts and bytes; each must give the documented result or a project error."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bt_runtime import BackendError, BridgeTowerRuntime, ImageInputError, ManifestError, TextInputError
from bt_runtime.images import DEFAULT_MAX_PIXELS
from tests.conftest import edit_manifest


@pytest.fixture(scope="module")
def runtime(tiny_export):
    return BridgeTowerRuntime.load(tiny_export)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---- integrity: every file the runtime reads is listed, hashed and confined

def test_edited_tokenizer_is_refused(export_copy):
    path = export_copy / "tokenizer.json"
    data = json.loads(path.read_text())
    data["added_tokens"][0]["content"] = "<S>"  # still valid JSON, different ids
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="tokenizer.json.*does not match the sha256"):
        BridgeTowerRuntime.load(export_copy)


@pytest.mark.parametrize("content", [b"", b"{not json", b"\xff\xfe\x00garbage"])
def test_corrupt_tokenizer_is_a_manifest_error_even_unverified(export_copy, content):
    (export_copy / "tokenizer.json").write_bytes(content)
    with pytest.raises(ManifestError, match="sha256"):
        BridgeTowerRuntime.load(export_copy)
    with pytest.raises(ManifestError, match="tokenizer file .*tokenizer.json.* cannot be loaded"):
        BridgeTowerRuntime.load(export_copy, verify_checksums=False)


def test_missing_tokenizer_is_named(export_copy):
    (export_copy / "tokenizer.json").unlink()
    with pytest.raises(ManifestError, match=r"missing file\(s\) named in its manifest: \['tokenizer.json'\]"):
        BridgeTowerRuntime.load(export_copy)


def test_a_tokenizer_of_special_tokens_only_is_refused(export_copy):
    """What bt-export wrote before 2026-12-02 from a vocab.json + merges.txt checkpoint: a valid, listed tokenizer
    whose vocabulary is its special tokens, so every text was <s></s> and every score the same."""
    path = export_copy / "tokenizer.json"
    data = json.loads(path.read_text())
    data["model"]["vocab"] = {token["content"]: token["id"] for token in data["added_tokens"]}
    data["model"]["merges"] = []
    path.write_text(json.dumps(data))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    edit_manifest(export_copy, lambda manifest: [entry.update(sha256=digest) for entry in manifest["files"]
                                                 if entry["file"] == "tokenizer.json"])
    with pytest.raises(ManifestError, match="holds only its 5 special tokens.*re-export it"):
        BridgeTowerRuntime.load(export_copy)


def test_a_tokenizer_of_special_tokens_and_added_words_is_kept(tmp_path):
    """Tokens added with special=False tokenize text: such a tokenizer is not the empty one refused above."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    from bt_runtime.text import TextTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(WordLevel({token: i for i, token in enumerate(specials)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.add_special_tokens(specials)
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    with pytest.raises(ManifestError, match="holds only its 5 special tokens"):
        TextTokenizer(path, 16, 1, "<mask>", 4)._check_not_empty(path)
    tokenizer.add_tokens(["a", "cat"])
    tokenizer.save(str(path))
    loaded = TextTokenizer(path, 16, 1, "<mask>", 4)
    loaded._check_not_empty(path)
    assert loaded(["a cat"]).input_ids.tolist() == [[5, 6]]


def test_unlisted_external_data_is_refused(export_copy):
    (export_copy / "cross_modal.int8.onnx.data").write_bytes(np.ones(1000, np.float32).tobytes())
    with pytest.raises(ManifestError, match=r"external-data file\(s\) its manifest does not list: "
                                            r"\['cross_modal.int8.onnx.data'\]"):
        BridgeTowerRuntime.load(export_copy)


def test_listed_external_data_that_is_missing_is_named(export_copy):
    (export_copy / "vision_tower.onnx.data").unlink()  # the weights beside the graph
    with pytest.raises(ManifestError, match=r"missing file\(s\).*vision_tower.onnx.data"):
        BridgeTowerRuntime.load(export_copy)


def test_corrupt_graph_without_checksums_is_a_backend_error(export_copy):
    (export_copy / "text_tower.onnx").write_bytes(b"\x08\x07garbage" * 100)
    runtime = BridgeTowerRuntime.load(export_copy, verify_checksums=False)
    with pytest.raises(BackendError, match="ONNX Runtime could not load text_tower"):
        runtime.embed_texts(["a cat"])


def test_hash_mismatch_message_shows_no_hash_of_the_file(export_copy):
    (export_copy / "vision_tower.onnx").write_bytes(b"secret contents")
    with pytest.raises(ManifestError) as err:
        BridgeTowerRuntime.load(export_copy).embed_images([np.zeros((8, 8, 3), np.uint8)])
    import hashlib

    assert hashlib.sha256(b"secret contents").hexdigest()[:8] not in str(err.value)


# ---- images

def test_decompression_bomb_is_refused_from_the_header(runtime, tmp_path):
    bomb = _png(Image.new("1", (12000, 12000)))  # 144 Mpx, a few KB on disk
    assert len(bomb) < 200_000
    with pytest.raises(ImageInputError, match=r"12000×12000 = 144,000,000 pixels is above the runtime's max_pixels"):
        runtime.preprocess.pixel_values(bomb)


def test_max_pixels_is_a_setting(tiny_export):
    small = BridgeTowerRuntime.load(tiny_export, max_pixels=100)
    with pytest.raises(ImageInputError, match="max_pixels"):
        small.preprocess.pixel_values(np.zeros((11, 10, 3), np.uint8))
    assert small.preprocess.pixel_values(np.zeros((10, 10, 3), np.uint8)).shape == (3, 96, 96)
    assert BridgeTowerRuntime.load(tiny_export).preprocess.max_pixels == DEFAULT_MAX_PIXELS
    with pytest.raises(ImageInputError, match="max_pixels must be a positive integer"):
        BridgeTowerRuntime.load(tiny_export, max_pixels=0)


def test_lazily_opened_truncated_file_and_closed_image(runtime, tmp_path):
    path = tmp_path / "truncated.png"
    data = _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    path.write_bytes(data[: len(data) // 2])
    lazy = Image.open(path)  # not loaded: the error comes when the runtime reads it
    with pytest.raises(ImageInputError, match="cannot be read"):
        runtime.preprocess.pixel_values(lazy)
    closed = Image.open(io.BytesIO(data))
    closed.load()
    closed.close()
    with pytest.raises(ImageInputError):
        runtime.preprocess.pixel_values(closed)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), cut=st.integers(0, 2000))
def test_any_bytes_decode_or_are_an_image_error(runtime, data, cut):
    valid = _png(Image.new("RGB", (20, 10), (10, 200, 30)))
    for candidate in (data, valid[:cut], valid[:cut] + data):
        try:
            pixels = runtime.preprocess.pixel_values(candidate)
        except ImageInputError:
            continue
        assert pixels.shape == (3, 96, 96) and pixels.dtype == np.float32 and np.isfinite(pixels).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.integers(1, 40), width=st.integers(1, 40), channels=st.sampled_from([None, 1, 2, 3, 4, 5]),
       dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.int64]))
def test_any_array_is_processed_or_an_image_error(runtime, height, width, channels, dtype):
    shape = (height, width) if channels is None else (height, width, channels)
    array = np.random.default_rng(height * width).integers(0, 255, shape).astype(dtype)
    try:
        pixels = runtime.preprocess.pixel_values(array)
    except ImageInputError:
        return
    assert pixels.shape == (3, 96, 96) and np.isfinite(pixels).all()


# ---- texts

def test_lone_surrogate_is_a_text_error(runtime):
    with pytest.raises(TextInputError, match=r"texts\[1\]: not valid Unicode text"):
        runtime.itm_scores(np.zeros((8, 8, 3), np.uint8), ["fine", "bad \udcff bytes"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(exclude_categories=()), max_size=200))
def test_any_text_tokenizes_or_is_a_text_error(runtime, text):
    try:
        encoded = runtime.tokenizer([text])
    except TextInputError:
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        return
    assert 2 <= encoded.input_ids.shape[1] <= runtime.tokenizer.max_length


def test_mask_beyond_truncation_gives_a_short_message(runtime):
    text = "word " * 3_000 + "<mask>"  # beyond 512 tokens, under max_chars
    with pytest.raises(TextInputError) as err:
        runtime.fill_mask(np.zeros((8, 8, 3), np.uint8), text)
    assert "cut off by truncation" in str(err.value) and len(str(err.value)) < 400


# ---- resources and streams

def test_concurrent_first_calls_create_each_session_once(tiny_export, monkeypatch):
    runtime = BridgeTowerRuntime.load(tiny_export)
    created = []
    real = runtime.backend._create_session

    def counting(graph):
        created.append(graph)
        return real(graph)

    monkeypatch.setattr(runtime.backend, "_create_session", counting)
    image = np.zeros((20, 20, 3), np.uint8)
    results, errors = [], []

    def call():
        try:
            results.append(runtime.itm_scores(image, ["a cat"]))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 8
    assert sorted(created) == ["cross_modal_pooled", "text_tower", "vision_tower"]  # ITM never opens the MLM graph
    assert all(np.array_equal(r, results[0]) for r in results)


def test_retrieve_progress_goes_to_stderr_and_bad_gallery_files_fail_first(tiny_export, photos_dir, tmp_path):
    gallery = tmp_path / "gallery"
    shutil.copytree(photos_dir, gallery)
    command = [sys.executable, "-c", "from bt_runtime.cli import app; app()", "retrieve", str(tiny_export),
               "--query", "two cats", "--images", str(gallery), "--top-k", "2"]
    ok = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)) == 2  # stdout is JSON only
    (gallery / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 50)
    bad = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "broken.png" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_non_utf8_argument_is_one_line_and_exit_2(tiny_export, photos_dir):
    command = [sys.executable, "-c", "from bt_runtime.cli import app; app()", "itm", str(tiny_export), "--image",
               str(photos_dir / "coco_000000039769.png"), "--text", b"caf\xe9".decode("utf-8", "surrogateescape")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "not valid Unicode text" in result.stderr and "Traceback" not in result.stderr


def test_library_messages_are_cut_to_one_line_and_never_empty():
    from bt_runtime.errors import first_line

    assert first_line(Exception("first\nsecond")) == "first"
    assert first_line(Exception("x" * 500), 10) == "x" * 10
    assert first_line(Exception()) == "Exception" and first_line(OSError("  \n")) == "OSError"


def test_a_path_too_long_for_the_filesystem_is_an_image_error(runtime):
    with pytest.raises(ImageInputError, match=r"image: no image file at 'a+' \(File name too long\)"):
        runtime.itm_scores("a" * 300, ["a cat"])
