"""The request-size gate: bt-serve's public HTTP and gRPC ports, passing every request through to tritonserver on
loopback ports only the gate uses, and refusing a body above `max_request_bytes` from its declared size, before it
is read.

Why: tritonserver (PyTriton 0.7's build) has no request-size option. A 64 MB body is received, copied into the
Python backend's shared memory and on into bt-serve's process before bt-serve's own limits can refuse it, and the
good requests the dynamic batcher merged with it wait for those copies (benchmarks/results/serve-hostile-tiny.md).
- gRPC: `grpc.max_receive_message_length` — gRPC refuses a message from its 5-byte length prefix with
  RESOURCE_EXHAUSTED ("Received message larger than max (N vs. M)"). Messages pass as bytes, never parsed.
- HTTP: Content-Length above the limit → 413 with Triton's error body ({"error": "..."}); a chunked body → 411;
  gzip/deflate bodies are inflated here, bounded, so a small body cannot inflate past the limit in tritonserver.
"""

from __future__ import annotations

import json
import socket
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STREAM_METHODS = frozenset({"/inference.GRPCInferenceService/ModelStreamInfer"})  # Triton's one streaming RPC
# not forwarded: hop-by-hop headers, the length (set again), and Expect (the gate answers 100-continue itself)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                        "upgrade", "content-length", "host", "expect"})
DRAIN_BYTES = 128 * 2**20  # an over-limit body up to this is read and dropped, so the client sees the 413
IDLE_TIMEOUT_S = 120  # an HTTP connection idle this long is closed (a thread per connection)
NO_DEADLINE_S = 10**9
INFLATE = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # Triton's request compressions


def free_loopback_ports(count: int) -> list[int]:
    """`count` distinct ports the kernel just gave out on 127.0.0.1, for tritonserver behind the gate (all held at
    once: two probes in turn may be given the same port)."""
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def free_loopback_port() -> int:
    return free_loopback_ports(1)[0]


def _deadline(context) -> float | None:
    """The client's time left, or None without a deadline (grpcio then reports ~9.2e18 s, which as a timeout
    overflows into an immediate DEADLINE_EXCEEDED)."""
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < NO_DEADLINE_S else None


def _forwardable(metadata) -> tuple:
    return tuple((key, value) for key, value in metadata or () if not key.startswith((":", "grpc-")))


class _GrpcForward:
    """A generic handler: every method forwarded as raw bytes over one channel to tritonserver."""

    def __init__(self, upstream: str):
        import grpc

        self._grpc = grpc
        self._channel = grpc.insecure_channel(upstream, options=[("grpc.max_send_message_length", -1),
                                                                  ("grpc.max_receive_message_length", -1)])

    def service(self, details):
        grpc = self._grpc
        method = details.method
        if method in STREAM_METHODS:
            call = self._channel.stream_stream(method)

            def stream(requests, context):
                responses = call(requests, metadata=_forwardable(context.invocation_metadata()),
                                 timeout=_deadline(context))
                context.add_callback(responses.cancel)
                try:
                    initial = _forwardable(responses.initial_metadata())  # before the first response, or never
                    if initial:
                        context.send_initial_metadata(initial)
                    yield from responses
                except grpc.RpcError as err:
                    self._abort(context, err)
                self._trailing(context, responses)

            return grpc.stream_stream_rpc_method_handler(stream)
        call = self._channel.unary_unary(method)

        def unary(request, context):
            try:
                response, done = call.with_call(request, metadata=_forwardable(context.invocation_metadata()),
                                                timeout=_deadline(context))
            except grpc.RpcError as err:
                self._abort(context, err)
            self._metadata(context, done)
            return response

        return grpc.unary_unary_rpc_method_handler(unary)

    @staticmethod
    def _metadata(context, call) -> None:
        """A finished unary call's initial and trailing metadata, for the response about to be returned."""
        initial = _forwardable(call.initial_metadata())
        if initial:
            context.send_initial_metadata(initial)
        _GrpcForward._trailing(context, call)

    @staticmethod
    def _trailing(context, call) -> None:
        trailing = _forwardable(call.trailing_metadata())
        if trailing:
            context.set_trailing_metadata(trailing)

    def _abort(self, context, err) -> None:
        self._trailing(context, err)  # trailing only: a stream may have sent its initial metadata already
        context.abort(err.code(), err.details() or "")

    def close(self) -> None:
        self._channel.close()


class GrpcGate:
    """gRPC on `address:port` → tritonserver's gRPC on `upstream` (host:port)."""

    def __init__(self, address: str, port: int, upstream: str, max_request_bytes: int, workers: int = 64):
        import grpc

        self._forward = _GrpcForward(upstream)
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bt-serve-grpc-gate"),
            handlers=[self._forward],
            # no SO_REUSEPORT: with it a second server could share a taken port instead of failing
            options=[("grpc.max_receive_message_length", max_request_bytes),
                     ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)])
        host = f"[{address}]" if ":" in address else address
        try:
            self.port = self._server.add_insecure_port(f"{host}:{port}")
        except RuntimeError as err:  # grpcio ≥ 1.5x raises where older ones returned 0
            self._forward.close()
            raise OSError(f"cannot listen on {host}:{port} ({err})") from None
        if not self.port:
            self._forward.close()
            raise OSError(f"cannot listen on {host}:{port}")

    def start(self) -> GrpcGate:
        self._server.start()
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        self._server.stop(grace_s).wait(grace_s + 1)
        self._forward.close()


