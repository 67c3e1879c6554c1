import json
from pathlib import Path

import pytest
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


def test_index_then_retrieve_reads_only_the_index_and_the_shortlist(tiny_export, photos_dir, tmp_path):
    index = tmp_path / "gallery.npz"
    result = invoke("index", tiny_export, "--images", photos_dir, "-o", index)
    assert result.exit_code == 0, result.output
    streamed = invoke("retrieve", tiny_export, "--query", "two cats", "--images", photos_dir, "--top-k", 3,
                      "--rerank", 0)
    indexed = invoke("retrieve", tiny_export, "--query", "two cats", "--index", index, "--top-k", 3, "--rerank", 0)
    assert indexed.exit_code == 0, indexed.output
    assert [h["image"] for h in json.loads(indexed.stdout)] == [h["image"] for h in json.loads(streamed.stdout)]
    reranked = invoke("retrieve", tiny_export, "--query", "two cats", "--index", index, "--top-k", 2)
    assert reranked.exit_code == 0 and all(h["itm"] is not None for h in json.loads(reranked.stdout))
    again = invoke("index", tiny_export, "--images", photos_dir, "-o", index)
    assert again.exit_code == 2 and "--overwrite" in again.output
    import numpy as np

    with np.load(index) as data:  # absolute paths: found from any working directory
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in data["images"].tolist())
    assert invoke("index", tiny_export, "--images", photos_dir, "-o", index, "--overwrite").exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["gallery.npz"]  # no staged leftovers
    from bt_runtime import BridgeTowerRuntime
    from bt_runtime.errors import BtRuntimeError

    with BridgeTowerRuntime.load(tiny_export) as runtime:  # the same file from Python: retrieve(index=PATH)
        hits = runtime.retrieve("two cats", index=str(index), top_k=2)
        assert [h.image_id for h in hits] == [h["image"] for h in json.loads(reranked.stdout)]
        assert [h.score for h in hits] == pytest.approx([h["score"] for h in json.loads(reranked.stdout)])
        with pytest.raises(BtRuntimeError, match="give images or an index path, not both"):
            runtime.retrieve("two cats", [str(p) for p in photos_dir.iterdir()], index=index)
        (tmp_path / "junk.npz").write_bytes(b"not a zip")
        with pytest.raises(BtRuntimeError, match=r"^index .*junk.npz: not an index written by `bt-run index`"):
            runtime.retrieve("two cats", index=tmp_path / "junk.npz")


def test_index_refusals_name_the_file(tiny_export, photos_dir, tmp_path):
    import numpy as np

    both = invoke("retrieve", tiny_export, "--query", "q", "--images", photos_dir, "--index", tmp_path / "x.npz")
    assert both.exit_code == 2 and "either --images or --index" in both.output
    npz_ray = invoke("index", tiny_export, "--images", photos_dir, "-o", tmp_path / "x.npz", "--ray", "auto")
    assert npz_ray.exit_code == 2 and "give a directory as --output" in npz_ray.output
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("not an index")
    from bt_runtime import BridgeTowerRuntime

    calls = []
    patch = pytest.MonkeyPatch()  # a refused target is refused before any image is embedded
    patch.setattr(BridgeTowerRuntime, "embed_images", lambda *a, **k: calls.append(a))
    try:
        refused = invoke("index", tiny_export, "--images", photos_dir, "-o", tmp_path / "x")
        assert refused.exit_code == 2 and "not an index job directory" in refused.output
    finally:
        patch.undo()
    assert calls == []
    (tmp_path / "dir.npz").mkdir()
    result = invoke("index", tiny_export, "--images", photos_dir, "-o", tmp_path / "dir.npz", "--overwrite")
    assert result.exit_code == 2 and "is not a file" in result.output
    missing = invoke("retrieve", tiny_export, "--query", "q", "--index", tmp_path / "none.npz")
    assert missing.exit_code == 2 and "none.npz: No such file or directory" in missing.output
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    junk = invoke("retrieve", tiny_export, "--query", "q", "--index", tmp_path / "junk.npz")
    assert junk.exit_code == 2 and "not an index" in junk.output and "Traceback" not in junk.output
    index = tmp_path / "gallery.npz"
    assert invoke("index", tiny_export, "--images", photos_dir, "-o", index).exit_code == 0
    with np.load(index) as data:
        fields = dict(data)
    np.savez(tmp_path / "other.npz", **{**fields, "vision_sha256": np.array("0" * 64)})
    other = invoke("retrieve", tiny_export, "--query", "q", "--index", tmp_path / "other.npz")
    assert other.exit_code == 2 and "another vision tower" in other.output


def test_a_gallery_is_checked_with_the_runtimes_limits_before_any_image_is_embedded(tiny_export, photos_dir,
                                                                                   tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from bt_runtime import BridgeTowerRuntime

    gallery = tmp_path / "gallery"
    gallery.mkdir()
    Image.open(photos_dir / "coco_000000039769.png").resize((200, 150)).save(gallery / "a_good.png")
    Image.fromarray(np.full((20, 30), 40_000, np.uint16)).save(gallery / "deep.png")  # 16-bit: refused at decode
    Image.new("RGB", (400, 300)).save(gallery / "large.png")  # above BT_MAX_PIXELS below
    (gallery / "cut.png").write_bytes((gallery / "a_good.png").read_bytes()[:200])
    monkeypatch.setenv("BT_MAX_PIXELS", "100000")
    calls = []
    monkeypatch.setattr(BridgeTowerRuntime, "encode_images", lambda *a, **k: calls.append(a))
    for command in (["retrieve", tiny_export, "--query", "q", "--images", gallery],
                    ["index", tiny_export, "--images", gallery, "-o", tmp_path / "g.npz"]):
        result = invoke(*command)
        assert result.exit_code == 2 and "3 file(s) cannot be read" in result.output, result.output
        assert all(f"{name}.png: {why}" in result.output for name, why in [
            ("deep", "image mode 'I;16'"), ("large", "400×300 = 120,000 pixels is above"),
            ("cut", "not a decodable image")])
    assert calls == [] and not (tmp_path / "g.npz").exists()
    for option in ("--images", "--index"):
        long = invoke("retrieve", tiny_export, "--query", "q", option, "a" * 300)
        assert long.exit_code == 2 and "File name too long" in long.output and "Traceback" not in long.output
