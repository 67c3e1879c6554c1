"""Data safety of bt-export: --overwrite replaces only an earlier export, signals never leave partial directories
behind for long, the umask is respected, and bad output paths fail before any work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bt_export.cli import app
from bt_export.errors import OutputDirError
from bt_export.export import export_checkpoint
from bt_export.staging import check_output_dir, remove_stale_partials, staged_directory


def test_overwrite_refuses_a_directory_that_is_not_an_export(tmp_path):
    out = tmp_path / "d"
    (out / "sub").mkdir(parents=True)
    (out / "thesis.txt").write_text("three years of work")
    result = CliRunner().invoke(app, ["-c", "tiny", "-o", str(out), "--overwrite"])
    assert result.exit_code == 2
    assert "not a bt export" in result.output and "thesis.txt" in result.output
    assert (out / "thesis.txt").read_text() == "three years of work" and (out / "sub").is_dir()


def test_overwrite_refuses_a_parent_of_exports_and_an_export_with_foreign_files(tiny_export, tmp_path):
    parent = tmp_path / "exports"
    shutil.copytree(tiny_export, parent / "one")
    with pytest.raises(OutputDirError, match="not a bt export"):
        check_output_dir(parent, overwrite=True)
    (parent / "one" / "notes.md").write_text("mine")
    with pytest.raises(OutputDirError, match=r"entries its manifest does not list: \['notes.md'\]"):
        export_checkpoint("tiny", parent / "one", overwrite=True, validate=False)
    assert (parent / "one" / "notes.md").read_text() == "mine"


def test_overwrite_accepts_an_empty_directory(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    export_checkpoint("tiny", out, overwrite=True, validate=False)
    assert (out / "manifest.json").is_file()


def test_dot_output_is_resolved_before_any_work(tmp_path, monkeypatch):
    work = tmp_path / "here"
    work.mkdir()
    monkeypatch.chdir(work)
    result = CliRunner().invoke(app, ["-c", "tiny", "-o", ".", "--no-validate"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "here" / "manifest.json").is_file()


def test_output_below_a_file_fails_before_loading(tmp_path, monkeypatch):
    from bt_export import export as export_module

    monkeypatch.setattr(export_module, "load_checkpoint", lambda *a, **k: pytest.fail("loaded before checking"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="is not a directory"):
        export_checkpoint("tiny", tmp_path / "file" / "out")


def test_read_only_parent_fails_before_loading(tmp_path, mode_bits_access):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(OutputDirError, match="is not writable"):
            check_output_dir(parent / "out", overwrite=False)
    finally:
        parent.chmod(0o700)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o755), (0o077, 0o700), (0o002, 0o775)])
def test_finished_export_follows_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        with staged_directory(tmp_path / "out", overwrite=False) as staging:
            (staging / "manifest.json").write_text("{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "out").stat().st_mode & 0o777 == mode


def test_an_output_inside_an_export_is_refused(tmp_path):
    """Writing into an earlier export would leave an entry its manifest does not list (and its --overwrite would
    then refuse); the export itself is still a valid --output."""
    export = tmp_path / "exports" / "base"
    export.mkdir(parents=True)
    (export / "manifest.json").write_text(json.dumps({"schema_version": 9, "graphs": {}}))
    for inside in (export / "int8", export / "a" / "b"):
        with pytest.raises(OutputDirError, match=f"is inside the export {str(export)!r}"):
            check_output_dir(inside, overwrite=False)
        assert not (export / "a").exists()
    assert check_output_dir(export, overwrite=True) == export
    assert check_output_dir(tmp_path / "exports" / "other", overwrite=False) == tmp_path / "exports" / "other"
    (export / "manifest.json").write_text("{}")  # a manifest.json that is not an export's does not count
    assert check_output_dir(export / "int8", overwrite=False) == export / "int8"


def test_staging_never_sets_the_umask(tmp_path, monkeypatch):
    """Reading the umask through os.umask sets it for a moment, and a file another thread creates then gets the
    wrong mode; the mode is read from a probe directory instead, leaving nothing behind."""
    import bt_export.staging as staging_module

    monkeypatch.setattr(staging_module.os, "umask", lambda mask: pytest.fail(f"os.umask({mask:o}) called"))
    with staged_directory(tmp_path / "out", overwrite=False) as staging:
        (staging / "manifest.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _start_export(out: Path) -> subprocess.Popen:
    code = ("from bt_export.cli import app; import sys; sys.argv = ['bt-export', '-c', 'tiny', '-o', sys.argv[1]]; "
            "app()")
    return subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_for_partial(out: Path, process: subprocess.Popen, timeout: float = 120.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        partial = list(out.parent.glob(f".{out.name}.partial-*"))
        if partial and any(partial[0].iterdir()):  # staging has started writing
            return partial
        time.sleep(0.05)
    pytest.fail("the export never started staging")


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    out = tmp_path / "t"
    process = _start_export(out)
    _wait_for_partial(out, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
    assert list(tmp_path.iterdir()) == []  # neither the output nor a hidden partial directory


def test_partials_left_by_sigkill_are_removed_by_the_next_export(tmp_path):
    out = tmp_path / "t"
    process = _start_export(out)
    stale = _wait_for_partial(out, process)
    process.kill()
    process.wait(timeout=60)
    assert stale[0].exists() and not out.exists()
    foreign = tmp_path / f".{out.name}.partial-someone-elses"  # no owner file: not ours, never touched
    foreign.mkdir()
    assert remove_stale_partials(out.resolve()) == [stale[0].resolve()]
    export_checkpoint("tiny", out, validate=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([foreign.name, "t"])
