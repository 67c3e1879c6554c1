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
from bt_runtime.errors import ManifestError
from bt_runtime.golden import STEPS, read, verify
from bt_runtime.integrity import sha256_file
from tests.conftest import edit_manifest


def test_every_step_is_shipped_little_endian_with_its_tolerance(tiny_export):
    manifest = read_manifest(tiny_export)
    golden = manifest.golden
    names = {t.name for t in golden.tensors}
    assert {"decoded_rgb", "resized_rgb", "cropped", "pixel_values", "input_ids", "attention_mask", "image_bridge",
            "image_embeds", "text_bridge", "text_embeds", "image_index", "pooler_output", "itm_logits", "cross_embeds",
            "itm_probability", "mlm_logits_at_mask", "fill_mask_top5"} == names
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
    np.testing.assert_array_equal(read(manifest, tensors["image_index"]), np.zeros(2, np.int64))
    # mlm_logits at the <mask> positions: what fill_mask ranks (its top 5 are the shipped top 5)
    at_mask = read(manifest, tensors["mlm_logits_at_mask"])  # (M, V)
    assert at_mask.shape == (1, manifest.tokenizer.vocab_size) and tensors["mlm_logits_at_mask"].tolerance == 1e-3
    np.testing.assert_array_equal(np.argsort(-at_mask, axis=-1, kind="stable")[:, :5],
                                  read(manifest, tensors["fill_mask_top5"]))


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


def test_the_golden_input_suite_covers_each_mode_with_every_step(tiny_export):
    from PIL import Image

    manifest = read_manifest(tiny_export)
    suite = {item.name: item for item in manifest.golden.inputs}
    opened = {name: Image.open(manifest.path(item.image.file)) for name, item in suite.items()}
    assert {name: (im.format, im.mode) for name, im in opened.items()} == {
        "rgba": ("PNG", "RGBA"), "la": ("PNG", "LA"), "p_transparency": ("PNG", "P"), "l": ("PNG", "L"),
        "cmyk": ("JPEG", "CMYK"), "jpeg_exif_rotated": ("JPEG", "RGB"), "jpeg": ("JPEG", "RGB")}
    assert opened["p_transparency"].info["transparency"] is not None
    assert opened["jpeg_exif_rotated"].getexif()[0x0112] == 6
    assert len({im.size for im in opened.values()}) == len(opened)  # different sizes: different resize paths
    for item in suite.values():
        assert item.image.sha256 == sha256_file(manifest.path(item.image.file))
        steps = {t.name: t for t in item.tensors}
        assert tuple(steps) == STEPS
        assert all(steps[n].tolerance == 0.0 and steps[n].dtype == "uint8" for n in STEPS[:3])
        assert steps["pixel_values"].shape == [3, 96, 96] and steps["pixel_values"].tolerance == 1e-6
        decoded = read(manifest, steps["decoded_rgb"])
        assert decoded.shape == opened[item.name].size[::-1] + (3,)  # EXIF not applied: exif_transpose is false
    # small: every suite file together (encoded images and goldens) stays under 2 MB on tiny
    files = [item.image.file for item in suite.values()] + [t.file for i in suite.values() for t in i.tensors]
    assert sum(manifest.path(f).stat().st_size for f in files) < 2_000_000


def test_the_broadcast_names_every_graph_it_applies_to(tiny_export):
    broadcast = read_manifest(tiny_export).wiring.broadcast
    assert broadcast.graphs == ["cross_modal", "cross_modal_pooled"] and broadcast.index_input == "image_index"


@pytest.mark.parametrize("edit, failing", [
    # a port that drops alpha instead of compositing it on white: every transparent input's decode differs
    (lambda d: d["preprocessing"].update(alpha="drop_alpha"),
     {"input:rgba:decoded_rgb", "input:la:decoded_rgb", "input:p_transparency:decoded_rgb"}),
    # a port that applies EXIF orientation where the reference does not: the rotated JPEG's shape differs
    (lambda d: d["preprocessing"].update(exif_transpose=True), {"input:jpeg_exif_rotated:decoded_rgb"}),
])
@pytest.mark.filterwarnings("ignore:Palette images with Transparency:UserWarning")  # Pillow, on drop_alpha's P image
def test_verify_catches_a_changed_rule_on_the_suite(export_copy, edit, failing):
    edit_manifest(export_copy, edit)
    rows = {row.name: row for row in verify(BridgeTowerRuntime.load(export_copy))}
    assert {name for name, row in rows.items() if not row.passed and name.endswith("decoded_rgb")} == failing
    assert rows["decoded_rgb"].passed and rows["itm_logits"].passed  # the main RGB PNG does not see either rule
    result = CliRunner().invoke(app, ["verify", str(export_copy)])
    assert result.exit_code == 1 and "input:" in result.output


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["golden"].update(tensors=[]), r"golden\.tensors: empty"),
    (lambda d: d["golden"]["inputs"][0].update(tensors=[]), r"golden\.inputs\[0\]\.tensors: empty"),
    (lambda d: d["golden"]["inputs"][1]["tensors"][0].update(name="sharpened"), r"not a preprocessing step"),
    (lambda d: d["golden"]["tensors"][2].update(tolerance=-1.0), r"tolerance -1\.0; expected a finite number"),
    (lambda d: d["golden"]["tensors"][3].update(shape=[3, 96, 95]), r"golden\.pixel_values\.bin holds 110592 bytes"),
    (lambda d: d["golden"]["tensors"].append(d["golden"]["tensors"][0]), r"name listed twice"),
])
def test_verify_refuses_empty_or_malformed_goldens_in_one_line(export_copy, edit, message):
    edit_manifest(export_copy, edit)
    with pytest.raises(ManifestError, match=message):
        verify(BridgeTowerRuntime.load(export_copy))
    result = CliRunner().invoke(app, ["verify", str(export_copy)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
