"""bt-serve's `retrieve` model over an index directory (bt-run index): in-process against
BridgeTowerRuntime.retrieve, then over gRPC and HTTP from a real server started with --index."""

from __future__ import annotations

import numpy as np
import pytest

from bt_serve.models import RequestError, RetrieveModel
from tests.bt_serve.conftest import col

pytest.importorskip("faiss")
pytest.importorskip("pyarrow")


class Request(dict):
    """A request as PyTriton hands it over: inputs by name, `parameters` from the client."""

    def __init__(self, data, parameters=None):
        super().__init__(data)
        self.parameters = parameters


@pytest.fixture(scope="module")
def index_dir(runtime, tiny_export, photos_dir, tmp_path_factory):
    from bt_runtime.index.inputs import from_arguments
    from bt_runtime.index.job import index_images

    output = tmp_path_factory.mktemp("retrieve") / "index"
    index_images(runtime, tiny_export, from_arguments([str(photos_dir)], None, None), output)
    return output


def test_retrieve_model_answers_like_the_runtime(runtime, index_dir):
    model = RetrieveModel(runtime, index_dir)
    [answer] = model([Request({"text": col("two cats").reshape(-1)}, {"top_k": 3, "rerank": 5})])
    hits = runtime.retrieve("two cats", top_k=3, rerank=5, index=index_dir)
    assert [i.decode() for i in answer["image_ids"]] == [h.image_id for h in hits]
    np.testing.assert_allclose(answer["scores"], [h.score for h in hits], rtol=0, atol=1e-6)
    with pytest.raises(RequestError, match="parameter top_k: 0; expected an integer from 1 to 1000"):
        model([Request({"text": col("two cats").reshape(-1)}, {"top_k": 0})])


def test_retrieve_over_grpc_and_http(serve_python, tiny_export, runtime, index_dir):
    from benchmarks.serve_load import serving
    from bt_serve import client as c

    hits = runtime.retrieve("two cats", top_k=4, rerank=6, index=index_dir)
    with serving(tiny_export, serve_python, "--index", str(index_dir)) as server:
        c.wait_ready(server.host, server.http_port, ["retrieve"], timeout_s=120, process=server.process)
        for protocol in ("grpc", "http"):
            module, client = c.connect(protocol, server.host, server.port(protocol))
            ids, scores = c.retrieve(module, client, "two cats", top_k=4, rerank=6)
            assert ids == [h.image_id for h in hits], protocol
            np.testing.assert_allclose(scores, [h.score for h in hits], rtol=0, atol=1e-5)
