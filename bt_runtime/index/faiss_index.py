"""A FAISS index over a finished job's shards, chosen the way autofaiss chooses (github.com/criteo/autofaiss, "index
selection"): exact inner product below EXACT_BELOW vectors; above, an IVF index whose coarse quantizer is an HNSW
graph, with exact (Flat) codes when they fit the memory budget, else SQ8, else PQ codes; trained on a sample, its
search breadth (nprobe) tuned on held-out vectors to reach TARGET_RECALL, and read memory-mapped at query time.

Embeddings without cluster structure (random vectors are the extreme) defeat IVF: reaching the target takes most
of the lists. Then, when the vectors fit the budget in float32 (an IVF with Flat codes was chosen), every vector is
scanned, but as a 4-bit PQ code with FAISS's fast-scan kernels (lookup tables held in SIMD registers; faiss wiki
"Fast accumulation of PQ and AQ codes"), and the best k·k_factor are re-scored exactly from the stored vectors
(IndexRefineFlat), k_factor tuned like nprobe; exact search when that too misses the target, or when the dimension
is odd or the codes do not fit beside the vectors.

Files next to the shards: faiss.index, faiss-rows.arrow (image id and source of each FAISS row, memory-mapped) and
faiss.json (this index's manifest: the export's tower sha256s and precision, count, factory, metric, nprobe or
k_factor, and the recall@10 vs exact measured at build). An index is refused for a runtime of another export or
precision."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import BtRuntimeError, first_line
from . import shards
from .inputs import not_regular

FORMAT = "bt-faiss-index/1"
INDEX_FILE, ROWS_FILE, MANIFEST_FILE = "faiss.index", "faiss-rows.arrow", "faiss.json"
EXACT_BELOW = 100_000  # autofaiss: a flat index is fast enough below ~100k vectors and needs no training
TARGET_RECALL = 0.95  # recall@10 vs exact that nprobe or k_factor is tuned to reach (`tune`)
TRAIN_SAMPLE = 40  # training vectors per IVF list (FAISS warns below 39)
HELD_OUT = 500  # queries for the build-time recall measurement
DEFAULT_MEMORY_GIB = 16.0  # codes budget when none is given (--index-memory-gib)
REFINE_DIMS_PER_CODE = 2  # dimensions per 4-bit sub-quantizer: at 10^6 random × 512, PQ{dim/4}x4fs needed k_factor
# 512 for recall@10 0.957, PQ{dim/2}x4fs reached 0.999 at 128 (benchmarks/results/scale-2core.md, "prototype")
MAX_K_FACTOR = 1024  # refine breadth past which an exact scan is kept


@dataclass(frozen=True)
class IndexManifest:
    format: str
    towers_sha256: dict
    precision: str
    count: int
    dim: int
    factory: str
    metric: str
    nprobe: int  # 0 unless IVF; the HNSW quantizer's efSearch is 2·nprobe (set_nprobe)
    recall_at_10: float  # vs exact, on `recall_queries` held-out vectors, at `nprobe` / `k_factor`
    recall_queries: int
    build_seconds: float
    memory_budget_bytes: int
    k_factor: int = 0  # 0 unless a refined fast-scan index (refine_factory): candidates re-scored per result


def choose_factory(count: int, dim: int, memory_bytes: int) -> str:
    """The FAISS factory string for `count` vectors of `dim` floats within `memory_bytes` of codes."""
    if count < EXACT_BELOW and count * dim * 4 <= memory_bytes:
        return "Flat"
    nlist = 2 ** round(math.log2(max(256, min(2 * math.sqrt(count), 65536))))  # ~2·√n lists (autofaiss: 2-16·√n)
    if count * dim * 4 <= memory_bytes:
        return f"IVF{nlist}_HNSW32,Flat"  # exact codes: only the choice of lists approximates
    if count * dim <= memory_bytes:
        return f"IVF{nlist}_HNSW32,SQ8"
    # the largest PQ code (bytes per vector) that fits and divides dim
    fitting = [m for m in range(1, dim + 1) if dim % m == 0 and count * m <= memory_bytes]
    if not fitting:
        raise BtRuntimeError(f"--index-memory-gib: {memory_bytes / 2**30:.2f} GiB cannot hold {count} vectors even "
                             "at 1 byte each; give a larger budget")
    return f"IVF{nlist}_HNSW32,PQ{max(fitting)}x8"


def refine_factory(dim: int) -> str | None:
    """The exhaustive fast-scan + exact re-scoring factory for `dim`, or None when dim does not split into codes."""
    return None if dim % REFINE_DIMS_PER_CODE else f"PQ{dim // REFINE_DIMS_PER_CODE}x4fs,RFlat"


def build(directory: Path, memory_bytes: int = int(DEFAULT_MEMORY_GIB * 2**30), factory: str | None = None,
          seed: int = 0, log=None) -> IndexManifest:
    """Build the FAISS index of the finished job in `directory` (its good rows, in input order)."""
    import faiss
    import pyarrow as pa

    started = time.perf_counter()
    (Path(directory) / MANIFEST_FILE).unlink(missing_ok=True)  # it marks a complete index: gone until this one is
    job = shards.read_job(directory)
    table = shards.read_shards(directory, job)
    good, vectors = shards.embeddings_of(table)
    if not len(good):
        raise BtRuntimeError(f"{directory}: every image of the job is an error row; nothing to index")
    count, dim = vectors.shape
    factory = factory or choose_factory(count, dim, memory_bytes)
    rng = np.random.default_rng(seed)
    index, factory, breadth, recall, queries = train_for(vectors, factory, memory_bytes, rng, log)
    nprobe, k_factor = split_breadth(index, breadth)
    faiss.write_index(index, str(Path(directory) / INDEX_FILE))
    rows = pa.table({"id": table.column("id").take(good), "source": table.column("source").take(good)})
    with pa.OSFile(str(Path(directory) / ROWS_FILE), "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
        writer.write_table(rows)
    manifest = IndexManifest(FORMAT, job.towers_sha256, job.precision, count, dim, factory, "inner_product",
                             nprobe, recall, queries, round(time.perf_counter() - started, 3), memory_bytes, k_factor)
    shards.write_atomic(Path(directory) / MANIFEST_FILE, json.dumps(asdict(manifest), indent=2).encode())  # last
    if log:
        log(f"FAISS {factory}: {count} vectors, recall@10 {recall:.3f} at nprobe {nprobe}, k_factor {k_factor}")
    return manifest


def train_for(vectors: np.ndarray, factory: str, memory_bytes: int, rng, log=None) -> tuple[object, str, int, float,
                                                                                                  int]:
    """`factory` trained and tuned, or what replaces it when the data defeat it: (index, factory, breadth, recall@10,
    queries). An IVF whose target recall needs over half its lists gives way to the refined fast-scan index, and
    that, if even MAX_K_FACTOR misses the target, to an exact one (benchmarks/results/scale-2core.md, random
    vectors); both hold every vector in float32, so only within the memory budget."""
    count, dim = vectors.shape
    flat_fits = count * dim * 4 <= memory_bytes
    codes = count * dim // (2 * REFINE_DIMS_PER_CODE)  # 4 bits per sub-quantizer
    refine = refine_factory(dim) if count * dim * 4 + codes <= memory_bytes else None
    # with a replacement at hand, tuning stops at half the lists instead of scanning ever more of them
    index, breadth, recall, queries = train_and_add(vectors, factory, rng, half_lists=flat_fits)
    nprobe, _ = split_breadth(index, breadth)
    if nprobe and (recall < TARGET_RECALL or 2 * nprobe > extract_nlist(index)) and flat_fits:
        replacement = refine or "Flat"
        if log:
            log(f"FAISS {factory}: recall@10 {recall:.3f} at nprobe {breadth} of {extract_nlist(index)}: the target "
                f"{TARGET_RECALL} needs over half the lists (no cluster structure); using {replacement}")
        factory = replacement
        index, breadth, recall, queries = train_and_add(vectors, factory, rng)
    if split_breadth(index, breadth)[1] and recall < TARGET_RECALL:
        if log:
            log(f"FAISS {factory}: recall@10 {recall:.3f} at k_factor {breadth}; using an exact index instead")
        factory = "Flat"
        index, breadth, recall, queries = train_and_add(vectors, factory, rng)
    return index, factory, breadth, recall, queries


def split_breadth(index, breadth: int) -> tuple[int, int]:
    """(nprobe, k_factor) of a tuned `breadth`, by what the index is (a factory string may start with a transform:
    "OPQ16_64,IVF256,Flat")."""
    import faiss

    if isinstance(index, faiss.IndexRefine):
        return 0, breadth
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:  # exact
        return 0, 0
    return breadth, 0


def train_and_add(vectors: np.ndarray, factory: str, rng, half_lists: bool = False) -> tuple[object, int, float,
                                                                                                int]:
    """A FAISS index of `factory` (inner product) trained on a sample of `vectors`, holding all of them, with its
    search breadth tuned (`tune`; an IVF's nprobe only up to half its lists with `half_lists`): (index, nprobe or
    k_factor, recall@10, queries)."""
    import faiss

    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        try:
            lists = faiss.extract_index_ivf(index).nlist
        except RuntimeError:  # not IVF: PQ codebooks; 40 × 256 vectors (FAISS warns below 39 per centroid of an
            lists = 256  # 8-bit code; the 4-bit codes here have 16 centroids, so this is ample)
        sample = rng.choice(len(vectors), size=min(len(vectors), TRAIN_SAMPLE * lists), replace=False)
        index.train(vectors[np.sort(sample)])
    index.add(vectors)
    return (index, *tune(index, vectors, rng, half_lists=half_lists))


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top-k row numbers (ground truth), in blocks of queries."""
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    return flat.search(queries, k)[1]


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k that the index found (recall@k)."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def tune(index, vectors: np.ndarray, rng, k: int = 10, target: float = TARGET_RECALL,
         half_lists: bool = False) -> tuple[int, float, int]:
    """The smallest search breadth (nprobe, or k_factor for a refined index; powers of two) whose recall@k vs exact
    reaches `target`: (breadth, recall, queries). Queries are HELD_OUT database vectors, each with its own row left
    out of both result lists: every index finds a vector itself, and counting it would add up to 1/k to the recall
    that a new query (an image not in the gallery) does not get."""
    import faiss

    rows = rng.choice(len(vectors), size=min(HELD_OUT, len(vectors)), replace=False)
    queries, k = vectors[rows], min(k, len(vectors) - 1)
    if k < 1:  # one vector: nothing else to find
        return 0, 1.0, len(queries)
    truth = _without_self(exact_top(vectors, queries, k + 1), rows, k)

    def recall() -> float:
        return recall_at(_without_self(index.search(queries, k + 1)[1], rows, k), truth)

    if isinstance(index, faiss.IndexRefine):  # k_factor: powers of two up to MAX_K_FACTOR (a refined IVF keeps
        k_factor = 1  # its base's nprobe as set)
        while True:
            # k·k_factor candidates re-scored, as a k-result query gets (FAISS needs at least the k + 1 asked for)
            index.k_factor = max(1.0, k_factor * k / (k + 1) + 1e-9)
            measured = recall()
            if measured >= target or k_factor >= MAX_K_FACTOR:
                index.k_factor = k_factor
                return k_factor, measured, len(queries)
            k_factor *= 2
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index: exact
        return 0, recall(), len(queries)
    nprobe = 1
    while True:
        set_nprobe(index, nprobe)
        measured = recall()
        if measured >= target or nprobe >= (ivf.nlist // 2 if half_lists else ivf.nlist):
            return nprobe, measured, len(queries)
        nprobe = min(nprobe * 2, ivf.nlist)


def _without_self(found: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Each query's first k results other than its own row."""
    return np.array([[r for r in f if r != row][:k] for f, row in zip(found, rows, strict=True)])


def extract_nlist(index) -> int:
    import faiss

    return faiss.extract_index_ivf(index).nlist


def set_breadth(index, nprobe: int, k_factor: int) -> None:
    """A read index searched as tuned: `nprobe` lists (IVF) or `k_factor` re-scored candidates per result (refined;
    also stored in the file); 0 leaves that setting alone."""
    if nprobe:
        set_nprobe(index, nprobe)
    if k_factor:
        index.k_factor = k_factor


def set_nprobe(index, nprobe: int) -> None:
    """nprobe lists, found by the HNSW coarse quantizer with efSearch 2·nprobe (autofaiss's rule: with its
    default efSearch of 16 the graph returns too few lists, and recall stalls at ~0.84 however large nprobe is)."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = nprobe
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = max(16, 2 * nprobe)


@dataclass
class SearchIndex:
    """A built index, memory-mapped: search(queries, k) → (scores, FAISS rows); ids/sources of rows on demand."""

    directory: Path
    manifest: IndexManifest
    index: object
    rows: object  # pyarrow Table over the memory-mapped faiss-rows.arrow

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, found = self.index.search(np.ascontiguousarray(queries, np.float32), min(k, self.manifest.count))
        return scores, found  # (Q, k), (Q, k); -1 where fewer than k were found

    def ids(self, rows) -> list[str]:
        return self.rows.column("id").take(np.asarray(rows)).to_pylist()

    def sources(self, rows) -> list[str]:
        return self.rows.column("source").take(np.asarray(rows)).to_pylist()


def mmap_flags(faiss, factory: str) -> int:
    """read_index flags that map the codes instead of reading them: IO_FLAG_MMAP_IFC maps a flat index's codes
    (a faiss without the flag reads them into memory), IO_FLAG_MMAP an IVF index's inverted lists."""
    if factory == "Flat" or factory.endswith("RFlat"):  # a refined index: its stored vectors are mapped
        return getattr(faiss, "IO_FLAG_MMAP_IFC", 0)
    return faiss.IO_FLAG_MMAP


MANIFEST_TYPES = {"format": (str,), "towers_sha256": (dict,), "precision": (str,), "count": (int,), "dim": (int,),
                  "factory": (str,), "metric": (str,), "nprobe": (int,), "recall_at_10": (int, float),
                  "recall_queries": (int,), "build_seconds": (int, float), "memory_budget_bytes": (int,),
                  "k_factor": (int,)}


def check_manifest(data) -> IndexManifest:
    """faiss.json's fields as `build` writes them, or ValueError saying which one is not: each of the type its
    IndexManifest field declares (an int never a bool or a float), counts and breadths in range, before any is used."""
    manifest = shards.typed(IndexManifest, data, MANIFEST_TYPES)
    if manifest.format != FORMAT:
        raise ValueError(f"format {manifest.format!r}, expected {FORMAT!r}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest.towers_sha256.items()):
        raise ValueError("towers_sha256 is not an object of sha256 strings")
    ranges = {"count": (1, None), "dim": (1, None), "nprobe": (0, None), "k_factor": (0, MAX_K_FACTOR),
              "recall_at_10": (0, 1), "recall_queries": (0, None), "build_seconds": (0, None),
              "memory_budget_bytes": (0, None)}
    for name, (low, high) in ranges.items():
        value = getattr(manifest, name)
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            raise ValueError(f"{name} is {value!r}; expected {low} to {high if high is not None else 'any'}")
    if manifest.metric != "inner_product":
        raise ValueError(f"metric {manifest.metric!r}, expected 'inner_product'")
    return manifest


def read_manifest(directory: Path) -> IndexManifest | None:
    """The index manifest in `directory`, or None when there is no readable one (then the index is rebuilt)."""
    try:
        manifest = check_manifest(json.loads((Path(directory) / MANIFEST_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    complete = all((Path(directory) / name).is_file() for name in (INDEX_FILE, ROWS_FILE))
    return manifest if complete else None


def open_index(directory: Path, towers_sha256: dict, precision: str, dim: int | None = None) -> SearchIndex:
    """The index in `directory`, memory-mapped, checked against the runtime's export, precision and embedding size
    (`dim`), and its three files against each other: a damaged one is refused in one line naming it."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    why = not_regular(str(path))
    if why:
        raise BtRuntimeError(f"--index {directory}: {MANIFEST_FILE}: {why}; not an index directory (build one with "
                             "`bt-run index ... --output DIR`)")
    try:
        manifest = check_manifest(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as err:
        raise BtRuntimeError(f"--index {directory}: {MANIFEST_FILE} is not an index manifest ({type(err).__name__}: "
                             f"{first_line(err, 120)}); rebuild it with `bt-run index`") from None
    if manifest.precision != precision or manifest.towers_sha256 != towers_sha256:
        theirs = manifest.towers_sha256.get("vision_tower", "?")[:12]
        raise BtRuntimeError(f"--index {directory} was built from another export or precision ({manifest.precision}, "
                             f"vision tower {theirs}…) than this {precision} one; rebuild it with `bt-run index`")
    if dim is not None and manifest.dim != dim:
        raise BtRuntimeError(f"--index {directory}: {MANIFEST_FILE} says {manifest.dim}-dimensional vectors, this "
                             f"export embeds {dim}; rebuild it with `bt-run index`")
    index, rows = _read_index(directory, manifest), _read_rows(directory)
    if index.ntotal != manifest.count or index.d != manifest.dim or rows.num_rows != manifest.count:
        raise BtRuntimeError(f"--index {directory}: {INDEX_FILE} holds {index.ntotal} vectors of {index.d} floats and "
                             f"{ROWS_FILE} {rows.num_rows} rows, where {MANIFEST_FILE} says {manifest.count} of "
                             f"{manifest.dim}; rebuild it with `bt-run index`")
    return SearchIndex(directory, manifest, index, rows)


def _damaged(directory: Path, name: str, why: str) -> BtRuntimeError:
    return BtRuntimeError(f"--index {directory}: {name} is damaged or not written by `bt-run index` ({why}); rebuild "
                          "it with `bt-run index`")


def _read_index(directory: Path, manifest: IndexManifest):
    """faiss.index memory-mapped, searched as tuned; its kind must fit the manifest's nprobe / k_factor."""
    import faiss

    path = directory / INDEX_FILE
    why = not_regular(str(path))
    if why:  # a FIFO would block read_index forever
        raise _damaged(directory, INDEX_FILE, why)
    try:
        index = faiss.read_index(str(path), mmap_flags(faiss, manifest.factory) | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as err:  # FAISS raises RuntimeError for every unreadable file: "Error in <C++ signature>
        why = first_line(err, 10_000).rpartition("Error: ")[2]  # at file:line: Error: <what failed>"
        raise _damaged(directory, INDEX_FILE, f"FAISS cannot read it: {why[:160]}") from None
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise _damaged(directory, INDEX_FILE, f"metric {index.metric_type}, not inner product")
    # an exact index takes neither setting, an IVF nprobe (at most its lists), a refined one k_factor
    fits = split_breadth(index, max(manifest.nprobe, manifest.k_factor)) == (manifest.nprobe, manifest.k_factor)
    if not fits or (manifest.nprobe and manifest.nprobe > extract_nlist(index)):
        raise _damaged(directory, MANIFEST_FILE, f"nprobe {manifest.nprobe} / k_factor {manifest.k_factor} do not "
                       f"fit the {type(index).__name__} in {INDEX_FILE}")
    set_breadth(index, manifest.nprobe, manifest.k_factor)  # what build measured recall at
    return index


def _read_rows(directory: Path):
    """faiss-rows.arrow memory-mapped: an Arrow file of string columns id and source."""
    import pyarrow as pa

    path = directory / ROWS_FILE
    why = not_regular(str(path))
    if why:
        raise _damaged(directory, ROWS_FILE, why)
    try:
        rows = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    except (OSError, pa.ArrowException) as err:
        raise _damaged(directory, ROWS_FILE, f"{type(err).__name__}: {first_line(err, 120)}") from None
    if not all(rows.schema.get_field_index(name) >= 0 and pa.types.is_string(rows.schema.field(name).type)
               for name in ("id", "source")):
        raise _damaged(directory, ROWS_FILE, f"columns {rows.schema.names}, expected id and source strings")
    return rows
