"""`bt-run`: try an export in one line. A thin typer layer over BridgeTowerRuntime; prints JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from .errors import USER_FACING, BtRuntimeError

app = typer.Typer(add_completion=False, help="Run BridgeTower tasks on an export directory (no PyTorch).")
console = Console(stderr=True)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")

ExportDir = typer.Argument(..., help="Export directory written by bt-export.")
Precision = typer.Option("fp32", "--precision", help="Precision variant listed in the manifest.")
# Read from the environment so every command takes them without repeating options: BT_DEVICE=cuda runs on ONNX
# Runtime's CUDA provider (onnxruntime-gpu), BT_MAX_PIXELS changes the image size limit.
DEVICE_ENV, MAX_PIXELS_ENV = "BT_DEVICE", "BT_MAX_PIXELS"


def _load(export_dir: Path, precision: str):
    import os

    from .images import DEFAULT_MAX_PIXELS
    from .runtime import BridgeTowerRuntime

    limit = os.environ.get(MAX_PIXELS_ENV, str(DEFAULT_MAX_PIXELS))
    if not limit.isdigit():
        raise BtRuntimeError(f"{MAX_PIXELS_ENV}={limit!r}; expected a positive integer number of pixels")
    return BridgeTowerRuntime.load(export_dir, precision=precision, device=os.environ.get(DEVICE_ENV, "cpu"),
                                   max_pixels=int(limit))


def _emit(payload) -> None:
    print(json.dumps(payload, indent=2))


def _gallery(paths: list[Path], runtime) -> list[Path]:
    """Image files of --images, each checked before any model work with the runtime's own limits (pixels from the
    header, modes, formats, structure): one unusable file fails the command first, naming every bad file, instead
    of after the rest of the gallery went through the vision tower."""
    from .errors import ImageInputError
    from .images import check_image_file, image_files

    files, missing = image_files(paths, IMAGE_SUFFIXES)  # a FIFO named *.png is refused, never opened
    bad = [f"{str(path)[:200]} ({why})" for path, why in missing]
    preprocessor = runtime.preprocess  # the ImagePreprocessor: its limits are the ones embedding applies
    for file in files:
        try:
            check_image_file(file, str(file), preprocessor.max_pixels, preprocessor.formats)
        except ImageInputError as err:
            bad.append(str(err))
    if bad:
        raise BtRuntimeError(f"--images: {len(bad)} file(s) cannot be read: " + "; ".join(bad[:10]))
    if not files:
        raise BtRuntimeError(f"--images {[str(p) for p in paths]} hold no image ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _guard(task):
    """One line on stderr and exit 2 for bad input; an unexpected exception keeps its traceback, marked as a bug."""
    try:
        task()
    except typer.Exit:  # a task's own exit code (verify: 1 on a mismatch); typer.Exit is a RuntimeError
        raise
    except USER_FACING as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except Exception:
        console.print("[red]internal error[/red] (a bug in bt-run, not in your input: please report it with the "
                      "traceback below)")
        raise


@app.command()
def itm(export_dir: Path = ExportDir, image: Path = typer.Option(..., "--image"),
        text: list[str] = typer.Option(..., "--text", help="Repeat for several texts."), precision: str = Precision):
    """Match probability of IMAGE with each --text."""
    def task():
        scores = _load(export_dir, precision).itm_scores(image, text)
        _emit([{"text": t, "score": float(s)} for t, s in zip(text, scores, strict=True)])
    _guard(task)


@app.command("fill-mask")
def fill_mask(export_dir: Path = ExportDir, image: Path = typer.Option(..., "--image"),
              text: str = typer.Option(..., "--text", help="Text with <mask>."),
              top_k: int = typer.Option(5, "--top-k"),
              precision: str = Precision):
    """Fill each <mask> in --text given IMAGE."""
    def task():
        result = _load(export_dir, precision).fill_mask(image, text, top_k=top_k)
        _emit({"sentence": result.sentence,
               "masks": [{"position": m.position, "candidates": [{"token": t, "probability": p}
                                                                 for t, p in zip(m.tokens, m.probabilities,
                                                                                 strict=True)]}
                         for m in result.masks]})
    _guard(task)


@app.command()
def embed(export_dir: Path = ExportDir, image: list[Path] = typer.Option(None, "--image"),
          text: list[str] = typer.Option(None, "--text"), precision: str = Precision):
    """Contrastive embeddings of each --image and --text (contrastive checkpoints)."""
    def task():
        runtime = _load(export_dir, precision)
        payload = {}
        if image:
            payload["images"] = runtime.embed_images(list(image)).tolist()
        if text:
            payload["texts"] = runtime.embed_texts(list(text)).tolist()
        if not payload:
            raise BtRuntimeError("embed: give at least one --image or --text")
        _emit(payload)
    _guard(task)


@app.command()
def retrieve(export_dir: Path = ExportDir, query: str = typer.Option(..., "--query"),
             images: list[Path] = typer.Option(None, "--images", help="Image files or directories."),
             index: Path = typer.Option(None, "--index", help="Index from `bt-run index`: a directory (FAISS) "
                                        "or a .npz file (replaces --images)."),
             top_k: int = typer.Option(10, "--top-k"), rerank: int = typer.Option(50, "--rerank"),
             precision: str = Precision):
    """Rank --images (or the gallery of --index) for the text --query: ITC shortlist, ITM rerank; ITM only without
    ITC heads. With --index only the shortlisted images are read."""
    def task():
        import os

        from . import gallery_index

        if bool(images) == bool(index):
            raise BtRuntimeError("retrieve: give either --images or --index (a gallery indexed by `bt-run index`)")
        runtime = _load(export_dir, precision)
        if index and os.path.isdir(index):  # never raises (Path.is_dir does on a name too long)
            hits = runtime.retrieve(query, top_k=top_k, rerank=rerank, index=index)
            _emit([{"image": h.image_id, "score": h.score, "itc": h.itc_score, "itm": h.itm_score} for h in hits])
            return
        if index:
            embeddings, gallery = gallery_index.read(index, runtime)
            hits = runtime.retrieve(query, gallery, top_k=top_k, rerank=rerank, index=embeddings)
        else:
            gallery = _gallery(images, runtime)
            hits = runtime.retrieve(query, gallery, top_k=top_k, rerank=rerank, progress=True)
        _emit([{"image": str(gallery[h.index]), "score": h.score, "itc": h.itc_score, "itm": h.itm_score}
               for h in hits])
    _guard(task)


@app.command("index")
def index_gallery(export_dir: Path = ExportDir,
                  images: list[str] = typer.Option(None, "--images", help="Image directories, files or globs."),
                  list_file: str = typer.Option(None, "--list", help="A file with one image path per line."),
                  parquet: str = typer.Option(None, "--parquet", help="PATH:COLUMN of a Parquet file (image paths "
                                              "or encoded images)."),
                  output: Path = typer.Option(..., "--output", "-o", help="Index directory (or a single-file .npz "
                                              "index of --images, in-process)."),
                  ray: str = typer.Option(None, "--ray", help="Run on Ray Data: auto (RAY_ADDRESS, else a local "
                                          "Ray) or a cluster address (ray://HEAD:10001)."),
                  workers: int = typer.Option(1, "--workers", help="Embedding actors (with --ray)."),
                  cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="Ray CPUs (and ONNX Runtime "
                                                        "threads) per actor."),
                  batch_size: int = typer.Option(16, "--batch-size", help="Images per vision-tower run."),
                  shard_size: int = typer.Option(1024, "--shard-size", help="Images per Parquet shard."),
                  device: str = typer.Option(None, "--device", help="cpu or cuda (default: BT_DEVICE, else cpu)."),
                  memory_gib: float = typer.Option(16.0, "--index-memory-gib", help="Memory budget of the FAISS "
                                                   "index's codes."),
                  overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index."),
                  precision: str = Precision):
    """Embed every image once (contrastive checkpoints) into an index for `retrieve --index`: Parquet shards
    (resumed by a rerun of the same command) and a FAISS index over them (docs/scale.md)."""
    def task():
        import math
        import os

        if output.suffix == ".npz":
            return _index_npz(export_dir, images, output, overwrite, precision,
                              list_file or parquet or ray or device)
        from .index.inputs import from_arguments
        from .index.job import index_images
        from .index.ray_job import RayOptions
        from .index.shards import check_output_dir

        if device:
            os.environ[DEVICE_ENV] = device
        inputs = from_arguments(images, list_file, parquet)
        check_output_dir(output)  # before the model loads; index_images checks it again where it writes
        chosen = os.environ.get(DEVICE_ENV, "cpu")
        if ray is None and (workers != 1 or cpus_per_worker != 1.0):
            raise BtRuntimeError("--workers / --cpus-per-worker size the Ray actor pool; add --ray auto (or a "
                                 "cluster address), or drop them for the in-process job")
        if workers < 1 or not cpus_per_worker > 0 or not math.isfinite(cpus_per_worker):
            raise BtRuntimeError(f"--workers {workers} / --cpus-per-worker {cpus_per_worker}: expected ≥ 1 and > 0")
        budget = memory_gib * 2**30  # a finite but huge number of GiB overflows to inf here
        if not (math.isfinite(budget) and budget >= 1):  # inf/nan would fail int() below
            raise BtRuntimeError(f"--index-memory-gib {memory_gib}: expected a finite size above 0 (GiB)")
        options = None if ray is None else RayOptions(
            ray, workers, cpus_per_worker, 1.0 if chosen.startswith("cuda") else 0.0)
        runtime = _load(export_dir, precision)
        _emit(index_images(runtime, export_dir, inputs, output, batch_size=batch_size, shard_size=shard_size,
                           device=chosen, ray=options, memory_bytes=int(budget), overwrite=overwrite,
                           log=lambda m: console.print(f"[dim]{escape(m)}[/dim]")))
    _guard(task)


def _index_npz(export_dir: Path, images: list[str] | None, output: Path, overwrite: bool, precision: str,
               other) -> None:
    """The single-file .npz index (in-process, --images only), kept for galleries that fit one process."""
    from . import gallery_index

    if other or not images:
        raise BtRuntimeError(f"--output {output}: a .npz index takes --images only, in-process; for --list, "
                             "--parquet, --ray or --device give a directory as --output")
    gallery_index.check_output(output, overwrite)
    runtime = _load(export_dir, precision)
    gallery = _gallery([Path(p) for p in images], runtime)
    gallery_index.write(output, runtime, gallery, runtime.embed_images(gallery, progress=True), overwrite)
    console.print(f"indexed {len(gallery)} images into {output}")


@app.command()
def verify(export_dir: Path = ExportDir, precision: str = Precision):
    """Recompute the export's golden vectors (every preprocessing step, graph output and task output, and each
    golden input suite image's preprocessing steps) and compare; exit 1 on any mismatch. The goldens are fp32
    outputs with fp32 tolerances: use it on the fp32 variant (reduced precisions are judged by bt-export's task
    parity). Every file is hashed, whatever the verified-digest cache
    holds."""
    def task():
        from . import integrity
        from .golden import verify as verify_golden

        with integrity.disabled(), _load(export_dir, precision) as runtime:
            rows = verify_golden(runtime)
        _emit([{"tensor": r.name, "max_abs_diff": r.max_abs_diff, "tolerance": r.tolerance, "passed": r.passed}
               for r in rows])
        failed = [r.name for r in rows if not r.passed]
        if failed:
            console.print(f"[red]mismatch:[/red] {', '.join(failed)} differ from the golden vectors beyond tolerance")
            raise typer.Exit(1)
        console.print(f"all {len(rows)} golden tensors match")
    _guard(task)


@app.command("triton-repo")
def triton_repo(export_dir: Path = ExportDir, output: Path = typer.Argument(..., help="Model repository to write."),
                precision: str = Precision,
                max_batch: int = typer.Option(16, "--max-batch", help="max_batch_size of every model."),
                queue_delay_us: int = typer.Option(2000, "--queue-delay-us", help="Dynamic batcher queue delay."),
                instances: int = typer.Option(1, "--instances", help="instance_group count per graph model."),
                gpu: bool = typer.Option(False, "--gpu", help="KIND_GPU instances (default KIND_CPU)."),
                overwrite: bool = typer.Option(False, "--overwrite", help="Replace a repository bt-run wrote.")):
    """Write a Triton model repository (ONNX Runtime backend per graph + an `itm` ensemble), every config.pbtxt
    validated with tritonclient's model-config protobuf."""
    def task():
        from bt_serve.triton_repo import write  # serving code (needs onnx), shipped in the same distribution

        models = write(export_dir, output, precision, max_batch, queue_delay_us, instances,
                       "KIND_GPU" if gpu else "KIND_CPU", overwrite)
        _emit({"repository": str(output), "models": models})
    _guard(task)


@app.command("build-engines")
def build_engines(export_dir: Path = ExportDir,
                  precision: str = typer.Option("fp16", "--precision", help="fp16, bf16 or fp32."),
                  batch: str = typer.Option("1,8,32", "--batch", help="Profile min,opt,max batch."),
                  seq: str = typer.Option("8,40,512", "--seq", help="Profile min,opt,max text length (capped)."),
                  workspace_gib: float = typer.Option(None, "--workspace-gib", help="Builder workspace limit."),
                  timing_cache: Path = typer.Option(None, "--timing-cache", help="Timing cache reused across builds.")):
    """Build TensorRT engines for EXPORT_DIR on this machine's GPU (needs tensorrt, never torch); the manifest's
    `tensorrt` section records them."""
    def task():
        from .backends.trt_build import build_engines as build
        from .backends.trt_profiles import parse_triple

        ranges = parse_triple(batch, "--batch"), parse_triple(seq, "--seq")
        section = build(export_dir, precision, *ranges, workspace_gib, timing_cache,
                        log=lambda m: console.print(f"[dim]{escape(m)}[/dim]"))
        _emit({"tensorrt": section.version, "gpu": section.gpu, "precision": precision,
               "engines": sorted(section.engines)})
    _guard(task)
