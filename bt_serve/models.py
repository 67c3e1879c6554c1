"""The task models bt-serve binds into Triton: plain Python callables over one `BridgeTowerRuntime`, no PyTriton
import here (so they are testable without a server).

Each callable receives the list of requests Triton's dynamic batcher merged (each a mapping of input name → numpy
array whose first axis is that request's batch) and returns one dict of outputs per request. Requests are checked
row by row before anything runs: a request with a bad input (undecodable image, non-UTF-8 text, rows that
do not pair) must not fail the requests it was merged with. PyTriton 0.7 can only fail a whole merged batch, so:
- every row bad (the usual case: a lone bad request) → `RequestError`, which the server turns into a Triton error
  response whose message names the input and row;
- bad rows merged with good ones → the good rows are answered; each bad row gets NaN outputs and its message in the
  `error` output (empty for good rows). Clients that batch or run concurrently should read `error`.

Every row is checked against `Limits` (image bytes, text characters: before decoding or tokenizing), then decoded
and converted to RGB pixels on its own; only rows that got this far join the batch that runs the graphs. Whatever a
row's image raises while decoding is that row's error.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from bt_runtime.errors import USER_FACING, BtRuntimeError, first_line
from bt_runtime.text import DEFAULT_MAX_TEXT_CHARS, check_text_length, text_limit

FILL_MASK_TOP_K = 5
# A 61 Mpx camera JPEG is 20-30 MB; larger requests are refused before Pillow sees a byte (docs/limits.md).
DEFAULT_MAX_IMAGE_BYTES = 32 * 2**20
UTF8_MAX_BYTES_PER_CHAR = 4


@dataclass(frozen=True)
class Limits:
    """Per-row input limits of bt-serve (--max-text-chars, --max-image-bytes); pixels and formats are the
    runtime's ImagePreprocessor's (--max-pixels, --image-formats)."""

    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES


class RequestError(ValueError):
    """A request that cannot be answered; the message names the input and what is valid."""


@dataclass
class Row:
    request: int  # position in the merged list
    row: int  # row inside that request
    values: dict = field(default_factory=dict)  # checked inputs (bytes for images, str for texts)
    error: str = ""


def _column(request, name: str) -> np.ndarray:
    try:
        value = request[name]
    except KeyError:
        raise RequestError(f"input {name!r} is missing") from None
    return np.asarray(value)


def _as_bytes(value, name: str) -> bytes:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise RequestError(f"{name}: expected BYTES, got {type(value).__name__}")


def _image(value, name: str, limits: Limits) -> bytes:
    data = value if isinstance(value, (bytes, np.bytes_)) else _as_bytes(value, name)  # sized before any copy
    if len(data) > limits.max_image_bytes:
        raise RequestError(f"{name}: {len(data):,} bytes is above bt-serve's --max-image-bytes "
                           f"({limits.max_image_bytes:,}); send a smaller encoding")
    return _as_bytes(data, name)


def _text(value, name: str, limits: Limits = Limits()) -> str:
    data = value if isinstance(value, (bytes, np.bytes_)) else _as_bytes(value, name)  # sized before any copy
    if len(data) > limits.max_text_chars * UTF8_MAX_BYTES_PER_CHAR:  # surely too long: refused without decoding
        raise RequestError(f"{name}: {len(data):,} bytes is above bt-serve's --max-text-chars "
                           f"({limits.max_text_chars:,} characters)")
    try:  # strict UTF-8: no lone surrogates can come out of it
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(f"{name}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        check_text_length(text, name, limits.max_text_chars)
    except BtRuntimeError as err:
        raise RequestError(str(err)) from None
    return text


def _rows(requests, inputs: dict[str, str], limits: Limits) -> list[Row]:
    """One Row per (request, row) with every input checked: `inputs` maps name → "image" | "text"."""
    rows = []
    for r, request in enumerate(requests):
        counts = {}
        try:
            columns = {name: _column(request, name) for name in inputs}
            counts = {name: column.shape[0] if column.ndim else 0 for name, column in columns.items()}
            if len(set(counts.values())) != 1 or 0 in counts.values():
                raise RequestError("inputs must have the same number of rows (batch axis first, ≥ 1): " +
                                   ", ".join(f"{n} has {c}" for n, c in counts.items()))
        except RequestError as err:
            # as many answer rows as the request's batch (Triton checks it), each carrying the error
            rows += [Row(r, k, error=str(err)) for k in range(max(counts.values(), default=1) or 1)]
            continue
        for k in range(next(iter(counts.values()))):
            row = Row(r, k)
            try:
                for name, kind in inputs.items():
                    value = columns[name][k].reshape(-1)
                    if value.size != 1:
                        raise RequestError(f"{name}[{k}]: expected one element per row, got {value.size}")
                    row.values[name] = (_image(value[0], f"{name}[{k}]", limits) if kind == "image"
                                        else _text(value[0], f"{name}[{k}]", limits))
            except RequestError as err:
                row.error = str(err)
            rows.append(row)
    return rows


def _text_limited(model):
    """A TaskModels model whose tokenizer calls check texts against the model's own --max-text-chars
    (bt_runtime.text.text_limit: this call only), so the shared runtime's tokenizer.max_chars is never changed."""
    @functools.wraps(model)
    def call(self, requests):
        with text_limit(self.limits.max_text_chars):
            return model(self, requests)
    return call


