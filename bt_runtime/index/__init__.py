"""Galleries at scale (docs/scale.md): one indexing job, in-process or on Ray Data, writing Parquet shards
(`shards`), embedded by the same per-batch step on both paths (`embed`); a FAISS index built over the shards and
memory-mapped at query time (`faiss_index`). ray, faiss and pyarrow (the `scale` extra) are imported where used, so
`import bt_runtime` works without them."""
