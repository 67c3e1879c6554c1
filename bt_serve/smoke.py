"""`bt-serve --smoke`: every served model once over HTTP and once over gRPC, compared with bt_runtime called
directly on the same inputs (the export's golden image and texts), plus one bad request that must come back as a
Triton error naming the input, and one body above the gate's limit that must be refused before tritonserver reads
it (bt_serve/gate.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from . import client as c

TOLERANCE = 1e-5  # the server runs the same sessions; batching differences only


def server_message(error: str) -> str:
    """bt-serve's own message inside a Triton error: PyTriton wraps it in the model's traceback, last line
    `pytriton.exceptions.PyTritonBadParameterError: <message>`."""
    marker = "PyTritonBadParameterError: "
    return error[error.rindex(marker) + len(marker):].split("\n")[0] if marker in error else error


def _inputs(runtime) -> tuple[bytes, list[str]]:
    golden = runtime.manifest.golden
    if golden is not None:
        return runtime.manifest.path(golden.image.file).read_bytes(), list(golden.texts)
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue(), ["a red square", "a dog on the beach"]


# how the gate refuses a body above --max-request-bytes: HTTP 413 (its own message), gRPC RESOURCE_EXHAUSTED
OVERSIZED = {"http": "--max-request-bytes", "grpc": "Received message larger than max"}


def round_trip(export_dir: str | Path, host: str, http_port: int, grpc_port: int, precision: str = "fp32",
               max_request_bytes: int | None = None) -> dict:
    from bt_runtime import BridgeTowerRuntime

    rows = []

    def row(name, diff, note=""):
        rows.append({"check": name, "max_abs_diff": float(diff), "passed": bool(diff <= TOLERANCE), "note": note})

    with BridgeTowerRuntime.load(export_dir, precision=precision) as runtime:
        image, texts = _inputs(runtime)
        mask = runtime.tokenizer.mask_token
        for protocol, port in (("http", http_port), ("grpc", grpc_port)):
            module, client = c.connect(protocol, host, port)
            if "itm" in runtime.heads:
                expected = runtime.itm_scores(image, texts)
                got = [c.itm(module, client, image, t) for t in texts]
                row(f"{protocol}:itm", np.abs(np.array([p for p, _ in got]) - expected).max(),
                    "; ".join(e for _, e in got if e))
                row(f"{protocol}:rerank", np.abs(c.rerank(module, client, image, texts) - expected).max())
                try:
                    c.itm(module, client, b"not an image", texts[0])
                    rows.append({"check": f"{protocol}:itm bad image", "passed": False,
                                 "note": "a request with an undecodable image was answered"})
                except Exception as err:  # tritonclient's InferenceServerException
                    message = server_message(str(err))
                    rows.append({"check": f"{protocol}:itm bad image", "passed": message.startswith("image[0]"),
                                 "note": message[:200]})
                if max_request_bytes:
                    rows.append(_oversized(module, client, protocol, image, max_request_bytes))
            if "itc" in runtime.heads:
                row(f"{protocol}:embed_image",
                    np.abs(c.embed_image(module, client, image) - runtime.embed_images([image])[0]).max())
                row(f"{protocol}:embed_text",
                    np.abs(c.embed_text(module, client, texts[0]) - runtime.embed_texts(texts[:1])[0]).max())
            if "mlm" in runtime.heads:
                text = next((t for t in texts if mask in t), f"a {mask} on a table")
                got = c.fill_mask(module, client, image, text)
                want = runtime.fill_mask(image, text)
                same = got["token_ids"].tolist() == [m.token_ids for m in want.masks] and \
                    got["sentence"] == want.sentence
                rows.append({"check": f"{protocol}:fill_mask", "passed": bool(same), "note": got["sentence"]})
            client.close()
    return {"passed": all(r["passed"] for r in rows), "rows": rows}


def _oversized(module, client, protocol: str, image: bytes, limit: int) -> dict:
    check = f"{protocol}:itm body above --max-request-bytes"
    try:
        c.itm(module, client, image, "x" * (limit + 1))
        return {"check": check, "passed": False, "note": "answered: no gate in front of tritonserver?"}
    except Exception as err:  # tritonclient's InferenceServerException
        return {"check": check, "passed": OVERSIZED[protocol] in str(err), "note": str(err)[:200]}
