"""`bt-serve EXPORT_DIR`: serve an export's tasks on Triton (PyTriton). Imports PyTriton only when serving."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from bt_runtime.images import DEFAULT_FORMATS, DEFAULT_MAX_PIXELS
from bt_runtime.text import DEFAULT_MAX_TEXT_CHARS

from .models import DEFAULT_MAX_IMAGE_BYTES

app = typer.Typer(add_completion=False, help="Serve a bt-toolkit export on NVIDIA Triton (PyTriton): itm, rerank, "
                                             "embed_image/embed_text (ITC), fill_mask (MLM); dynamic batching.")


def _port(value: int, name: str) -> int:
    if not 0 < value < 65536:
        raise typer.BadParameter(f"{value}; valid: 1-65535", param_hint=name)
    return value


@app.command()
def main(export_dir: Path = typer.Argument(..., help="Export directory written by bt-export."),
         http_port: int = typer.Option(8000, "--http-port"),
         grpc_port: int = typer.Option(8001, "--grpc-port"),
         metrics_port: int = typer.Option(8002, "--metrics-port"),
         max_batch: int = typer.Option(16, "--max-batch", help="Largest batch the dynamic batcher forms."),
         queue_delay_us: int = typer.Option(2000, "--queue-delay-us",
                                            help="How long the batcher waits to fill a batch."),
         instances: int = typer.Option(1, "--instances", help="Model instances (share one set of sessions)."),
         threads: int = typer.Option(0, "--threads", help="ONNX Runtime intra-op threads (0: all cores)."),
         spinning: str = typer.Option("off", "--spinning",
                                      help="How ONNX Runtime's threads wait: off (block; best when runs overlap: "
                                           "several models or --instances > 1), per-run (spin while a graph runs: "
                                           "~3% faster with one model and one instance), on."),
         precision: str = typer.Option("fp32", "--precision", help="Precision variant listed in the manifest."),
         device: str = typer.Option("cpu", "--device", help="cpu, or cuda[:N] (onnxruntime-gpu)."),
         address: str = typer.Option("127.0.0.1", "--address",
                                     help="Address the HTTP, gRPC and metrics servers bind to; 0.0.0.0 for every "
                                          "interface (the models have no authentication)."),
         max_text_chars: int = typer.Option(DEFAULT_MAX_TEXT_CHARS, "--max-text-chars",
                                            help="Longest text (characters) a row may carry; longer ones are that "
                                                 "row's error, refused before tokenizing."),
         max_image_bytes: int = typer.Option(DEFAULT_MAX_IMAGE_BYTES, "--max-image-bytes",
                                             help="Largest encoded image (bytes) a row may carry."),
         max_request_bytes: int = typer.Option(0, "--max-request-bytes",
                                               help="Largest HTTP body / gRPC message, refused from its declared "
                                                    "size before it is read (0: --max-image-bytes + 1 MiB)."),
         max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels",
                                        help="Largest image (width × height, read from its header before "
                                             "decoding)."),
         image_formats: str = typer.Option(",".join(DEFAULT_FORMATS), "--image-formats",
                                           help="Comma-separated Pillow formats an image may be decoded as; "
                                                "others are refused before their decoder runs."),
         index: Path = typer.Option(None, "--index", help="An index directory from `bt-run index`: adds the "
                                                         "`retrieve` model (docs/scale.md)."),
         log_file: Path = typer.Option(None, "--log-file", help="Triton's log (default: stdout; --smoke: a "
                                                                 "temporary file)."),
         smoke: bool = typer.Option(False, "--smoke", help="Start, round-trip every model over HTTP and gRPC "
                                                           "against bt_runtime called directly, stop; exit 1 on "
                                                           "a mismatch.")):
    """Serve EXPORT_DIR until SIGINT/SIGTERM (Triton's /v2/health/ready says when it is up)."""
    for value, name in ((http_port, "--http-port"), (grpc_port, "--grpc-port"), (metrics_port, "--metrics-port")):
        _port(value, name)
    if len({http_port, grpc_port, metrics_port}) != 3:
        raise typer.BadParameter("the three ports must differ", param_hint="--http-port/--grpc-port/--metrics-port")
    for value, name, low in ((max_batch, "--max-batch", 1), (queue_delay_us, "--queue-delay-us", 0),
                             (instances, "--instances", 1), (threads, "--threads", 0),
                             (max_text_chars, "--max-text-chars", 1), (max_image_bytes, "--max-image-bytes", 1),
                             (max_request_bytes, "--max-request-bytes", 0),
                             (max_pixels, "--max-pixels", 1)):
        if value < low:
            raise typer.BadParameter(f"{value}; must be ≥ {low}", param_hint=name)
    from bt_runtime.backends.onnxruntime import SPINNING
    from bt_runtime.errors import USER_FACING, BtRuntimeError
    from bt_runtime.images import check_formats

    if spinning not in SPINNING:
        raise typer.BadParameter(f"{spinning!r}; valid: {list(SPINNING)}", param_hint="--spinning")

    try:
        formats = check_formats([f.strip() for f in image_formats.split(",") if f.strip()])
    except BtRuntimeError as err:
        raise typer.BadParameter(str(err), param_hint="--image-formats") from None
    import importlib.util

    if importlib.util.find_spec("pytriton") is None:
        typer.echo("bt-serve needs nvidia-pytriton (it pins numpy < 2, so give it its own environment):\n"
                   "  python3 -m venv .venv-serve && .venv-serve/bin/pip install -e '.[serve]'\n"
                   "  .venv-serve/bin/bt-serve EXPORT_DIR", err=True)
        raise typer.Exit(2)

    from .server import ServeOptions, check_ports_free, request_limit, serve

    try:  # before anything starts: a taken port is named now, not after tritonserver's startup timeout
        check_ports_free(address, {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port})
    except BtRuntimeError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None

    options = ServeOptions(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, address=address,
                           max_batch=max_batch, queue_delay_us=queue_delay_us, instances=instances,
                           threads=threads, spinning=spinning, precision=precision, device=device,
                           log_file=str(log_file) if log_file else None, max_text_chars=max_text_chars,
                           max_image_bytes=max_image_bytes, max_request_bytes=max_request_bytes or None,
                           max_pixels=max_pixels, image_formats=formats,
                           index=str(index) if index else None)
    if smoke and log_file is None:  # keep stdout for the JSON report
        import tempfile

        options.log_file = str(Path(tempfile.mkdtemp(prefix="bt-serve-")) / "tritonserver.log")
    outcome = {}

    def ready(triton, specs):
        host = "127.0.0.1" if address in ("0.0.0.0", "::") else address
        print(json.dumps({"serving": str(export_dir), "http": f"{host}:{http_port}", "grpc": f"{host}:{grpc_port}",
                          "metrics": f"{host}:{metrics_port}", "models": [s["name"] for s in specs]}), flush=True)
        if smoke:
            from .smoke import round_trip

            outcome.update(round_trip(export_dir, host, http_port, grpc_port, precision,
                                      max_request_bytes=request_limit(options)))
            print(json.dumps(outcome), flush=True)  # one line: tritonserver prints to stdout too
            return True  # stop instead of serving
        return False

    try:
        serve(export_dir, options, ready)
    except USER_FACING as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if smoke and not outcome.get("passed"):
        raise typer.Exit(1)


def run() -> None:
    app(prog_name="bt-serve")


if __name__ == "__main__":
    sys.exit(run())
