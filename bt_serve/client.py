"""Client helpers over `tritonclient` (HTTP and gRPC): the request layout bt-serve's models expect, in one place,
for `bt-serve --smoke`, the load test and the tests. A user's own client needs only the ten lines in docs/serving.md."""

from __future__ import annotations

import numpy as np

PROTOCOLS = ("http", "grpc")


def connect(protocol: str, host: str, port: int, concurrency: int = 1):
    if protocol == "http":
        import tritonclient.http as module

        return module, module.InferenceServerClient(f"{host}:{port}", concurrency=concurrency)
    if protocol == "grpc":
        import tritonclient.grpc as module

        return module, module.InferenceServerClient(f"{host}:{port}")
    raise ValueError(f"protocol {protocol!r}; valid: {list(PROTOCOLS)}")


def bytes_input(module, name: str, values: list[bytes], batch_first: bool = True):
    """A BYTES input: [len(values), 1] with the batch axis first, or [len(values)] for unbatched models."""
    array = np.array(values, dtype=object).reshape((-1, 1) if batch_first else (-1,))
    tensor = module.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def itm(module, client, image: bytes, text: str) -> tuple[float, str]:
    """One request to `itm` → (probability, error message or "")."""
    result = client.infer("itm", [bytes_input(module, "image", [image]),
                                  bytes_input(module, "text", [text.encode("utf-8")])])
    error = result.as_numpy("error").reshape(-1)[0]
    return float(result.as_numpy("probability").reshape(-1)[0]), error.decode("utf-8")


def rerank(module, client, image: bytes, texts: list[str]) -> np.ndarray:
    result = client.infer("rerank", [bytes_input(module, "image", [image], batch_first=False),
                                     bytes_input(module, "texts", [t.encode("utf-8") for t in texts],
                                                 batch_first=False)])
    return result.as_numpy("probabilities")


def embed_image(module, client, image: bytes) -> np.ndarray:
    return client.infer("embed_image", [bytes_input(module, "image", [image])]).as_numpy("embedding")[0]


def embed_text(module, client, text: str) -> np.ndarray:
    return client.infer("embed_text", [bytes_input(module, "text", [text.encode("utf-8")])]).as_numpy("embedding")[0]


def fill_mask(module, client, image: bytes, text: str) -> dict:
    result = client.infer("fill_mask", [bytes_input(module, "image", [image], batch_first=False),
                                        bytes_input(module, "text", [text.encode("utf-8")], batch_first=False)])
    return {"sentence": result.as_numpy("sentence")[0].decode("utf-8"),
            "token_ids": result.as_numpy("token_ids"), "probabilities": result.as_numpy("probabilities")}


def retrieve(module, client, text: str, top_k: int = 10, rerank: int = 50) -> tuple[list[str], np.ndarray]:
    """One query to `retrieve` (bt-serve --index) → (image ids, scores), best first."""
    result = client.infer("retrieve", [bytes_input(module, "text", [text.encode("utf-8")], batch_first=False)],
                          parameters={"top_k": top_k, "rerank": rerank})
    return [i.decode("utf-8") for i in result.as_numpy("image_ids").reshape(-1)], result.as_numpy("scores")


def wait_ready(host: str, http_port: int, models: list[str], timeout_s: float = 120.0, process=None) -> None:
    """Poll the HTTP health endpoints until the server and `models` are ready; raise on timeout or if `process`
    (the server's Popen) exits first."""
    import time

    import tritonclient.http as http

    client = http.InferenceServerClient(f"{host}:{http_port}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"bt-serve exited with {process.returncode} before it was ready")
        try:
            if client.is_server_ready() and all(client.is_model_ready(m) for m in models):
                return
        except Exception:  # connection refused while starting
            pass
        time.sleep(0.5)
    raise TimeoutError(f"bt-serve not ready on {host}:{http_port} after {timeout_s:.0f} s")


def batch_statistics(host: str, http_port: int, model: str) -> dict[int, int]:
    """Batch size → how many times the server executed `model` with it (Triton's statistics endpoint)."""
    import tritonclient.http as http

    stats = http.InferenceServerClient(f"{host}:{http_port}").get_inference_statistics(model)
    sizes = {}
    for entry in stats["model_stats"][0].get("batch_stats", []):
        sizes[int(entry["batch_size"])] = int(entry["compute_infer"]["count"])
    return sizes
