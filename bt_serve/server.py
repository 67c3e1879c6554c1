"""Bind an export's task models into NVIDIA Triton Inference Server through PyTriton (its bundled tritonserver:
HTTP, gRPC, metrics, health endpoints, dynamic batcher), behind bt_serve/gate.py's request-size gate on the public
HTTP and gRPC ports. PyTriton is imported only here.

Model contract (docs/serving.md; tests/bt_serve pin it):
  itm          image BYTES [1] + text BYTES [1] (batch axis first, dynamic batching) → probability FP32 [1],
               error BYTES [1]
  rerank       image BYTES [1] + texts BYTES [-1], one request = one image against its texts (no batch axis)
               → probabilities FP32 [-1]
  embed_image  image BYTES [1] (dynamic batching) → embedding FP32 [E], error BYTES [1]       (ITC exports)
  embed_text   text BYTES [1] (dynamic batching) → embedding FP32 [E], error BYTES [1]        (ITC exports)
  fill_mask    image BYTES [1] + text BYTES [1] (no batch axis) → sentence BYTES [1], tokens BYTES [-1, -1],
               token_ids INT64 [-1, -1], probabilities FP32 [-1, -1]                          (MLM exports)
  retrieve     text BYTES [1] (no batch axis; parameters top_k, rerank) → image_ids BYTES [-1], scores FP32 [-1]
               (with --index DIR: an index from `bt-run index`, docs/scale.md)
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bt_runtime.errors import BtRuntimeError
from bt_runtime.images import DEFAULT_FORMATS, DEFAULT_MAX_PIXELS
from bt_runtime.text import DEFAULT_MAX_TEXT_CHARS

from .models import DEFAULT_MAX_IMAGE_BYTES, Limits, TaskModels


class PortInUseError(BtRuntimeError):
    """A port bt-serve was asked to listen on cannot be bound (taken, or the address is not this host's)."""


@dataclass
class ServeOptions:
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    address: str = "127.0.0.1"  # loopback unless asked: the models are unauthenticated (docs/limits.md)
    max_batch: int = 16
    queue_delay_us: int = 2000
    instances: int = 1
    threads: int = 0  # ONNX Runtime intra-op threads per session; 0: its default (all cores)
    # A server's requests overlap (models, instances): threads that block beat threads that spin there — 2 pairs at
    # once on 2 cores: 651 ms with "off", 748 with the library's "per-run" (docs/int8.md, "Threads and fusions")
    spinning: str = "off"
    precision: str = "fp32"
    device: str = "cpu"
    exit_timeout_s: int = 10
    log_file: str | None = None  # Triton's own log; None: its stdout
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS  # per text row, refused before decoding/tokenizing
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES  # per encoded image row, refused before Pillow sees it
    max_request_bytes: int | None = None  # per HTTP body / gRPC message, at the gate; None: max_image_bytes + 1 MiB
    max_pixels: int = DEFAULT_MAX_PIXELS  # per image, from its header before any pixel is decoded
    image_formats: tuple[str, ...] = DEFAULT_FORMATS  # Pillow formats an image may be decoded as
    index: str | None = None  # an index directory from `bt-run index`: serves the `retrieve` model


def check_ports_free(address: str, ports: dict[str, int]) -> None:
    """Bind each port once on `address` and let it go, so a taken port fails at once with its name instead of
    tritonserver's startup timeout two minutes later. SO_REUSEADDR: a port in TIME_WAIT is free; a listener is not."""
    for option, port in ports.items():
        try:
            family, kind, proto, _, where = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                                                               flags=socket.AI_PASSIVE)[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(where)
        except OSError as err:
            raise PortInUseError(f"{option} {port}: cannot listen on {address}:{port} ({err.strerror or err}); "
                                 "choose another port, or stop what listens there") from None


def model_specs(heads: tuple[str, ...], embedding_size: int | None) -> list[dict]:
    """The models bt-serve exposes for an export with `heads`: name, inputs, outputs, batched."""
    def t(name, dtype, shape):
        return {"name": name, "dtype": dtype, "shape": shape}

    specs = []
    if "itm" in heads:
        specs.append({"name": "itm", "batched": True,
                      "inputs": [t("image", bytes, (1,)), t("text", bytes, (1,))],
                      "outputs": [t("probability", np.float32, (1,)), t("error", bytes, (1,))]})
        specs.append({"name": "rerank", "batched": False,
                      "inputs": [t("image", bytes, (1,)), t("texts", bytes, (-1,))],
                      "outputs": [t("probabilities", np.float32, (-1,))]})
    if "itc" in heads:
        specs.append({"name": "embed_image", "batched": True, "inputs": [t("image", bytes, (1,))],
                      "outputs": [t("embedding", np.float32, (embedding_size,)), t("error", bytes, (1,))]})
        specs.append({"name": "embed_text", "batched": True, "inputs": [t("text", bytes, (1,))],
                      "outputs": [t("embedding", np.float32, (embedding_size,)), t("error", bytes, (1,))]})
    if "mlm" in heads:
        specs.append({"name": "fill_mask", "batched": False,
                      "inputs": [t("image", bytes, (1,)), t("text", bytes, (1,))],
                      "outputs": [t("sentence", bytes, (1,)), t("tokens", bytes, (-1, -1)),
                                  t("token_ids", np.int64, (-1, -1)), t("probabilities", np.float32, (-1, -1))]})
    return specs


def retrieve_spec() -> dict:
    """The `retrieve` model, served with --index."""
    return {"name": "retrieve", "batched": False,
            "inputs": [{"name": "text", "dtype": bytes, "shape": (1,)}],
            "outputs": [{"name": "image_ids", "dtype": bytes, "shape": (-1,)},
                        {"name": "scores", "dtype": np.float32, "shape": (-1,)}]}


def use_this_pythons_libpython() -> str | None:
    """PyTriton's Python backend stub links `libpython3.X.so.1.0` by its soname, so it finds the system's
    (Debian's 3.11.2 here) unless told otherwise; run from another build of the same minor version (pyenv's
    3.11.7 here), the stub loads that interpreter's standard library into the older libpython and fails
    (`'_thread.RLock' object has no attribute '_recursion_count'`). Put this interpreter's own shared libpython
    first on LD_LIBRARY_PATH (inherited by tritonserver and the stub). Returns a warning when it cannot."""
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not (sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname and (Path(libdir) / soname).exists()):
        return (f"this Python ({sys.executable}, {sys.version.split()[0]}) has no shared libpython: PyTriton's stub "
                "will load the system's libpython, which works only if it is the same build (e.g. run bt-serve "
                "from a venv made with /usr/bin/python3.X)")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
    os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])
    return None