class TaskModels:
    """The callables of one export. `runtime` is shared by every model instance (ONNX Runtime sessions are
    thread-safe); nothing here holds per-request state."""

    def __init__(self, runtime, limits: Limits = Limits()):
        # rows are length-checked per row (_text); the models' tokenizer calls get the same limit (_text_limited)
        self.runtime, self.limits = runtime, limits

    # ---- helpers ----

    def _pixels(self, rows: list[Row], name: str = "image") -> list[np.ndarray]:
        """Decode and preprocess each good row's image; a bad image marks its row, never the batch."""
        pixels = []
        for row in rows:
            if row.error:
                continue
            label = f"{name}[{row.row}]"
            try:
                pixels.append(self.runtime.preprocess.pixel_values(row.values[name], label))
            except USER_FACING as err:
                row.error = str(err)
            except Exception as err:  # noqa: BLE001 — whatever one image makes Pillow raise is that row's error only
                row.error = f"{label}: cannot be decoded ({type(err).__name__}: {first_line(err)})"
        return pixels

    @staticmethod
    def _respond(requests, rows: list[Row], values: dict[str, list], shapes: dict[str, tuple], fill: dict):
        """Per-request output dicts: good rows get `values[name]` in order, bad rows `fill[name]` and their error.
        Raises RequestError when no row is good (a Triton error response instead of NaNs)."""
        if all(row.error for row in rows):
            raise RequestError("; ".join(sorted({row.error for row in rows})))
        cursors = {name: iter(column) for name, column in values.items()}
        per_request = [{name: [] for name in (*values, "error")} for _ in requests]
        for row in rows:
            out = per_request[row.request]
            for name in values:
                out[name].append(fill[name] if row.error else next(cursors[name]))
            out["error"].append(row.error.encode("utf-8"))
        return [{name: (np.array(column, dtype=object).reshape(-1, 1) if name == "error" else
                        np.asarray(column, dtype=np.float32).reshape((-1, *shapes[name])))
                 for name, column in out.items()} for out in per_request]

    # ---- models ----

    @_text_limited
    def itm(self, requests) -> list[dict]:
        """image (BYTES [1]) + text (BYTES [1]) per row → probability (FP32 [1]), error (BYTES [1])."""
        rows = _rows(requests, {"image": "image", "text": "text"}, self.limits)
        pixels = self._pixels(rows)
        good = [row for row in rows if not row.error]
        probabilities = []
        if good:
            images = self.runtime.encode_pixels(np.stack(pixels))
            texts = self.runtime.encode_texts([row.values["text"] for row in good])
            index = np.arange(len(good))
            probabilities = self.runtime.match_probabilities(texts, images, index, index, batch_size=len(good))
        return self._respond(requests, rows, {"probability": list(probabilities)}, {"probability": (1,)},
                             {"probability": np.nan})

    @_text_limited
    def embed_image(self, requests) -> list[dict]:
        """image (BYTES [1]) per row → embedding (FP32 [E], L2-normalized), error (BYTES [1])."""
        rows = _rows(requests, {"image": "image"}, self.limits)
        pixels = self._pixels(rows)
        embeds = list(self.runtime.encode_pixels(np.stack(pixels)).embeds) if pixels else []
        size = self.runtime.manifest.config.contrastive_hidden_size
        return self._respond(requests, rows, {"embedding": embeds}, {"embedding": (size,)},
                             {"embedding": np.full(size, np.nan, np.float32)})

    @_text_limited
    def embed_text(self, requests) -> list[dict]:
        """text (BYTES [1]) per row → embedding (FP32 [E], L2-normalized), error (BYTES [1])."""
        rows = _rows(requests, {"text": "text"}, self.limits)
        good = [row for row in rows if not row.error]
        embeds = list(self.runtime.embed_texts([row.values["text"] for row in good])) if good else []
        size = self.runtime.manifest.config.contrastive_hidden_size
        return self._respond(requests, rows, {"embedding": embeds}, {"embedding": (size,)},
                             {"embedding": np.full(size, np.nan, np.float32)})

    @_text_limited
    def rerank(self, requests) -> list[dict]:
        """One image (BYTES [1]) and many texts (BYTES [-1]) per request (no batch axis) → probabilities (FP32
        [-1]), in the order of `texts`; the vision tower runs once per request."""
        responses = []
        for request in requests:
            image = _column(request, "image").reshape(-1)
            texts = _column(request, "texts").reshape(-1)
            if image.size != 1:
                raise RequestError(f"image: expected exactly one encoded image, got {image.size}")
            if texts.size == 0:
                raise RequestError("texts: empty; give at least one text")
            decoded = [_text(t, f"texts[{k}]", self.limits) for k, t in enumerate(texts)]
            try:
                probabilities = self.runtime.itm_scores(_image(image[0], "image", self.limits), decoded)
            except USER_FACING as err:
                raise RequestError(str(err)) from None
            responses.append({"probabilities": probabilities.astype(np.float32)})
        return responses

    @_text_limited
    def fill_mask(self, requests) -> list[dict]:
        """image (BYTES [1]) + text with <mask> (BYTES [1]) per request (no batch axis) → sentence (BYTES [1]),
        tokens (BYTES [M, K]), token_ids (INT64 [M, K]), probabilities (FP32 [M, K]) for the M masks, top K."""
        responses = []
        for request in requests:
            image = _column(request, "image").reshape(-1)
            text = _column(request, "text").reshape(-1)
            if image.size != 1 or text.size != 1:
                raise RequestError(f"image and text: expected one element each, got {image.size} and {text.size}")
            try:
                result = self.runtime.fill_mask(_image(image[0], "image", self.limits),
                                                _text(text[0], "text", self.limits), top_k=FILL_MASK_TOP_K)
            except USER_FACING as err:
                raise RequestError(str(err)) from None
            responses.append({
                "sentence": np.array([result.sentence.encode("utf-8")], dtype=object),
                "tokens": np.array([[t.encode("utf-8") for t in m.tokens] for m in result.masks], dtype=object),
                "token_ids": np.array([m.token_ids for m in result.masks], dtype=np.int64),
                "probabilities": np.array([m.probabilities for m in result.masks], dtype=np.float32)})
        return responses


