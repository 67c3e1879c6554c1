"""Contact sheet of `bt-run retrieve` on generated held-out shapes scenes: one row per query, its caption and the
top-5 images with their scores; a green frame marks a correct image (same canonical scene as the query), red a
wrong one.

    python3 scripts/contact_sheet.py EXPORT -o docs/images/shapes-retrieve.png [--seed 2026] [--gallery 200]

The gallery is written as PNG files to a temporary directory and ranked by the CLI, as a user would run it
(`bt-run index` once when the export has ITC heads, then `bt-run retrieve --index` per query; `--images` otherwise).
Queries: the captions of three gallery scenes of different forms (one group with a position, a count above one,
two groups with a relation), or --query (repeatable).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

THUMB, PAD, TEXT_W, TOP_K, RERANK = 128, 10, 300, 5, 20


def _bt_run() -> list[str]:
    found = shutil.which("bt-run")
    return [found] if found else [sys.executable, "-c", "from bt_runtime.cli import app; app()"]


def _run(args: list[str]) -> str:
    result = subprocess.run(_bt_run() + args, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bt-run {' '.join(args[:1])} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def default_queries(samples) -> list[int]:
    """Indices of three scenes of different forms: one group with a position, a count above one, a relation."""
    tests = [lambda s: s.scene.relation is None and s.scene.groups[0].count == 1,
             lambda s: s.scene.relation is None and s.scene.groups[0].count > 1,
             lambda s: s.scene.relation is not None]
    return [next(i for i, s in enumerate(samples) if test(s)) for test in tests]


def rank(export: Path, gallery_dir: Path, queries: list[str], use_index: bool, precision: str) -> list[list[dict]]:
    base = ["--precision", precision]
    if use_index:
        index = gallery_dir.parent / "gallery-index.npz"
        _run(["index", str(export), "--images", str(gallery_dir), "--output", str(index)] + base)
        source = ["--index", str(index)]
    else:
        source = ["--images", str(gallery_dir)]
    return [json.loads(_run(["retrieve", str(export), "--query", q, "--top-k", str(TOP_K), "--rerank", str(RERANK)]
                            + source + base)) for q in queries]


def draw(rows: list[tuple[str, int, list[tuple]]], title: list[str], path: Path) -> None:
    """rows: (caption, matching images in the gallery, [(PIL image, score, correct), …]) → one PNG."""
    from PIL import Image, ImageDraw, ImageFont

    def font(size):
        for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
            try:
                return ImageFont.truetype(name, size)
            except OSError:
                continue
        return ImageFont.load_default()

    small, big = font(14), font(16)
    row_h = THUMB + 2 * PAD + 22
    width = TEXT_W + TOP_K * (THUMB + PAD) + PAD
    top = 16 + 22 * len(title)
    sheet = Image.new("RGB", (width, top + row_h * len(rows)), "white")
    pen = ImageDraw.Draw(sheet)
    for n, line in enumerate(title):
        pen.text((PAD, 8 + 22 * n), line, fill="black", font=big)
    for r, (caption, matches, hits) in enumerate(rows):
        y = top + r * row_h
        words, lines = caption.split(), [""]
        for word in words:  # wrap the caption to the text column
            candidate = f"{lines[-1]} {word}".strip()
            if pen.textlength(candidate, font=big) > TEXT_W - 2 * PAD and lines[-1]:
                lines.append(word)
            else:
                lines[-1] = candidate
        pen.multiline_text((PAD, y + PAD + 20), f"“{chr(10).join(lines)}”", fill="black", font=big, spacing=4)
        pen.text((PAD, y + PAD + 30 + 22 * len(lines)), f"{matches} matching image{'s' * (matches != 1)} in the "
                 "gallery", fill=(90, 90, 90), font=small)
        for c, (image, score, correct) in enumerate(hits):
            x = TEXT_W + c * (THUMB + PAD)
            colour = (30, 150, 60) if correct else (200, 40, 40)
            pen.rectangle([x - 4, y + PAD - 4, x + THUMB + 3, y + PAD + THUMB + 3], fill=colour)
            sheet.paste(image.resize((THUMB, THUMB), Image.Resampling.BICUBIC), (x, y + PAD))
            pen.text((x, y + PAD + THUMB + 6), f"#{c + 1}  {score:.3f} {'✓' if correct else '✗'}", fill=colour,
                     font=small)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=2026, help="seed of the held-out gallery (default 2026)")
    parser.add_argument("--gallery", type=int, default=200)
    parser.add_argument("--query", action="append", help="query caption (repeatable; default: three scenes)")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args(argv)
    if args.gallery < TOP_K:
        parser.error(f"--gallery must be ≥ {TOP_K}, got {args.gallery}")
    if args.seed < 0:
        parser.error(f"--seed must be ≥ 0, got {args.seed}")
    if args.output.suffix.lower() != ".png":
        parser.error(f"--output must be a .png file, got {args.output}")

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bt_export.shapes.data import make_samples, parse_caption
    from bt_runtime import read_manifest

    manifest = read_manifest(args.export)
    samples = make_samples(args.seed, args.gallery, image_size=manifest.preprocessing.image_size, split="heldout")
    queries = args.query or [samples[i].caption for i in default_queries(samples)]
    wanted = [parse_caption(q).canonical() for q in queries]  # a query outside the grammar fails here, first
    with tempfile.TemporaryDirectory(prefix="contact-sheet-") as tmp:
        gallery_dir = Path(tmp) / "gallery"
        gallery_dir.mkdir()
        for i, sample in enumerate(samples):
            sample.image.save(gallery_dir / f"{i:04d}.png")
        results = rank(args.export, gallery_dir, queries, "itc" in manifest.heads, args.precision)
    rows = []
    for query, key, hits in zip(queries, wanted, results, strict=True):
        picked = [int(Path(hit["image"]).stem) for hit in hits]
        matches = sum(s.scene.canonical() == key for s in samples)
        rows.append((query, matches, [(samples[i].image, hit["score"], samples[i].scene.canonical() == key)
                                      for i, hit in zip(picked, hits, strict=True)]))
    title = [f"bt-run retrieve --top-k {TOP_K} --rerank {RERANK} ({args.precision}), {args.gallery} held-out scenes "
             f"(seed {args.seed}), export of {manifest.checkpoint.alias or args.export.name}",
             "score: ITM match probability; green frame: same scene as the query, red: another scene"]
    draw(rows, title, args.output)
    print(f"wrote {args.output}: {len(rows)} queries × top-{TOP_K}, "
          f"{sum(c for _, _, hits in rows for _, _, c in hits)} correct of {TOP_K * len(rows)}, top-1 correct "
          f"{sum(hits[0][2] for _, _, hits in rows)} of {len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
