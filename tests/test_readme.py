"""The README's quickstart runs as written: the shell block (pip lines resolved with `--dry-run` against this repo,
so the test environment is left as it is; every other line run in a fresh directory against this checkout) and the
Python block after it, in the directory the shell block exported to. The first set-up command at the top of the
README must be the quickstart's commands joined by `&&`, so it is covered by the same run."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
QUICKSTART_LINE_LIMIT = 60  # the quickstart must start on the README's first screen (issue 24)
README_LINE_LIMIT = 200
PYTHON_LINE_LIMIT = 8


def marked_block(text: str, marker: str) -> tuple[int, list[str]]:
    """(first line number, lines) of the fenced block right after `<!-- quickstart:MARKER ... -->`."""
    match = re.search(rf"<!-- quickstart:{marker}\b[^>]*-->\n```\w+\n(.*?)\n```", text, re.S)
    if match is None:
        raise AssertionError(f"README.md has no fenced block after a `<!-- quickstart:{marker} -->` marker")
    return text[:match.start(1)].count("\n") + 1, match.group(1).splitlines()


def commands(lines: list[str]) -> list[str]:
    """Shell commands of a block: comments stripped, `&&` chains split, in order."""
    out = []
    for line in lines:
        current: list[str] = []
        for token in shlex.split(line, comments=True) + ["&&"]:
            if token == "&&":
                if current:
                    out.append(shlex.join(current))
                current = []
            else:
                current.append(token)
    return out


def shell_env() -> dict:
    """This checkout first on the path, so `bt-export` / `bt-run` run the code under test."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    return env


def test_readme_fits_its_limits():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_LINE_LIMIT
    shell_start, _ = marked_block(text, "shell")
    assert shell_start <= QUICKSTART_LINE_LIMIT, f"the shell quickstart starts at line {shell_start}"
    _, python_lines = marked_block(text, "python")
    assert len(python_lines) <= PYTHON_LINE_LIMIT


def test_setup_command_is_the_quickstart():
    """The README's first line of code (install + export + score on a fresh machine) is the quickstart chained."""
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"```bash\n(.*?)\n```", text, re.S).group(1).splitlines()
    _, quickstart = marked_block(text, "shell")
    assert commands(first_block[:1]) == commands(quickstart)
    test_command = commands(first_block[1:2])
    assert test_command == ["bash scripts/dev_setup.sh", "python3 -m pytest tests"]
    assert (REPO / "scripts" / "dev_setup.sh").is_file()
    ci = commands((REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines())
    assert all(command in ci for command in test_command), "CI must run the README's test command"


@pytest.mark.slow
def test_quickstart_runs_as_written(tmp_path):
    pytest.importorskip("torch")
    text = README.read_text(encoding="utf-8")
    _, shell_lines = marked_block(text, "shell")
    env = shell_env()
    outputs = []
    for command in commands(shell_lines):
        argv = shlex.split(command)
        if argv[:2] == ["pip", "install"]:
            # Resolved, not installed: the requirement and extras must exist; this environment stays as it is.
            run = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-build-isolation", *argv[2:]]
            result = subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        else:
            result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                    timeout=600)
        assert result.returncode == 0, f"{command!r} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        assert "does not provide the extra" not in result.stderr, f"{command!r}: {result.stderr}"  # pip only warns
        outputs.append((argv[0], result.stdout))
    scores = json.loads(outputs[-1][1])  # bt-run itm prints one {"text", "score"} per --text
    assert [row["text"] for row in scores] == ["a cat on a couch", "a football player"]
    assert all(0.0 <= row["score"] <= 1.0 for row in scores)

    _, python_lines = marked_block(text, "python")
    result = subprocess.run([sys.executable, "-c", "\n".join(python_lines)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    probabilities, shape = result.stdout.strip().splitlines()
    python_scores = [float(value) for value in probabilities.strip("[]").split()]
    assert python_scores == pytest.approx([row["score"] for row in scores], abs=1e-6)
    assert re.fullmatch(r"\(2, \d+\)", shape)
