import json

from typer.testing import CliRunner

from bt_runtime.cli import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_itm_fill_mask_embed_retrieve(tiny_export, photos_dir):
    photo = photos_dir / "coco_000000039769.png"
    result = invoke("itm", tiny_export, "--image", photo, "--text", "two cats", "--text", "a goal")
    assert result.exit_code == 0, result.output
    assert [r["text"] for r in json.loads(result.stdout)] == ["two cats", "a goal"]
    result = invoke("fill-mask", tiny_export, "--image", photo, "--text", "a <mask> on a couch", "--top-k", 2)
    assert result.exit_code == 0 and len(json.loads(result.stdout)["masks"][0]["candidates"]) == 2
    result = invoke("embed", tiny_export, "--image", photo, "--text", "two cats")
    payload = json.loads(result.stdout)
    assert len(payload["images"][0]) == 32 and len(payload["texts"][0]) == 32
    result = invoke("retrieve", tiny_export, "--query", "two cats", "--images", photos_dir, "--top-k", 2)
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 2


def test_bad_input_is_one_line_and_exit_2(tiny_export, tmp_path):
    result = invoke("itm", tiny_export, "--image", tmp_path / "missing.png", "--text", "x")
    assert result.exit_code == 2 and "no image file" in result.output and "Traceback" not in result.output
    result = invoke("itm", tmp_path, "--image", tmp_path / "missing.png", "--text", "x")
    assert result.exit_code == 2 and "manifest.json" in result.output


def test_cli_environment_settings(tiny_export, photos_dir, monkeypatch):
    command = ("itm", tiny_export, "--image", photos_dir / "coco_000000039769.png", "--text", "two cats")
    monkeypatch.setenv("BT_MAX_PIXELS", "100")
    result = invoke(*command)
    assert result.exit_code == 2 and "max_pixels" in result.output
    monkeypatch.setenv("BT_MAX_PIXELS", "lots")
    result = invoke(*command)
    assert result.exit_code == 2 and "BT_MAX_PIXELS='lots'" in result.output
    monkeypatch.delenv("BT_MAX_PIXELS")
    monkeypatch.setenv("BT_DEVICE", "tpu")
    result = invoke(*command)
    assert result.exit_code == 2 and "valid: cpu, cuda, cuda:N" in result.output