def _tensors(specs: list[dict]):
    from pytriton.model_config import Tensor

    return [Tensor(name=s["name"], dtype=s["dtype"], shape=s["shape"]) for s in specs]


def _as_triton_error(infer):
    """Turn RequestError into PyTriton's bad-parameter error (a Triton error response carrying our message);
    anything else propagates as an internal error of that request batch, never a dead model."""
    from pytriton.exceptions import PyTritonBadParameterError

    from .models import RequestError

    def wrapped(requests):
        try:
            return infer(requests)
        except RequestError as err:
            raise PyTritonBadParameterError(str(err)) from None

    return wrapped


def serve(export_dir: str | Path, options: ServeOptions, ready=None) -> None:
    """Load the export, warm every graph, start Triton and block until SIGINT/SIGTERM (then stop cleanly:
    in-flight requests get up to `exit_timeout_s`). `ready(triton, specs)` is called once serving; when it returns
    True the server stops instead of blocking."""
    from bt_runtime import BridgeTowerRuntime

    check_ports_free(options.address, {"--http-port": options.http_port, "--grpc-port": options.grpc_port,
                                       "--metrics-port": options.metrics_port})
    warning = use_this_pythons_libpython()
    if warning:
        print(f"bt-serve: warning: {warning}", file=sys.stderr)
    runtime = BridgeTowerRuntime.load(export_dir, precision=options.precision, device=options.device,
                                      intra_op_threads=options.threads or None, spinning=options.spinning,
                                      max_pixels=options.max_pixels)
    runtime.preprocess = runtime.preprocess.limited(formats=options.image_formats)
    with runtime:
        specs = model_specs(runtime.heads, runtime.manifest.config.contrastive_hidden_size)
        if not specs:
            raise BtRuntimeError(f"{export_dir}: this export has no task head (itm, mlm or itc; it was exported from "
                                 "a head-less BridgeTowerModel), so there is nothing to serve")
        models = TaskModels(runtime, Limits(max_text_chars=options.max_text_chars,
                                            max_image_bytes=options.max_image_bytes))
        callables = {spec["name"]: getattr(models, spec["name"]) for spec in specs}
        if options.index:  # opened and checked against the export before Triton starts
            from .models import RetrieveModel

            callables["retrieve"] = RetrieveModel(runtime, options.index, models.limits)
            specs.append(retrieve_spec())
        warm(runtime)
        from pytriton.model_config import DynamicBatcher, ModelConfig
        from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

        from .gate import free_loopback_ports, open_gates

        # the public ports are the gate's (bound now, served once Triton is up); tritonserver's HTTP and gRPC
        # listen on loopback ports only the gate uses (gate.py says why)
        limit = request_limit(options)
        inner_http, inner_grpc = free_loopback_ports(2)
        try:
            gates = open_gates(options.address, options.http_port, options.grpc_port, inner_http, inner_grpc, limit)
        except OSError as err:
            raise PortInUseError(f"{err}; choose another port, or stop what listens there") from None
        config = TritonConfig(http_port=inner_http, grpc_port=inner_grpc,
                              metrics_port=options.metrics_port, http_address="127.0.0.1",
                              grpc_address="127.0.0.1", metrics_address=options.address,
                              exit_timeout_secs=options.exit_timeout_s,
                              log_verbose=0, log_file=Path(options.log_file) if options.log_file else None)

        def on_sigterm(signum, frame):
            raise KeyboardInterrupt  # the same path as Ctrl+C: leave serve(), Triton.__exit__ stops the server

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            # PyTriton protects these endpoints with a random token by default, statistics among them; statistics
            # stay open (monitoring reads batch sizes and queue times there), loading/unloading models does not.
            # tritonserver takes the token only on its command line (readable in /proc by local users): see
            # docs/limits.md ("bt-serve's network defaults") for what that exposes
            security = TritonSecurityConfig(restricted_endpoints=["shared-memory", "model-repository", "trace",
                                                                  "logging"])
            with Triton(config=config, security_config=security) as triton:
                for spec in specs:
                    # one callable object per instance: PyTriton binds each to its own proxy and handshake socket
                    infers = [_as_triton_error(callables[spec["name"]]) for _ in range(options.instances)]
                    batching = (ModelConfig(max_batch_size=options.max_batch, batcher=DynamicBatcher(
                        max_queue_delay_microseconds=options.queue_delay_us)) if spec["batched"] else
                        ModelConfig(batching=False))
                    triton.bind(model_name=spec["name"], infer_func=infers,
                                inputs=_tensors(spec["inputs"]), outputs=_tensors(spec["outputs"]),
                                config=batching, strict=True)
                triton.run()
                try:
                    for gate in gates:
                        gate.start()
                    if ready is not None and ready(triton, specs):
                        return  # the caller is done (bt-serve --smoke): stop instead of serving
                    triton.serve()
                finally:  # the gates first, so requests in flight finish while tritonserver still runs
                    for gate in gates:
                        gate.stop()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            for gate in gates:
                gate.stop()  # again where Triton never started (stopping twice is harmless)


def request_limit(options: ServeOptions) -> int:
    """The gate's limit on one request body: --max-request-bytes, else room for one image at its limit and texts."""
    return options.max_request_bytes or options.max_image_bytes + 2**20


def warm(runtime) -> None:
    """Create every session and run each graph once before the server reports ready (no slow first request)."""
    from PIL import Image

    image = Image.new("RGB", (runtime.manifest.config.image_size,) * 2, (128, 128, 128))
    if "itm" in runtime.heads:
        runtime.itm_scores(image, ["warm up"])
    else:
        runtime.encode_texts(["warm up"])
        runtime.encode_image(image)

