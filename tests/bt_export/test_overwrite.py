"""--overwrite never deletes what bt-export did not write (issue 22), judged by the sha256 values the manifest
records, not by names; symbolic-link and over-long outputs are refused before any work."""

from __future__ import annotations

import os
import shutil

import pytest
from typer.testing import CliRunner

from bt_export.cli import app
from bt_export.errors import OutputDirError
from bt_export.staging import check_output_dir


@pytest.fixture
def export(tiny_export, tmp_path):
    """A private copy of an earlier export (the session's shared one)."""
    out = tmp_path / "tiny"
    shutil.copytree(tiny_export, out)
    return out


def snapshot(directory):
    """Every entry below `directory`: links by target, directories by name, files by content."""
    def state(p):
        if p.is_symlink():
            return "-> " + os.readlink(p)
        return "dir" if p.is_dir() else p.read_bytes()

    return sorted((str(p.relative_to(directory)), state(p)) for p in directory.rglob("*"))


def refused(out, says: str):
    before = snapshot(out.parent)
    with pytest.raises(OutputDirError, match=says):
        check_output_dir(out, overwrite=True)
    assert snapshot(out.parent) == before  # touched nothing


def test_an_earlier_export_with_the_tools_caches_is_replaced(export):
    (export / "ort_tensorrt_cache").mkdir()
    engine = "TensorrtExecutionProvider_TRTKernel_graph_main_123_0_0_sm90.engine"
    (export / "ort_tensorrt_cache" / engine).write_bytes(b"e")
    (export / "ort_tensorrt_cache" / "TensorrtExecutionProvider_cache_sm90.timing").write_bytes(b"t")
    (export / "tensorrt.timing_cache").write_bytes(b"t")
    assert check_output_dir(export, overwrite=True) == export


def test_user_files_inside_the_ort_tensorrt_cache_are_refused(export):
    (export / "ort_tensorrt_cache" / "mine").mkdir(parents=True)
    (export / "ort_tensorrt_cache" / "notes.txt").write_text("mine")
    refused(export, r"ort_tensorrt_cache/mine \(a directory\).*ort_tensorrt_cache/notes.txt")


def test_a_directory_where_a_listed_file_was_is_refused(export):
    (export / "tokenizer_config.json").unlink()  # golden.image.png in the issue: any listed file
    (export / "tokenizer_config.json").mkdir()
    (export / "tokenizer_config.json" / "holiday.jpg").write_bytes(b"mine")
    refused(export, r"tokenizer_config.json \(a directory where the manifest lists a file\)")


def test_a_listed_file_with_other_content_is_refused(export):
    (export / "tokenizer_config.json").write_text('{"edited": "by hand"}')
    refused(export, r"tokenizer_config.json \(changed since bt-export wrote it")


def test_a_symlink_where_a_listed_file_was_is_refused(export, tmp_path):
    (tmp_path / "elsewhere.json").write_bytes((export / "tokenizer.json").read_bytes())  # same content, not ours
    (export / "tokenizer.json").unlink()
    (export / "tokenizer.json").symlink_to(tmp_path / "elsewhere.json")
    refused(export, r"tokenizer.json \(a symbolic link where the manifest lists a file\)")


@pytest.mark.parametrize("target", ["export", "dangling"])
def test_a_symlinked_output_is_refused_before_any_work(export, tmp_path, target, monkeypatch):
    from bt_export import export as export_module

    monkeypatch.setattr(export_module, "load_checkpoint", lambda *a, **k: pytest.fail("loaded before checking"))
    link = tmp_path / "link"
    link.symlink_to(export if target == "export" else tmp_path / "nowhere")
    before = snapshot(tmp_path)
    result = CliRunner().invoke(app, ["-c", "tiny", "-o", str(link), "--overwrite", "--no-validate"])
    assert result.exit_code == 2, result.output
    assert "is a symbolic link" in result.output and "Traceback" not in result.output
    assert link.is_symlink() and snapshot(tmp_path) == before
    assert not list(tmp_path.glob(".link.*"))


def test_a_300_character_output_name_is_one_line_up_front(tmp_path):
    result = CliRunner().invoke(app, ["-c", "tiny", "-o", str(tmp_path / ("x" * 300)), "--no-validate"])
    assert result.exit_code == 2, result.output
    assert "is 300 bytes; at most" in " ".join(result.output.split()) and "Traceback" not in result.output
    assert os.listdir(tmp_path) == []