# ---- retrieve (an index directory from `bt-run index`: docs/scale.md) ----

RETRIEVE_DEFAULTS = {"top_k": 10, "rerank": 50}  # those of BridgeTowerRuntime.retrieve
RETRIEVE_MAX = 1000  # top_k / rerank above this are refused: each reranked image is a vision-tower run


def _count_parameter(parameters, name: str) -> int:
    value = (parameters or {}).get(name, RETRIEVE_DEFAULTS[name])
    if isinstance(value, str) and value.strip().isdigit():  # HTTP clients may send parameters as strings
        value = int(value)
    low = 1 if name == "top_k" else 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= RETRIEVE_MAX:
        raise RequestError(f"parameter {name}: {value!r}; expected an integer from {low} to {RETRIEVE_MAX}")
    return value


class RetrieveModel:
    """retrieve: text BYTES [1] (one query per request, no batch axis; request parameters top_k, rerank) →
    image_ids BYTES [-1] and scores FP32 [-1], best first: the FAISS shortlist of an index directory, reranked by
    ITM (BridgeTowerRuntime.retrieve(..., index=DIR)). The index is opened (memory-mapped, checked against the
    export) once, when the model is made."""

    def __init__(self, runtime, index_dir, limits: Limits = Limits()):
        from bt_runtime.index.search import open_for

        self.runtime, self.directory, self.limits = runtime, index_dir, limits
        self.index = open_for(runtime, index_dir)

    def __call__(self, requests) -> list[dict]:
        from bt_runtime.index.search import retrieve_from_index

        responses = []
        for request in requests:
            text = _column(request, "text").reshape(-1)
            if text.size != 1:
                raise RequestError(f"text: expected exactly one query, got {text.size}")
            parameters = getattr(request, "parameters", None)
            top_k, rerank = _count_parameter(parameters, "top_k"), _count_parameter(parameters, "rerank")
            query = _text(text[0], "text", self.limits)
            try:
                hits = retrieve_from_index(self.runtime, query, self.directory, top_k, rerank, 16, self.index)
            except USER_FACING as err:
                raise RequestError(str(err)) from None
            responses.append({"image_ids": np.array([h.image_id.encode("utf-8") for h in hits], dtype=object),
                              "scores": np.array([h.score for h in hits], dtype=np.float32)})
        return responses
