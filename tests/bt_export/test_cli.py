"""bt-export on damaged inputs: one line on stderr, exit 2, nothing written — never a raw traceback."""

from __future__ import annotations

import shutil

import pytest
from transformers import BridgeTowerForImageAndTextRetrieval
from typer.testing import CliRunner

from bt_export.cli import app
from bt_export.configs import TINY_TOKENIZER_DIR

from .checkpoint_dirs import save_checkpoint, small_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "c", BridgeTowerForImageAndTextRetrieval, small_config())


def _run(args, out):
    result = CliRunner().invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "error:" in result.output
    assert not out.exists()
    return result.output


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_weights(checkpoint, tmp_path, damage):
    copy = shutil.copytree(checkpoint, tmp_path / "c")
    weights = copy / "model.safetensors"
    weights.write_bytes(b"not a safetensors file" if damage == "garbage" else weights.read_bytes()[:5000])
    assert "the weights cannot be read" in _run(["-c", str(copy)], tmp_path / "out")


def test_corrupt_tokenizer_option(tmp_path):
    tokenizer = shutil.copytree(TINY_TOKENIZER_DIR, tmp_path / "tok")
    (tokenizer / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    output = _run(["-c", "base", "--random-init", "--tokenizer", str(tokenizer)], tmp_path / "out")
    assert "tokenizer cannot be read" in output


def test_truncated_parity_image(photos_dir, tmp_path):
    image = tmp_path / "cut.png"
    image.write_bytes((photos_dir / "coco_000000039769.png").read_bytes()[:3000])
    assert "cut.png" in _run(["-c", "tiny", "--parity-images", str(image)], tmp_path / "out")


def test_a_bad_int8_exclude_pattern_is_refused_before_any_work(tmp_path, monkeypatch):
    import bt_export.export as export

    monkeypatch.setattr(export, "load_checkpoint", lambda *a, **k: pytest.fail("loaded before the check"))
    output = _run(["-c", "tiny", "--precision", "fp32,int8", "--int8-exclude", "^text_tower/", "--int8-exclude", "(["],
                  tmp_path / "out")
    assert "--int8-exclude '([': not a regular expression" in output


def test_a_parity_image_the_runtime_would_refuse_is_refused_before_any_work(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    import bt_export.export as export

    image = tmp_path / "deep.png"
    Image.fromarray(np.full((20, 30), 40_000, np.uint16)).save(image)
    monkeypatch.setattr(export, "load_checkpoint", lambda *a, **k: pytest.fail("loaded before the check"))
    assert "deep.png': image mode 'I;16'" in _run(["-c", "tiny", "--parity-images", str(image)], tmp_path / "out")


def test_a_tokenizer_larger_than_the_models_vocabulary_is_refused_at_load(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "small-vocab", BridgeTowerForImageAndTextRetrieval,
                                 small_config(vocab_size=100))  # the tiny tokenizer has 515 tokens
    output = " ".join(_run(["-c", str(checkpoint)], tmp_path / "out").split())  # rich wraps long lines
    assert "its tokenizer has 515 tokens, more than the model's text vocab_size 100" in output
