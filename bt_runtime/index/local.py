"""The in-process index job (the default of `bt-run index`): shard after shard, read → preprocess → embed → write,
with the same steps (`embed`) and shard format (`shards`) as the Ray job."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .embed import embed, preprocess
from .inputs import Inputs, read_bytes
from .shards import Job, write_shard


def run(runtime, inputs: Inputs, job: Job, directory: Path, pending: list[int], batch_size: int,
        log=None) -> int:
    """Embed the `pending` shards of `job` into `directory`; returns the number of images embedded."""
    done = 0
    for number, shard in enumerate(pending):
        start, stop = shard * job.shard_size, min((shard + 1) * job.shard_size, job.count)
        ids, sources = inputs.ids[start:stop], inputs.sources[start:stop]
        embeddings, errors = [], []
        for first in range(0, len(ids), batch_size):  # a batch at a time: a shard's pixels never all in memory
            chunk_ids = ids[first:first + batch_size]
            pixels, chunk_errors = preprocess(runtime.preprocess, chunk_ids,
                                              read_bytes(sources[first:first + batch_size]))
            embeddings.append(embed(runtime, pixels, chunk_errors, batch_size))
            errors += chunk_errors
        write_shard(directory, shard, ids, sources, np.concatenate(embeddings), errors, job.embedding_size)
        done += len(ids)
        if log:
            log(f"shard {shard} ({number + 1}/{len(pending)}): {len(ids)} images, "
                f"{sum(1 for e in errors if e)} errors")
    return done
