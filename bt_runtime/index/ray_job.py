"""The index job on Ray Data (`bt-run index --ray ADDRESS`): read bytes + decode + preprocess in CPU tasks →
embed in an actor pool (one BridgeTowerRuntime per actor, `Embedder`) → the driver gathers rows by shard and writes
each shard when its last row arrives (the same writer as the in-process job). Ray restarts an actor that dies and
retries its batch (max_restarts / max_task_retries = -1); a row seen twice is kept once, so every input ends up in
exactly one row. docs/scale.md says what scales with what."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BackendError, BtRuntimeError
from .embed import embed, preprocess
from .inputs import Inputs, read_bytes
from .shards import Job, write_shard

LOCAL = "auto"  # --ray auto: RAY_ADDRESS when set, else a Ray started on this machine for the job


@dataclass(frozen=True)
class RayOptions:
    address: str = LOCAL  # "auto", or a cluster: ray://HEAD:10001 (Ray Client) or HEAD:6379
    workers: int = 1  # embedding actors
    cpus_per_worker: float = 1.0  # Ray CPUs each actor holds; also its ONNX Runtime intra-op threads (rounded up)
    gpus_per_worker: float = 0.0  # --device cuda: 1 (or a fraction to share a GPU between actors)
    preprocess_cpus: float = 0.5  # Ray CPUs per decode + preprocess task


class Embedder:
    """Ray Data callable class: one runtime per actor, loaded once, embedding batch after batch."""

    def __init__(self, export_dir: str, precision: str, device: str, threads: int, batch_size: int):
        from ..runtime import BridgeTowerRuntime

        self.runtime = BridgeTowerRuntime.load(export_dir, precision=precision, device=device,
                                               intra_op_threads=threads)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        errors = [str(e) for e in batch["error"]]
        return {"row": batch["row"], "error": batch["error"],
                "embedding": embed(self.runtime, batch["pixels"], errors, self.batch_size)}


def _read_and_preprocess(batch: dict, preprocessor) -> dict:
    ids = [str(i) for i in batch["id"]]
    pixels, errors = preprocess(preprocessor, ids, read_bytes([str(s) for s in batch["source"]]))
    return {"row": batch["row"], "pixels": pixels, "error": np.array(errors, dtype=object)}


def shortfall(options: RayOptions, resources: dict) -> str | None:
    """What the job holds at once beyond what the cluster has, or None. The actors keep their CPUs (and GPUs) for
    the whole job and the decode tasks need `preprocess_cpus` beside them: with less, Ray Data waits for resources
    that never come (a 2-core node with 2 actors × 1 CPU made no progress, no error)."""
    needs = {"CPU": options.workers * options.cpus_per_worker + options.preprocess_cpus,
             "GPU": options.workers * options.gpus_per_worker}
    short = [f"{needs[kind]:g} {kind}s at once ({_terms(options, kind)}), the Ray has {resources.get(kind, 0.0):g}"
             for kind in ("CPU", "GPU") if needs[kind] > resources.get(kind, 0.0) + 1e-9]
    return "; ".join(short) or None


def _terms(options: RayOptions, kind: str) -> str:
    if kind == "GPU":
        return f"--workers {options.workers} × {options.gpus_per_worker:g} GPU each"
    return (f"--workers {options.workers} × --cpus-per-worker {options.cpus_per_worker:g}, + "
            f"{options.preprocess_cpus:g} for decoding")


def check_resources(options: RayOptions, resources: dict, fixed: bool, log=None) -> None:
    """Refuse a job that cannot start on a Ray whose size is known (`fixed`: the local one this job started); on a
    cluster, which may add nodes (an autoscaler), say what it waits for instead."""
    why = shortfall(options, resources)
    if why is None:
        return
    if fixed:
        raise BtRuntimeError(f"--ray {options.address}: the job needs {why} (started on this machine): it would "
                             "wait for them forever; lower --workers or --cpus-per-worker (actors × CPUs each + "
                             f"{options.preprocess_cpus:g} ≤ the cores)")
    if log:
        log(f"warning: the job needs {why}: it waits until the cluster has them (an autoscaler adds nodes; a "
            "fixed cluster never will: lower --workers or --cpus-per-worker)")


def _starts_local(address: str) -> bool:
    """Whether connect(address) starts a Ray on this machine (whose size is then known) rather than joining one."""
    return address == LOCAL and not os.environ.get("RAY_ADDRESS")


def connect(address: str):
    """ray.init for the job: an existing cluster, or (address "auto" without RAY_ADDRESS) a local Ray bound to
    loopback. Returns whether this call started Ray (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    try:
        if _starts_local(address):
            ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        else:
            ray.init(address=None if address == LOCAL else address, log_to_driver=False)
    except ConnectionError as err:
        raise BtRuntimeError(f"--ray {address}: cannot connect to a Ray cluster there ({str(err)[:120]}); give "
                             "ray://HEAD:10001, HEAD:6379 or auto") from None
    return True


@contextlib.contextmanager
def session(options: RayOptions, log=None) -> Iterator[None]:
    """Ray for one job, connected (or started here) and checked to hold the actor pool before the job writes
    anything; shut down afterwards if this started it."""
    import ray

    started = connect(options.address)
    try:
        check_resources(options, ray.cluster_resources(), fixed=started and _starts_local(options.address), log=log)
        yield
    finally:
        if started:
            ray.shutdown()


def run(export_dir: Path, runtime, inputs: Inputs, job: Job, directory: Path, pending: list[int],
        batch_size: int, device: str, options: RayOptions, log=None, embedder=Embedder) -> int:
    """Embed the `pending` shards of `job` into `directory` on Ray; returns the number of images embedded.
    `runtime` is the driver's (its preprocessor is shipped to the CPU tasks; it embeds nothing)."""
    import ray

    started = connect(options.address)  # False inside session(), which then shuts Ray down
    try:
        rows = [{"row": r, "id": inputs.ids[r], "source": inputs.sources[r]} for shard in pending
                for r in range(shard * job.shard_size, min((shard + 1) * job.shard_size, job.count))]
        if not rows:
            return 0
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size, 4096)))
        dataset = dataset.map_batches(_read_and_preprocess, fn_kwargs={"preprocessor": runtime.preprocess},
                                      batch_size=batch_size, batch_format="numpy", num_cpus=options.preprocess_cpus)
        dataset = dataset.map_batches(
            embedder, fn_constructor_kwargs={"export_dir": str(Path(export_dir).absolute()),
                                             "precision": job.precision, "device": device,
                                             "threads": max(1, int(np.ceil(options.cpus_per_worker))),
                                             "batch_size": batch_size},
            batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=options.workers),
            num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker or None,
            max_restarts=-1, max_task_retries=-1)
        return _gather(dataset, inputs, job, directory, pending, log)
    finally:
        if started:
            ray.shutdown()


