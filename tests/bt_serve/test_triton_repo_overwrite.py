"""`bt-run triton-repo REPO --overwrite` replaces only what bt-run wrote, judged by the content its marker records
(every entry, recursively, files with their sha256): a user file inside a model folder, an edited config.pbtxt, a
corrupt marker, a symlinked or unwritable REPO, a name too long → a one-line error naming the path, nothing
touched (issue 22)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from bt_runtime import BtRuntimeError
from bt_runtime.cli import app
from bt_serve.triton_repo import MARKER, validate, write

pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="module")
def written(tiny_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton-own") / "repo"
    write(tiny_export, out)
    return out


@pytest.fixture
def repo(written, tmp_path):
    return shutil.copytree(written, tmp_path / "repo", symlinks=True)


def _snapshot(root):
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def _refused(tiny_export, repo, match):
    before = _snapshot(repo)
    with pytest.raises(BtRuntimeError, match=match):
        write(tiny_export, repo, overwrite=True, max_batch=4)
    assert _snapshot(repo) == before  # nothing touched


def test_the_marker_records_every_entry_with_its_sha256(written):
    marker = json.loads((written / MARKER).read_text())
    assert marker["format"] == "bt-triton-repo/2"
    assert "vision_tower/1/vision_tower.onnx" in marker["files"] and "vision_tower/config.pbtxt" in marker["files"]
    assert {"vision_tower", "vision_tower/1", "itm/1"} <= set(marker["directories"])
    assert all(len(digest) == 64 for digest in marker["files"].values())


def test_overwrite_replaces_what_bt_run_wrote(tiny_export, repo):
    write(tiny_export, repo, overwrite=True, max_batch=4)
    assert validate(repo)["itm"].max_batch_size == 4
    assert not list(repo.parent.glob(f".{repo.name}.*"))  # no staging or old directory left beside it


def test_a_user_file_inside_a_model_folder_is_refused(tiny_export, repo):
    (repo / "vision_tower" / "2").mkdir()
    (repo / "vision_tower" / "2" / "model.onnx").write_bytes(b"the user's next version")
    _refused(tiny_export, repo, r"did not write: \['vision_tower/2/'")


def test_an_edited_config_is_refused(tiny_export, repo):
    config = repo / "text_tower" / "config.pbtxt"
    config.write_text(config.read_text().replace("count: 1", "count: 4"))
    _refused(tiny_export, repo, r"text_tower/config.pbtxt \(changed since bt-run wrote it")


def test_a_link_or_a_directory_where_a_file_was_written_is_refused(tiny_export, repo, tmp_path):
    graph = repo / "text_tower" / "1" / "text_tower.onnx"
    graph.unlink()
    graph.mkdir()
    (graph / "keep.txt").write_text("mine")
    (repo / "itm" / "1" / "notes").symlink_to(tmp_path)
    _refused(tiny_export, repo, r"itm/1/notes \(a symbolic link\)")
    _refused(tiny_export, repo, r"text_tower/1/text_tower.onnx/keep.txt")


@pytest.mark.parametrize("content, why", [("{not json", "is unreadable"), ("[]", "is a JSON list"),
                                          ('{"entries": ["itm"]}', "written before bt-run recorded content")])
def test_a_corrupt_or_old_marker_is_a_one_line_error(tiny_export, repo, content, why):
    (repo / MARKER).write_text(content)
    _refused(tiny_export, repo, f"{MARKER} .*{why}")
    result = CliRunner().invoke(app, ["triton-repo", str(tiny_export), str(repo), "--overwrite"])
    assert result.exit_code == 2 and "internal error" not in result.output and why in result.output


def test_a_symlinked_repo_is_refused(tiny_export, written, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(written)
    with pytest.raises(BtRuntimeError, match="is a symbolic link"):
        write(tiny_export, link, overwrite=True)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(BtRuntimeError, match="is a symbolic link"):
        write(tiny_export, dangling)
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()


def test_a_long_name_or_an_unwritable_parent_is_a_one_line_error(tiny_export, tmp_path, mode_bits_access):
    result = CliRunner().invoke(app, ["triton-repo", str(tiny_export), str(tmp_path / ("r" * 300))])
    assert result.exit_code == 2 and "the name is 300 bytes" in result.output
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = CliRunner().invoke(app, ["triton-repo", str(tiny_export), str(locked / "repo")])
    assert result.exit_code == 2 and "is not writable" in result.output