def _json_error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class _HttpForward(BaseHTTPRequestHandler):
    """One client connection (keep-alive): each request forwarded on one upstream connection of its own."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    upstream: tuple[str, int]
    max_request_bytes: int
    _upstream_connection: HTTPConnection | None = None

    def do_GET(self):  # noqa: N802 — BaseHTTPRequestHandler's dispatch names
        self._forward()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET  # noqa: N815

    def log_message(self, format, *args):  # noqa: A002 — tritonserver logs the requests it serves
        pass

    def _refuse(self, status: int, message: str, drain: int = 0) -> None:
        if 0 < drain <= DRAIN_BYTES:  # read and drop it, so the client is not cut off mid-send and sees why
            while drain > 0:
                chunk = self.rfile.read(min(drain, 2**20))
                if not chunk:
                    break
                drain -= len(chunk)
        body = _json_error(message)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue` (curl sends it above 1 MB): refuse an over-limit body before the client sends it."""
        declared = self.headers.get("Content-Length", "0").strip()
        if declared.isdigit() and int(declared) > self.max_request_bytes:
            self._refuse(413, self._too_large(int(declared)))
            return False
        return super().handle_expect_100()

    def _too_large(self, length: int) -> str:
        return f"request body of {length:,} bytes is above bt-serve's --max-request-bytes ({self.max_request_bytes:,})"

    def _body(self) -> bytes | None:
        """The request body within the limit (inflated if compressed), or None after refusing it."""
        limit = self.max_request_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._refuse(411, "bt-serve takes a request body with a Content-Length, not chunked")
            return None
        declared = self.headers.get("Content-Length", "0").strip()
        if not declared.isdigit():
            self._refuse(400, f"Content-Length {declared[:40]!r} is not a byte count")
            return None
        length = int(declared)
        if length > limit:
            self._refuse(413, self._too_large(length), drain=length)
            return None
        body = self.rfile.read(length) if length else b""
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding not in INFLATE:
            self._refuse(415, f"Content-Encoding {encoding[:40]!r}; valid: identity, gzip, deflate")
            return None
        inflater = zlib.decompressobj(INFLATE[encoding])
        try:
            plain = inflater.decompress(body, limit + 1)
        except zlib.error as err:
            self._refuse(400, f"the {encoding} request body does not inflate ({err})")
            return None
        if len(plain) > limit or inflater.unconsumed_tail:
            self._refuse(413, f"the {encoding} request body inflates past bt-serve's --max-request-bytes "
                              f"({limit:,})")
            return None
        return plain

    def _forward(self) -> None:
        body = self._body()
        if body is None:
            return
        headers = {key: value for key, value in self.headers.items()
                   if key.lower() not in HOP_BY_HOP and key.lower() != "content-encoding"}
        headers["Content-Length"] = str(len(body))
        try:
            if self._upstream_connection is None:
                self._upstream_connection = HTTPConnection(*self.upstream, timeout=None)
            self._upstream_connection.request(self.command, self.path, body=body, headers=headers)
            response = self._upstream_connection.getresponse()
            data = response.read()
        except (OSError, ValueError) as err:  # tritonserver gone or stopping: this request's error, not a crash
            self._upstream_connection = None
            self._refuse(502, f"tritonserver behind bt-serve did not answer ({err})")
            return
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def finish(self):
        super().finish()
        if self._upstream_connection is not None:
            self._upstream_connection.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # TIME_WAIT only: SO_REUSEPORT stays off, a live listener still refuses the bind

    def __init__(self, address: str, port: int, handler):
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        super().__init__((address, port), handler)


class HttpGate:
    """HTTP on `address:port` → tritonserver's HTTP on `upstream` (host, port)."""

    def __init__(self, address: str, port: int, upstream: tuple[str, int], max_request_bytes: int):
        handler = type("Forward", (_HttpForward,), {"upstream": upstream, "max_request_bytes": max_request_bytes})
        self._server = _Server(address, port, handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="bt-serve-http-gate", daemon=True)

    def start(self) -> HttpGate:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, which never ran otherwise
            self._server.shutdown()
        self._server.server_close()


def open_gates(address: str, http_port: int, grpc_port: int, inner_http: int, inner_grpc: int,
               max_request_bytes: int) -> list:
    """Both gates, bound (not yet serving); on a failure the one already bound is closed and OSError says which."""
    gates = []
    try:
        gates.append(HttpGate(address, http_port, ("127.0.0.1", inner_http), max_request_bytes))
        gates.append(GrpcGate(address, grpc_port, f"127.0.0.1:{inner_grpc}", max_request_bytes))
    except OSError as err:
        for gate in gates:
            gate.stop()
        option = "--grpc-port" if gates else "--http-port"
        raise OSError(f"{option} {grpc_port if gates else http_port}: {err.strerror or err}") from None
    return gates
