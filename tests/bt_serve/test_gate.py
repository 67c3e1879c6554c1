"""bt_serve/gate.py against stand-in upstreams (a generic gRPC server, an HTTP server that echoes what it got): a body
above the limit is refused from its declared size and never reaches tritonserver; everything else passes through
unchanged — bytes, metadata, status codes, streams, keep-alive connections. bt-serve through the gate for real:
tests/bt_serve/test_server.py."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from bt_serve.gate import GrpcGate, HttpGate, free_loopback_port, open_gates

LIMIT = 10_000
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"


class Upstream(grpc.GenericRpcHandler):
    """Unary /t.T/Echo returns the request reversed and its metadata as trailing metadata; /t.T/Fail fails with
    INVALID_ARGUMENT; the streaming method echoes each message. Records the size of every request it got."""

    def __init__(self):
        self.seen: list[int] = []

    def service(self, details):
        if details.method == STREAM:
            def stream(requests, context):
                context.send_initial_metadata((("x-stream", "open"),))
                for request in requests:
                    self.seen.append(len(request))
                    yield request
                context.set_trailing_metadata((("x-stream", "closed"),))

            return grpc.stream_stream_rpc_method_handler(stream)

        def unary(request, context):
            self.seen.append(len(request))
            if details.method == "/t.T/Fail":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "image[0]: not a decodable image")
            context.set_trailing_metadata(tuple((k, v) for k, v in context.invocation_metadata() if k == "x-tag"))
            return request[::-1]

        return grpc.unary_unary_rpc_method_handler(unary)


@pytest.fixture
def grpc_gate():
    upstream = Upstream()
    server = grpc.server(ThreadPoolExecutor(4), handlers=[upstream],
                         options=[("grpc.max_receive_message_length", -1)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    gate = GrpcGate("127.0.0.1", 0, f"127.0.0.1:{port}", LIMIT).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{gate.port}", options=[("grpc.max_send_message_length", -1)])
    yield channel, upstream
    channel.close()
    gate.stop()
    server.stop(0)


def test_grpc_passes_bytes_metadata_and_errors_through(grpc_gate):
    channel, upstream = grpc_gate
    body = bytes(range(256)) * 30  # 7,680 bytes: under the limit
    answer, call = channel.unary_unary("/t.T/Echo").with_call(body, metadata=(("x-tag", "kept"),), timeout=10)
    assert channel.unary_unary("/t.T/Echo")(b"no deadline") == b"enildaed on"  # as Triton's clients send by default
    assert answer == body[::-1] and ("x-tag", "kept") in call.trailing_metadata()
    with pytest.raises(grpc.RpcError) as failed:
        channel.unary_unary("/t.T/Fail")(b"x", timeout=10)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details() == "image[0]: not a decodable image"
    streamed = channel.stream_stream(STREAM)(iter([b"a", b"bc"]))
    assert list(streamed) == [b"a", b"bc"]
    assert ("x-stream", "open") in streamed.initial_metadata()
    assert ("x-stream", "closed") in streamed.trailing_metadata()


def test_grpc_refuses_an_oversized_message_before_tritonserver_sees_it(grpc_gate):
    channel, upstream = grpc_gate
    with pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary("/t.T/Echo")(b"x" * (LIMIT + 1), timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{LIMIT + 1} vs. {LIMIT}" in refused.value.details()
    with pytest.raises(grpc.RpcError):  # inside a stream too
        list(channel.stream_stream(STREAM)(iter([b"ok", b"x" * (LIMIT + 1)]), timeout=10))
    assert all(size <= LIMIT for size in upstream.seen)
    assert channel.unary_unary("/t.T/Echo")(b"ab", timeout=10) == b"ba"  # the next request is served


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append(len(body))
        answer = json.dumps({"path": self.path, "bytes": len(body), "crc": zlib.crc32(body),
                             "encoding": self.headers.get("Content-Encoding"),
                             "tag": self.headers.get("X-Tag")}).encode()
        self.send_response(200 if self.path != "/fail" else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def http_gate():
    Echo.seen = []
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    gate = HttpGate("127.0.0.1", 0, ("127.0.0.1", upstream.server_address[1]), LIMIT).start()
    yield gate
    gate.stop()
    upstream.shutdown()
    upstream.server_close()


def _post(connection, body: bytes, path: str = "/v2/models/itm/infer", **headers):
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_http_forwards_requests_on_one_keep_alive_connection(http_gate):
    connection = http.client.HTTPConnection("127.0.0.1", http_gate.port, timeout=10)
    for size in (0, 5, LIMIT):
        status, answer = _post(connection, b"y" * size, **{"X-Tag": "kept"})
        assert status == 200 and answer["bytes"] == size and answer["tag"] == "kept"
        assert answer["path"] == "/v2/models/itm/infer"
    status, answer = _post(connection, b"z", path="/fail")
    assert status == 400 and answer["bytes"] == 1  # the upstream's status and body, unchanged
    connection.close()


def test_http_refuses_oversized_bodies_without_forwarding_them(http_gate):
    connection = http.client.HTTPConnection("127.0.0.1", http_gate.port, timeout=10)
    status, answer = _post(connection, b"y" * (LIMIT + 1))
    assert status == 413 and answer["error"] == (f"request body of {LIMIT + 1:,} bytes is above bt-serve's "
                                                 f"--max-request-bytes ({LIMIT:,})")
    connection.close()
    bomb = gzip.compress(b"\0" * (LIMIT * 50))  # a few hundred bytes that inflate 50× past the limit
    connection = http.client.HTTPConnection("127.0.0.1", http_gate.port, timeout=10)
    status, answer = _post(connection, bomb, **{"Content-Encoding": "gzip"})
    assert len(bomb) < LIMIT and status == 413 and "inflates past" in answer["error"]
    connection.close()
    assert Echo.seen == []


@pytest.mark.parametrize("encoding, pack", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_http_inflates_compressed_bodies_within_the_limit(http_gate, encoding, pack):
    plain = b"a cat on a mat " * 100
    connection = http.client.HTTPConnection("127.0.0.1", http_gate.port, timeout=10)
    status, answer = _post(connection, pack(plain), **{"Content-Encoding": encoding})
    assert status == 200 and answer["bytes"] == len(plain) and answer["crc"] == zlib.crc32(plain)
    assert answer["encoding"] is None
    connection.close()


@pytest.mark.parametrize("headers, status, says", [
    ({"Transfer-Encoding": "chunked"}, 411, "not chunked"),
    ({"Content-Encoding": "br"}, 415, "valid: identity, gzip, deflate"),
    ({"Content-Encoding": "gzip"}, 400, "does not inflate"),
])
def test_http_bodies_the_gate_cannot_bound_are_refused_naming_why(http_gate, headers, status, says):
    connection = http.client.HTTPConnection("127.0.0.1", http_gate.port, timeout=10)
    if "Transfer-Encoding" in headers:
        connection.putrequest("POST", "/v2/models/itm/infer")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        connection.send(b"5\r\nhello\r\n0\r\n\r\n")
        response = connection.getresponse()
        got, answer = response.status, json.loads(response.read())
    else:
        got, answer = _post(connection, b"not compressed", **headers)
    assert got == status and says in answer["error"]
    assert Echo.seen == []
    connection.close()


def test_http_with_tritonserver_gone_is_that_requests_error():
    gate = HttpGate("127.0.0.1", 0, ("127.0.0.1", free_loopback_port()), LIMIT).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=10)
        status, answer = _post(connection, b"x")
        assert status == 502 and "tritonserver behind bt-serve did not answer" in answer["error"]
    finally:
        gate.stop()


def test_a_taken_public_port_is_named_and_nothing_stays_bound():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        free = free_loopback_port()
        with pytest.raises(OSError, match=f"--grpc-port {port}"):
            open_gates("127.0.0.1", free, port, free_loopback_port(), free_loopback_port(), LIMIT)
        with pytest.raises(OSError, match=f"--http-port {port}"):
            open_gates("127.0.0.1", port, free, free_loopback_port(), free_loopback_port(), LIMIT)
    gates = open_gates("127.0.0.1", free, free_loopback_port(), 1, 2, LIMIT)  # the http port was let go
    for gate in gates:
        gate.stop()


def test_http_expect_100_continue_is_refused_before_the_body_is_sent(http_gate):
    import socket

    with socket.create_connection(("127.0.0.1", http_gate.port), timeout=10) as raw:
        raw.sendall(f"POST /v2/models/itm/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {LIMIT + 1}\r\n"
                    "Expect: 100-continue\r\n\r\n".encode())
        answer = b""
        while chunk := raw.recv(4096):  # the gate closes the connection after its answer
            answer += chunk
        answer = answer.decode()  # and the client sent no byte of the body
    assert answer.startswith("HTTP/1.1 413") and "--max-request-bytes" in answer
    connection = http.client.HTTPConnection("127.0.0.1", http_gate.port, timeout=10)
    status, echoed = _post(connection, b"y" * 100, **{"Expect": "100-continue"})  # under the limit: continues
    assert status == 200 and echoed["bytes"] == 100
    connection.close()
    assert Echo.seen == [100]
