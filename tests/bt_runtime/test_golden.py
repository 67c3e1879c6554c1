"""Golden vectors in every validated export, and `bt-run verify` against them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from bt_export.specs import SAME_GRAPH_ABS
from bt_runtime import BridgeTowerRuntime, read_manifest
from bt_runtime.cli import app
from bt_runtime.golden import read, verify


def test_every_step_is_shipped_little_endian_with_its_tolerance(tiny_export):
    manifest = read_manifest(tiny_export)
    golden = manifest.golden
    names = {t.name for t in golden.tensors}
    assert {"decoded_rgb", "resized_rgb", "cropped", "pixel_values", "input_ids", "attention_mask", "image_bridge",
            "image_embeds", "text_bridge", "text_embeds", "pooler_output", "itm_logits", "cross_embeds",
            "itm_probability", "fill_mask_top5"} == names
    assert len(golden.texts) == 2 and manifest.tokenizer.mask_token in golden.texts[1]
    tensors = {t.name: t for t in golden.tensors}
    assert tensors["pixel_values"].shape == [3, 96, 96] and tensors["pixel_values"].dtype == "float32"
    assert tensors["decoded_rgb"].dtype == "uint8" and tensors["decoded_rgb"].tolerance == 0.0
    raw = np.frombuffer((tiny_export / tensors["input_ids"].file).read_bytes(), "<i8")
    np.testing.assert_array_equal(raw.reshape(tensors["input_ids"].shape), read(manifest, tensors["input_ids"]))
    # the shipped values are the runtime's own results on the shipped image
    runtime = BridgeTowerRuntime.load(tiny_export)
    scores = runtime.itm_scores(manifest.path(golden.image.file), golden.texts)
    np.testing.assert_allclose(scores, read(manifest, tensors["itm_probability"]), atol=SAME_GRAPH_ABS)


def test_verify_passes_on_the_export_and_catches_a_changed_step(tiny_export, tmp_path):
    assert all(row.passed for row in verify(BridgeTowerRuntime.load(tiny_export)))
    result = CliRunner().invoke(app, ["verify", str(tiny_export)])
    assert result.exit_code == 0, result.output
    copy = shutil.copytree(tiny_export, tmp_path / "copy")
    path = copy / "manifest.json"
    data = json.loads(path.read_text())
    data["preprocessing"]["resize"]["resample"] = "bilinear"  # a port that resizes differently
    path.write_text(json.dumps(data))
    rows = {row.name: row for row in verify(BridgeTowerRuntime.load(copy))}
    assert rows["decoded_rgb"].passed and not rows["resized_rgb"].passed and not rows["pixel_values"].passed
    assert CliRunner().invoke(app, ["verify", str(copy)]).exit_code == 1


def test_export_without_validation_has_no_goldens_and_verify_says_so(tmp_path):
    pytest.importorskip("torch")
    from bt_export.export import export_checkpoint

    export_checkpoint("tiny", tmp_path / "t", validate=False)
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "t")])
    assert result.exit_code == 2 and "has no golden vectors" in result.output
