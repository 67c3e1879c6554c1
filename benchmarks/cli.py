"""`bt-bench`: a thin typer layer over benchmarks.bench.run_benchmark."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from .accuracy_run import Options
from .scenarios import SCENARIOS, Settings

ACCURACY = "accuracy"  # not among the defaults: it generates data and scores every pair of a gallery (minutes)
SCALE = ("index", "search")  # not among the defaults either: Ray jobs and 10^6-vector FAISS indexes (benchmarks.scale)

app = typer.Typer(add_completion=False, help="Latency/throughput of an export against eager PyTorch, same run.")
console = Console(stderr=True, width=130)
SCENARIO_NAMES = ", ".join(SCENARIOS)  # for --help, computed once


@app.command()
def bench(
    export_dir: Path = typer.Argument(..., help="Export directory written by bt-export."),
    scenario: list[str] = typer.Option(None, "--scenario", help=f"Repeatable; default all: {SCENARIO_NAMES}. "
                                       "`accuracy` (on its own): task accuracy on generated shapes scenes. "
                                       "`index` / `search` (without the others): benchmarks.scale."),
    vectors: str = typer.Option("100000,1000000", "--vectors", help="`search`: FAISS index sizes."),
    dim: int = typer.Option(None, "--dim", help="`search`: vector size (default: the export's embedding size)."),
    factory: list[str] = typer.Option(None, "--factory", help="`search`: FAISS factories measured besides the "
                                      "chosen one (repeatable)."),
    backend: list[str] = typer.Option(None, "--backend", help="Repeatable: torch, torch:bf16, "
                                      "onnxruntime:<precision>[:<provider>], tensorrt:<precision>. Default: torch "
                                      "(+ torch:bf16 on BF16 CPUs) + every variant of the export."),
    num_texts: int = typer.Option(16, "--num-texts", help="Texts in `rerank`."),
    gallery: int = typer.Option(None, "--gallery", help="Images in `retrieve` (default 8) and `accuracy` "
                                "(held-out samples, default 1000)."),
    seed: int = typer.Option(1234, "--seed", help="`accuracy`: seed of the generated held-out set."),
    queries: int = typer.Option(None, "--queries", help="`accuracy`: t→i and i→t queries, the first samples' "
                                "captions and images (default min(100, gallery))."),
    combos_gallery: int = typer.Option(None, "--combos-gallery",
                                       help="`accuracy`: samples of the held-out attribute combinations split "
                                            "(default gallery / 5; 0: skip it)."),
    top_k: int = typer.Option(5, "--top-k", help="Hits per query in `retrieve` (recall@top_k vs brute force)."),
    rerank: int = typer.Option(None, "--rerank", help="ITC shortlist k reranked by ITM in two-stage `retrieve` "
                               "(default 2 × top-k) and `accuracy` (default 20)."),
    brute_force_sample: int = typer.Option(16, "--brute-force-sample",
                                           help="Images eager brute force is timed on in `retrieve`, scaled to "
                                                "the gallery."),
    text_length: int = typer.Option(40, "--text-length", help="Tokens per text in pair/embed-texts."),
    batch_sizes: str = typer.Option("1,8,32", "--batch-sizes", help="Batch sizes for embed-*."),
    runs: int = typer.Option(3, "--runs"),
    warmup: int = typer.Option(1, "--warmup"),
    settle_ms: float = typer.Option(100, "--settle-ms", help="Pause before each timed call, so threads a backend "
                                    "left spinning stop before the next backend runs (0: none)."),
    threads: int = typer.Option(None, "--threads", help="torch and ONNX Runtime intra-op threads."),
    images: list[Path] = typer.Option(None, "--images", help="Image files/dirs (default: synthetic)."),
    json_path: Path = typer.Option(None, "--json"),
    markdown_path: Path = typer.Option(None, "--markdown"),
    plot_path: Path = typer.Option(None, "--plot", help="PNG (needs matplotlib: extra `bench`)."),
):
    """Benchmark EXPORT_DIR's scenarios against eager PyTorch; print a Markdown table."""
    import os

    from .bench import run_benchmark
    from .report import markdown, write

    if plot_path:  # before minutes of measuring, not after
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            console.print("[red]error:[/red] --plot needs matplotlib: pip install -e '.[bench]' (or drop --plot)")
            raise typer.Exit(2)
    chosen = list(scenario) if scenario else list(SCENARIOS)
    if set(chosen) & set(SCALE):
        return _scale(export_dir, chosen, gallery or 256, vectors, dim, list(factory or []), json_path,
                      markdown_path)
    if ACCURACY in chosen:
        if len(chosen) > 1:
            _refuse(f"--scenario accuracy runs on its own (its report is a different table), got {chosen}")
        if images or plot_path:
            _refuse("--scenario accuracy generates its own images and has no plot: drop --images / --plot")
        gallery = 1000 if gallery is None else gallery
        queries = min(100, gallery) if queries is None else queries
        combos_gallery = gallery // 5 if combos_gallery is None else combos_gallery
        rerank = min(20, gallery) if rerank is None else rerank
        for name, value, low in (("--gallery", gallery, 1), ("--queries", queries, 1), ("--rerank", rerank, 1),
                                 ("--seed", seed, 0), ("--combos-gallery", combos_gallery, 0)):
            if value < low:
                _refuse(f"{name} must be ≥ {low}, got {value}")
        if queries > gallery or rerank > gallery:
            _refuse(f"need --queries ≤ --gallery and --rerank ≤ --gallery, got {queries}, {rerank}, {gallery}")
    gallery = 8 if gallery is None else gallery
    if threads is not None and threads < 1:
        _refuse(f"--threads must be ≥ 1, got {threads}")
    for name, path in (("--json", json_path), ("--markdown", markdown_path), ("--plot", plot_path)):
        if path is not None and path.is_dir():  # before minutes of measuring, not after
            _refuse(f"{name} {path} is a directory; give a file path")
    try:
        sizes = tuple(int(b) for b in batch_sizes.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        _refuse(f"--batch-sizes {batch_sizes!r}: expected a comma list of positive integers, e.g. 1,8,32")
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
    for name, value in (("--gallery", gallery), ("--top-k", top_k), ("--brute-force-sample", brute_force_sample)):
        if value < 1:
            console.print(f"[red]error:[/red] {name} must be ≥ 1, got {value}")
            raise typer.Exit(2)
    if settle_ms < 0:
        console.print(f"[red]error:[/red] --settle-ms must be ≥ 0, got {settle_ms}")
        raise typer.Exit(2)
    if ACCURACY in chosen:
        return _accuracy(export_dir, backend, Options(gallery, seed, queries, rerank, combos_gallery, threads or 1),
                         json_path, markdown_path)
    if top_k > gallery or (rerank is not None and not top_k <= rerank <= gallery):
        console.print(f"[red]error:[/red] need --top-k ≤ --rerank ≤ --gallery, got {top_k}, {rerank}, {gallery}")
        raise typer.Exit(2)
    settings = Settings(text_length=text_length, num_texts=num_texts, gallery=gallery, runs=runs, warmup=warmup,
                        batch_sizes=sizes, top_k=top_k, rerank=rerank,
                        brute_force_sample=brute_force_sample, settle_s=settle_ms / 1000)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("bt-bench", total=len(chosen) + 1)

        def log(message: str) -> None:
            progress.console.print(f"[dim]{message}[/dim]")
            progress.update(task, description=message)
            if message.startswith("scenario") or message.startswith("measuring"):
                progress.advance(task)

        try:
            report = run_benchmark(export_dir, chosen, list(backend) if backend else None, settings, images, log)
        except ValueError as err:
            console.print(f"[red]error:[/red] {escape(str(err))}")
            raise typer.Exit(2) from None
    write(report, json_path, markdown_path, plot_path)
    print(markdown(report))
    if report["failing"]:
        console.print(f"[red]backends disagreeing with eager PyTorch:[/red] {', '.join(report['failing'])}")
        raise typer.Exit(1)


def _refuse(message: str):
    console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def _scale(export_dir: Path, chosen: list[str], images: int, vectors: str, dim: int | None, factories: list[str],
           json_path: Path | None, markdown_path: Path | None) -> None:
    import json

    from .scale import markdown, run_scale

    if not set(chosen) <= set(SCALE):
        _refuse(f"--scenario index/search run without the other scenarios, got {chosen}")
    try:
        sizes = [int(v) for v in vectors.split(",")]
    except ValueError:
        _refuse(f"--vectors {vectors!r}: expected comma-separated counts, e.g. 100000,1000000")
    report = run_scale(export_dir, chosen, images, sizes, dim, factories,
                       log=lambda message: console.print(f"[dim]{escape(message)}[/dim]"))
    if json_path:
        json_path.write_text(json.dumps(report, indent=1))
    text = markdown(report)
    if markdown_path:
        markdown_path.write_text(text)
    print(text)


def _accuracy(export_dir: Path, backend: list[str] | None, options: Options, json_path: Path | None,
              markdown_path: Path | None) -> None:
    from .accuracy_run import run_accuracy
    from .report import markdown, write

    def log(message: str) -> None:
        console.print(f"[dim]{escape(message)}[/dim]")

    try:
        report = run_accuracy(export_dir, list(backend) if backend else None, options, log)
    except ValueError as err:
        _refuse(str(err))
    write(report, json_path, markdown_path, None)
    print(markdown(report))
