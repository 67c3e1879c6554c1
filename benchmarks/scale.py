"""Scale benchmarks (`bt-bench EXPORT --scenario index|search`, docs/scale.md): the index job's images/s
in-process vs on Ray (1 and 2 actors, actors × threads = the cores), and FAISS on random unit vectors of the
export's embedding size (build time, index size, single-query p50/p99 from the memory-mapped index, recall@10 vs
exact on fresh random queries), plus two-stage retrieval through an index directory vs brute-force ITM."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .machine import cpu_info, versions

SCALE_SCENARIOS = ("index", "search")


def _gallery(folder: Path, count: int, seed: int = 11) -> list[str]:
    from bt_export.shapes.data import make_samples

    samples = make_samples(seed, count, image_size=64, split="heldout")
    for sample in samples:
        sample.image.save(folder / f"shape{sample.index:05d}.png")
    return [s.caption for s in samples]


def _job(runtime, inputs, output: Path, shard_size: int):
    from bt_runtime.index import shards

    job = shards.Job(shards.JOB_FORMAT, "bench", inputs.fingerprint(), len(inputs.ids), shard_size,
                     runtime.backend.precision, shards.towers_sha256(runtime, runtime.backend.precision),
                     runtime.manifest.config.contrastive_hidden_size)
    return job, shards.open_job(output, job, overwrite=True)


def index_benchmark(export_dir: Path, images: int | list[int], batch_size: int = 16, rounds: int = 1,
                    log=print) -> dict:
    """images/s of the index job: in-process (all cores) vs Ray Data with 1 actor × cores threads and
    cores actors × 1 thread, on each gallery size of `images`, `rounds` times, interleaved (the paths rotate and the
    sizes alternate round by round, so that other work on the machine falls on all of them). One Ray for all the
    runs: its start-up is reported apart, and each Ray path runs once untimed first (Ray's first jobs start its
    worker processes). Each Ray run still starts its actors (model load included), which the marginal rate
    between two sizes cancels (`marginal`). `max_abs_diff`: each run's embeddings against the first run of its
    size (the paths must agree within 1e-6, tests/bt_runtime/index/test_ray_job.py)."""
    import ray

    from bt_runtime import BridgeTowerRuntime
    from bt_runtime.index import shards

    sizes = sorted({images} if isinstance(images, int) else set(images))
    if rounds < 1 or not sizes or sizes[0] < 1:
        raise ValueError(f"index benchmark: need gallery sizes ≥ 1 and rounds ≥ 1, got images={images!r}, "
                         f"rounds={rounds!r}")
    cores = os.cpu_count() or 1
    paths = [(0, cores)] + [(actors, max(1, cores // actors)) for actors in sorted({1, cores})]
    rows, reference = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        with BridgeTowerRuntime.load(export_dir, intra_op_threads=cores) as runtime:
            runtime.encode_pixels(np.zeros((1, 3, runtime.preprocess.image_size, runtime.preprocess.image_size),
                                           np.float32))  # sessions made before timing
            galleries = {size: _gallery_inputs(Path(tmp) / f"gallery{size}", size) for size in sizes}
            started = time.perf_counter()
            ray.init(num_cpus=cores, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
            ray_start = time.perf_counter() - started
            try:
                warmup = _gallery_inputs(Path(tmp) / "warmup", batch_size)
                for actors, threads in paths[1:]:  # Ray's first jobs also start its worker processes: untimed
                    _index_once(export_dir, runtime, warmup, Path(tmp) / f"warmup{actors}", batch_size, actors,
                                threads, cores)
                for turn in range(rounds):
                    for size in sizes if turn % 2 == 0 else sizes[::-1]:
                        for actors, threads in paths[turn % len(paths):] + paths[:turn % len(paths)]:
                            output = Path(tmp) / f"run{len(rows)}"  # a fresh job: the same one would resume
                            seconds = _index_once(export_dir, runtime, galleries[size], output, batch_size,
                                                  actors, threads, cores)
                            embeddings = shards.embeddings_of(shards.read_shards(output))[1]  # (N, E)
                            first = reference.setdefault(size, embeddings)  # the first run of this size
                            rows.append({"path": "ray" if actors else "in-process", "actors": actors,
                                         "threads": threads, "images": size, "round": turn, "seconds": seconds,
                                         "images_per_s": size / seconds,
                                         "max_abs_diff": float(np.abs(embeddings - first).max())})
                            shutil.rmtree(output)
                            log(f"round {turn}, {size} images, {rows[-1]['path']} {actors or 1} × {threads}: "
                                f"{size / seconds:.2f} images/s")
            finally:
                ray.shutdown()
    for row in rows:
        base = next(r for r in rows if r["path"] == "in-process" and (r["images"], r["round"])
                    == (row["images"], row["round"]))
        row["vs_in_process"] = row["images_per_s"] / base["images_per_s"]
    return {"scenario": "index", "export": str(export_dir), "images": sizes, "rounds": rounds,
            "batch_size": batch_size, "cores": cores, "ray_start_s": ray_start, "rows": rows,
            "marginal": _marginal(rows, sizes, rounds)}


def _gallery_inputs(folder: Path, count: int):
    from bt_runtime.index.inputs import from_arguments

    folder.mkdir()
    _gallery(folder, count)
    return from_arguments([str(folder)], None, None)


def _index_once(export_dir: Path, runtime, inputs, output: Path, batch_size: int, actors: int, threads: int,
                cores: int) -> float:
    """Seconds of one index job over `inputs`: in-process (actors 0) or on the running Ray."""
    from bt_runtime.index import local, ray_job

    shard_size = max(1, len(inputs.ids) // 8)
    job, pending = _job(runtime, inputs, output, shard_size)
    started = time.perf_counter()
    if not actors:
        local.run(runtime, inputs, job, output, pending, batch_size)
    else:
        # decode tasks take a sliver of a CPU: the actors hold the cores, as in-process does
        options = ray_job.RayOptions(workers=actors, cpus_per_worker=threads * 0.9,
                                     preprocess_cpus=0.1 * cores / actors / 2)
        ray_job.run(export_dir, runtime, inputs, job, output, pending, batch_size, "cpu", options)
    return time.perf_counter() - started


def _marginal(rows: list[dict], sizes: list[int], rounds: int) -> list[dict]:
    """Per path, images/s between the smallest and the largest gallery (times summed over the rounds): the fixed
    cost of a run (a Ray run's actor start and model load) cancels. `fixed_s`: what a run costs beyond that rate
    (the smallest gallery's mean time minus its images at the marginal rate). Per-round ratios show the spread."""
    if len(sizes) < 2:
        return []
    low, high = sizes[0], sizes[-1]
    out = []
    for path, actors, threads in dict.fromkeys((r["path"], r["actors"], r["threads"]) for r in rows):
        mine = [r for r in rows if (r["path"], r["actors"]) == (path, actors)]

        def seconds(size, turn=None, mine=mine):  # summed over the rounds, or of round `turn`
            return sum(r["seconds"] for r in mine if r["images"] == size and (turn is None or r["round"] == turn))

        rate = rounds * (high - low) / (seconds(high) - seconds(low))
        per_round = [(high - low) / (seconds(high, t) - seconds(low, t)) for t in range(rounds)]
        out.append({"path": path, "actors": actors, "threads": threads, "images_per_s": rate,
                    "per_actor_images_per_s": rate / max(1, actors), "per_round_images_per_s": per_round,
                    "fixed_s": seconds(low) / rounds - low / rate})
    base = next(row for row in out if row["path"] == "in-process")
    for row in out:
        row["vs_in_process"] = row["images_per_s"] / base["images_per_s"]
        row["per_round_vs_in_process"] = [a / b for a, b in zip(row["per_round_images_per_s"],
                                                                base["per_round_images_per_s"], strict=True)]
    return out


def _unit(rng, count: int, dim: int) -> np.ndarray:
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, 100_000):  # in blocks: one float64 copy of 10^6 × 512 is 4 GB
        block = rng.standard_normal((min(100_000, count - start), dim), dtype=np.float32)
        out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _clustered(rng, count: int, dim: int, centres: np.ndarray, spread: float = 0.02) -> np.ndarray:
    """Unit vectors around `centres` (per-dimension noise `spread`: cosine to the centre ≈ 0.9 at dim 512; at 0.05,
    ≈ 0.66, and IVF needed every list), a stand-in for real embeddings, which cluster; random unit vectors have no
    structure an ANN index can use."""
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        block = centres[rng.integers(len(centres), size=n)] + spread * rng.standard_normal((n, dim), dtype=np.float32)
        out[start:start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _exact(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    best = []
    for q in queries:
        scores = vectors @ q  # (N,)
        top = np.argpartition(-scores, k)[:k]
        best.append(top[np.argsort(-scores[top])])
    return np.array(best)


def search_benchmark(dim: int, sizes: list[int], queries: int = 200, factories: list[str] | None = None,
                     kinds: tuple[str, ...] = ("random", "clustered"), include_chosen: bool = True,
                     log=print) -> dict:
    """Per data kind, size and factory: build s, file MB, p50/p99 ms per single query (memory-mapped index),
    recall@10 vs exact. `random`: unit vectors (no structure: the worst case for ANN); `clustered`: around 10^4
    centres (`_clustered`). The chosen factory is the one `bt-run index` builds (faiss_index.build's rule)."""
    import faiss

    from bt_runtime.index import faiss_index

    rng = np.random.default_rng(0)
    rows = []
    for kind in kinds:
        for size in sizes:
            if kind == "random":
                vectors, probes = _unit(rng, size, dim), _unit(rng, queries, dim)
            else:
                centres = _unit(rng, 10_000, dim)
                vectors, probes = _clustered(rng, size, dim, centres), _clustered(rng, queries, dim, centres)
            truth = _exact(vectors, probes, 10)
            budget = int(faiss_index.DEFAULT_MEMORY_GIB * 2**30)
            chosen = faiss_index.choose_factory(size, dim, budget)
            if include_chosen:  # what `bt-run index` keeps (faiss_index.train_for: IVF may give way to another)
                rows.append(_measure(faiss, faiss_index, kind, vectors, probes, truth, chosen, rng, log, budget))
            for factory in dict.fromkeys(f for f in factories or [] if not (include_chosen and f == chosen)):
                rows.append(_measure(faiss, faiss_index, kind, vectors, probes, truth, factory, rng, log))
            del vectors
    return {"scenario": "search", "dim": dim, "queries": queries, "faiss_threads": faiss.omp_get_max_threads(),
            "rows": rows}


def _measure(faiss, faiss_index, kind, vectors, probes, truth, factory, rng, log, budget: int | None = None) -> dict:
    """One factory as given, or with `budget` the index `bt-run index` ends with when it chose `factory`."""
    size, dim = vectors.shape
    started = time.perf_counter()
    if budget is None:
        index, breadth, build_recall, _ = faiss_index.train_and_add(vectors, factory, rng)
    else:
        index, factory, breadth, build_recall, _ = faiss_index.train_for(vectors, factory, budget, rng, log)
    build_s = time.perf_counter() - started
    nprobe, k_factor = faiss_index.split_breadth(index, breadth)
    nlist = faiss_index.extract_nlist(index) if nprobe else 0
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "faiss.index")
        faiss.write_index(index, path)
        del index
        size_mb = Path(path).stat().st_size / 2**20
        flags = faiss_index.mmap_flags(faiss, factory)
        mapped = faiss.read_index(path, flags | faiss.IO_FLAG_READ_ONLY)
        faiss_index.set_breadth(mapped, nprobe, k_factor)
        mapped.search(probes[:5], 10)  # page in
        found, times = [], []
        for q in probes:
            started = time.perf_counter()
            found.append(mapped.search(q[None], 10)[1][0])
            times.append(time.perf_counter() - started)
        del mapped
    recall = faiss_index.recall_at(np.array(found), truth)
    row = {"data": kind, "vectors": size, "dim": dim, "factory": factory, "chosen": budget is not None,
           "nprobe": nprobe, "nlist": nlist, "k_factor": k_factor, "build_s": build_s, "file_mb": size_mb,
           "p50_ms": 1e3 * float(np.percentile(times, 50)), "p99_ms": 1e3 * float(np.percentile(times, 99)),
           "recall_at_10": recall,
           "build_recall_at_10": build_recall}
    log(f"{kind} {size} × {dim} {factory}: build {build_s:.1f} s, p50 {row['p50_ms']:.2f} ms, "
        f"recall@10 {recall:.3f} (nprobe {nprobe}/{nlist}, k_factor {k_factor})")
    return row


def two_stage_benchmark(export_dir: Path, gallery: int, queries: int, rerank: int, log=print) -> dict:
    """Two-stage retrieval through an index directory vs brute-force ITM over the gallery's precomputed
    bridges: ms per query and agreement of the top-1 / top-10."""
    from bt_runtime import BridgeTowerRuntime
    from bt_runtime.index.inputs import from_arguments
    from bt_runtime.index.job import index_images
    from bt_runtime.index.search import retrieve_from_index

    with tempfile.TemporaryDirectory() as tmp, BridgeTowerRuntime.load(export_dir) as runtime:
        folder = Path(tmp) / "gallery"
        folder.mkdir()
        captions = _gallery(folder, gallery)
        started = time.perf_counter()
        index_images(runtime, export_dir, from_arguments([str(folder)], None, None), Path(tmp) / "index")
        index_s = time.perf_counter() - started
        files = sorted(str(p.absolute()) for p in folder.iterdir())
        features = runtime.encode_images(files)
        two, brute, top1, top10 = [], [], [], []
        for caption in captions[:queries]:
            started = time.perf_counter()
            hits = retrieve_from_index(runtime, caption, Path(tmp) / "index", 10, rerank, 16)
            two.append(time.perf_counter() - started)
            started = time.perf_counter()
            text = runtime.encode_texts([caption])
            scores = runtime.match_probabilities(text, features, np.zeros(len(files), np.int64),
                                                 np.arange(len(files)))
            brute.append(time.perf_counter() - started)
            best = [files[i] for i in np.lexsort((np.arange(len(files)), scores))[::-1][:10]]
            got = [h.image_id for h in hits]
            top1.append(got[0] == best[0])
            top10.append(len(set(got) & set(best)) / 10)
    row = {"export": str(export_dir), "gallery": gallery, "queries": queries, "rerank": rerank, "index_s": index_s,
           "two_stage_p50_ms": 1e3 * float(np.median(two)), "brute_force_p50_ms": 1e3 * float(np.median(brute)),
           "top1_agreement": float(np.mean(top1)), "top10_overlap": float(np.mean(top10))}
    log(f"two-stage {row['two_stage_p50_ms']:.1f} ms vs brute force {row['brute_force_p50_ms']:.1f} ms per query")
    return row


def machine() -> dict:
    return {"cpu": cpu_info(), "versions": versions()}


def markdown(report: dict) -> str:
    """The report's tables (one per scenario present)."""
    m = report["machine"]
    lines = [f"# bt-bench: {', '.join(report['scenarios'])}", "",
             f"Machine: {m['cpu']['model']}, {m['cpu']['logical_cores']} logical cores, flags "
             f"{', '.join(m['cpu']['flags'])}; {report.get('note', '')}",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v), ""]
    if "index" in report:
        r = report["index"]
        sizes = r["images"] if isinstance(r["images"], list) else [r["images"]]
        lines += [f"## Index job: {', '.join(map(str, sizes))} generated images, {r['export']}, batch "
                  f"{r['batch_size']}, {r.get('rounds', 1)} round(s) interleaved", "",
                  f"Ray start-up (once, not in the rows): {r['ray_start_s']:.1f} s", "",
                  "| round | images | path | actors × threads | s | images/s | vs in-process | max abs diff |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {x.get('round', 0)} | {x.get('images', r['images'])} | {x['path']} | {x['actors'] or 1} × "
                  f"{x['threads']} | {x['seconds']:.1f} | {x['images_per_s']:.2f} | {x['vs_in_process']:.2f} | "
                  f"{x.get('max_abs_diff', float('nan')):.1e} |" for x in r["rows"]]
        lines.append("")
        if r.get("marginal"):
            lines += [f"### Marginal rate ({sizes[0]:,} → {sizes[-1]:,} images: a run's fixed cost cancels)", "",
                      "| path | actors × threads | images/s | per actor | vs in-process | per round | fixed s |",
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {x['path']} | {x['actors'] or 1} × {x['threads']} | {x['images_per_s']:.2f} | "
                      f"{x['per_actor_images_per_s']:.2f} | {x['vs_in_process']:.2f} | "
                      f"{', '.join(f'{v:.2f}' for v in x['per_round_vs_in_process'])} | {x['fixed_s']:.1f} |"
                      for x in r["marginal"]]
            lines.append("")
    if "search" in report:
        r = report["search"]
        lines += [f"## FAISS on unit vectors, dim {r['dim']}: {r['queries']} single queries from the "
                  f"memory-mapped index, {r['faiss_threads']} FAISS threads", "",
                  "| data | vectors | factory | what `bt-run index` builds | nprobe / lists | k_factor | build s | "
                  "file MB | p50 ms | p99 ms | recall@10 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {x['data']} | {x['vectors']:,} | {x['factory']} | {'yes' if x['chosen'] else ''} | "
                  f"{x['nprobe']} / {x['nlist']} | {x.get('k_factor', 0)} | "
                  f"{x['build_s']:.1f} | {x['file_mb']:.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | "
                  f"{x['recall_at_10']:.3f} |" for x in r["rows"]]
        lines.append("")
    if "two_stage" in report:
        x = report["two_stage"]
        lines += [f"## Two-stage retrieval through an index directory vs brute-force ITM: {x['export']}", "",
                  "| gallery | queries | rerank | index s | two-stage p50 ms | brute force p50 ms | top-1 agreement "
                  "| top-10 overlap |", "|---|---|---|---|---|---|---|---|",
                  f"| {x['gallery']} | {x['queries']} | {x['rerank']} | {x['index_s']:.1f} | "
                  f"{x['two_stage_p50_ms']:.1f} | {x['brute_force_p50_ms']:.1f} | {x['top1_agreement']:.2f} | "
                  f"{x['top10_overlap']:.2f} |", ""]
    return "\n".join(lines)


def run_scale(export_dir: Path, chosen: list[str], images: int, sizes: list[int], dim: int | None,
              factories: list[str], log=print) -> dict:
    """`bt-bench EXPORT --scenario index|search`: the report dict (see `markdown`)."""
    from bt_runtime.manifest import read_manifest

    load = os.getloadavg()[0]  # other work on the machine: a load above the core count means contended numbers
    report = {"scenarios": chosen, "machine": machine(),
              "note": f"load average {load:.1f} on {os.cpu_count()} cores at the start"
                      f"{' (contended: other work shared the machine)' if load > (os.cpu_count() or 1) else ''}"}
    if "index" in chosen:
        report["index"] = index_benchmark(export_dir, images, log=log)
    if "search" in chosen:
        size = dim or read_manifest(export_dir).config.contrastive_hidden_size
        report["search"] = search_benchmark(size, sizes, factories=factories, log=log)
        report["two_stage"] = two_stage_benchmark(export_dir, min(images, 500), 20, 20, log=log)
    return report
