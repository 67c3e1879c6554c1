"""The bt-serve test harness (benchmarks.serve_load.serving) against a stand-in server: a start that lost a probed
port is tried again on new ports, any other failed start raises with the server's own output."""

from __future__ import annotations

import sys
import textwrap

import pytest

from benchmarks.serve_load import PORT_ATTEMPTS, serving

# stands in for `python -m bt_serve.cli EXPORT ... --http-port N ...`: the first `fail_starts` starts print `message`
# and exit 2, later ones answer Triton's readiness endpoints on --http-port until SIGTERM
STAND_IN = textwrap.dedent("""\
    #!{python}
    import http.server, signal, sys
    from pathlib import Path
    counter = Path({counter!r})
    starts = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(starts + 1))
    port = int(sys.argv[sys.argv.index("--http-port") + 1])
    with open(counter.with_name("ports"), "a") as ports:
        ports.write(f"{{port}}\\n")
    if starts < {fail_starts}:
        print({message!r}, flush=True)
        sys.exit(2)  # bt-serve's exit status for a refused start (bt_serve.cli)

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path in ("/v2/health/ready", "/v2/models/itm/ready") else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Ready)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    server.serve_forever()
""")


def stand_in(tmp_path, fail_starts: int, message: str) -> tuple[str, object]:
    counter = tmp_path / "starts"
    script = tmp_path / "fake-python"
    script.write_text(STAND_IN.format(python=sys.executable, counter=str(counter), fail_starts=fail_starts,
                                      message=message))
    script.chmod(0o755)
    return str(script), counter


def test_a_start_that_lost_its_port_is_tried_again_on_new_ports(tmp_path):
    python, counter = stand_in(tmp_path, 1, "bt-serve: --http-port 45457: [Errno 98] Address already in use; "
                                            "choose another port, or stop what listens there")
    with serving(tmp_path, python, ready_timeout_s=30) as server:
        assert counter.read_text() == "2"
        assert server.process.poll() is None
        ports = [int(line) for line in (tmp_path / "ports").read_text().split()]
        assert len(set(ports)) == 2 and server.http_port == ports[-1]  # probed again, not the lost one
    assert server.shutdown_rc == 0


def test_a_port_lost_every_time_gives_up_with_the_server_output(tmp_path):
    python, counter = stand_in(tmp_path, PORT_ATTEMPTS, "bt-serve: cannot listen on 127.0.0.1:1 (in use)")
    with pytest.raises(RuntimeError, match=r"(?s)exited with 2 before it was ready.*cannot listen"):
        with serving(tmp_path, python, ready_timeout_s=30):
            pass
    assert counter.read_text() == str(PORT_ATTEMPTS)


def test_any_other_failed_start_raises_at_once_with_the_server_output(tmp_path):
    python, counter = stand_in(tmp_path, 1, "bt-serve: error: export has no itm head")
    with pytest.raises(RuntimeError, match=r"(?s)exited with 2 before it was ready.*export has no itm head"):
        with serving(tmp_path, python, ready_timeout_s=30):
            pass
    assert counter.read_text() == "1"
