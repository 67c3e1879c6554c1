"""Every relative link in README.md, docs/*.md and benchmarks/results/README.md points to a file or folder of this
repository, and every `#anchor` to a heading of its target page, by GitHub's heading-slug rules. Links to the web
are not checked (the tests run offline)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), REPO / "benchmarks" / "results" / "README.md"])

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text (link targets, emphasis and code marks dropped), lowercased,
    every character that is not a letter, digit, space, '-' or '_' removed, each space turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) renders as text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags render as nothing
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)  # _emphasis_ marks, but not snake_case
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every anchor a page's headings make, with GitHub's -1, -2 … suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for match in HEADING.finditer(FENCE.sub("", markdown)):
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def links(markdown: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition outside code."""
    # Blank out code with same-length filler so that line numbers stay right.
    text = FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), markdown)
    text = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    found = [(m.start(), m.group(1)) for m in INLINE_LINK.finditer(text)]
    found += [(m.start(), m.group(1)) for m in REFERENCE_DEFINITION.finditer(text)]
    return [(text.count("\n", 0, start) + 1, target.strip("<>")) for start, target in sorted(found)]


def broken_links(page: Path, repo: Path = REPO) -> list[str]:
    """One line per link of `page` whose file or heading does not exist."""
    problems = []
    for line, target in links(page.read_text(encoding="utf-8")):
        if not target or SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part)
        where = f"{page.relative_to(repo)}:{line}: {target}"
        resolved = (repo / path_part.lstrip("/")) if path_part.startswith("/") else (page.parent / path_part)
        resolved = resolved.resolve() if path_part else page
        try:
            relative = resolved.relative_to(repo).as_posix()
        except ValueError:
            problems.append(f"{where}: points outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{where}: no such file {relative}")
            continue
        if anchor and resolved.suffix == ".md" and unquote(anchor) not in anchors(resolved.read_text(encoding="utf-8")):
            problems.append(f"{where}: {relative} has no heading with anchor #{anchor}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_and_anchors_resolve(page):
    assert page.is_file(), f"{page.relative_to(REPO)} is missing"
    assert broken_links(page) == []


@pytest.mark.parametrize("heading, slug", [
    ("Attention modes and precisions", "attention-modes-and-precisions"),
    ("GPU: ONNX Runtime's CUDA provider", "gpu-onnx-runtimes-cuda-provider"),
    ("Golden vectors (`golden`)", "golden-vectors-golden"),
    ("1. Decode to 8-bit RGB", "1-decode-to-8-bit-rgb"),
    ("`bt-run index` / `retrieve --index`", "bt-run-index--retrieve---index"),
    ("int8 on every CPU", "int8-on-every-cpu"),
    ("The manifest (schema 4) → [docs](docs/manifest.md)", "the-manifest-schema-4--docs"),
    ("snake_case and *emphasis*", "snake_case-and-emphasis"),
])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_broken_file_and_anchor_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Same\n\n## Same\n\n```\n## not a heading\n```\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md#same-1) [ok](#top) [ok](docs/) [web](https://example.com/x.md)\n"
        "# Top\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#same-2) `[in code](docs/c.md)`\n"
        "```\n[in a fence](docs/d.md)\n```\n"
        "[fenced heading](docs/a.md#not-a-heading)\n"
        "[ref]: ../outside.md\n")
    assert broken_links(page, tmp_path) == [
        "README.md:3: docs/b.md: no such file docs/b.md",
        "README.md:3: docs/a.md#same-2: docs/a.md has no heading with anchor #same-2",
        "README.md:7: docs/a.md#not-a-heading: docs/a.md has no heading with anchor #not-a-heading",
        "README.md:8: ../outside.md: points outside the repository",
    ]