def _gather(dataset, inputs: Inputs, job: Job, directory: Path, pending: list[int], log) -> int:
    """Rows arrive in any order: keep each shard's rows until it is whole, then write it (once per row)."""
    open_shards: dict[int, dict[int, tuple[np.ndarray, str]]] = {}
    done: set[int] = set()
    written = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for row, embedding, error in zip(batch["row"], batch["embedding"], batch["error"], strict=True):
            shard = int(row) // job.shard_size
            if shard in done:
                continue  # a late copy of a retried batch
            rows = open_shards.setdefault(shard, {})
            rows.setdefault(int(row), (embedding, str(error)))  # a retried batch's second copy is dropped
            start, stop = shard * job.shard_size, min((shard + 1) * job.shard_size, job.count)
            if len(rows) == stop - start:
                order = range(start, stop)
                write_shard(directory, shard, inputs.ids[start:stop], inputs.sources[start:stop],
                            np.stack([rows[r][0] for r in order]), [rows[r][1] for r in order],
                            job.embedding_size)
                del open_shards[shard]
                done.add(shard)
                written += stop - start
                if log:
                    log(f"shard {shard}: {stop - start} images")
    if open_shards:
        raise BackendError(f"the Ray job ended with {len(open_shards)} shard(s) incomplete (first: "
                           f"{min(open_shards)}); rerun the same command to finish them")
    return written
