"""`bt-run index` as one library call: resolve the inputs, open (or resume) the job directory, embed the pending
shards in-process or on Ray, then build the FAISS index over the shards."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..errors import BtRuntimeError
from ..features import check_positive
from . import faiss_index, shards
from .inputs import Inputs


def index_images(runtime, export_dir: Path, inputs: Inputs, output: Path, *, batch_size: int = 16,
                 shard_size: int = shards.DEFAULT_SHARD_SIZE, device: str = "cpu", ray=None,
                 memory_bytes: int = int(faiss_index.DEFAULT_MEMORY_GIB * 2**30), overwrite: bool = False,
                 log=None) -> dict:
    """Embed `inputs` into shards under `output` (resuming a previous run of the same job), then index them.
    ray: a ray_job.RayOptions to run on Ray, None for in-process. Returns a summary."""
    for name, value in (("--batch-size", batch_size), ("--shard-size", shard_size), ("memory_bytes", memory_bytes)):
        check_positive(value, name)  # memory_bytes here, not after every image is embedded
    if "itc" not in runtime.heads:
        raise BtRuntimeError(f"{export_dir}: this export has no ITC heads (contrastive embeddings); an index needs "
                             "them (export a contrastive checkpoint such as bridgetower-large-itm-mlm-itc)")
    precision = runtime.backend.precision
    job = shards.Job(shards.JOB_FORMAT, f"--{inputs.kind} {inputs.spec}", inputs.fingerprint(), len(inputs.ids),
                     shard_size, precision, shards.towers_sha256(runtime, precision),
                     runtime.manifest.config.contrastive_hidden_size)
    with contextlib.ExitStack() as on_ray:
        if ray is not None:  # Ray connected and checked to fit the actor pool before the job makes or deletes a file
            from . import ray_job

            on_ray.enter_context(ray_job.session(ray, log))
        with shards.job_lock(output, log):  # held until the index is built: a second job here is refused meanwhile
            pending = shards.open_job(output, job, overwrite)
            if log and len(pending) < job.shards:
                log(f"resuming: {job.shards - len(pending)} of {job.shards} shards already written")
            if ray is None:
                from . import local

                embedded = local.run(runtime, inputs, job, output, pending, batch_size, log)
            else:
                embedded = ray_job.run(export_dir, runtime, inputs, job, output, pending, batch_size, device, ray, log)
            on_ray.close()  # the index build below needs none of Ray's processes
            previous = faiss_index.read_manifest(output) if not embedded else None
            if previous is not None and previous.memory_budget_bytes == memory_bytes:
                built = previous  # a rerun of a finished job: the index over the same shards is already there
            else:
                built = faiss_index.build(output, memory_bytes, log=log)
            table = shards.read_shards(output, job)
    errors = [e for e in table.column("error").to_pylist() if e]
    return {"output": str(output), "images": job.count, "embedded_now": embedded, "shards": job.shards,
            "errors": len(errors), "first_errors": errors[:5], "factory": built.factory,
            "recall_at_10": built.recall_at_10}
