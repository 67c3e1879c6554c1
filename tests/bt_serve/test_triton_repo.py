"""`bt-run triton-repo`: the repository's configs parse with Triton's own model-config protobuf (tritonclient), the
ensemble's wiring is consistent, and running its steps with ONNX Runtime reproduces the export's golden ITM logits,
also for requests merged the way Triton's dynamic batcher merges them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from bt_export.specs import SAME_GRAPH_ABS
from bt_runtime import BridgeTowerRuntime, BtRuntimeError, read_manifest
from bt_runtime.cli import app
from bt_runtime.golden import read
from bt_serve.triton_repo import simulate_itm, validate, write

pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="module")
def repo(tiny_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton") / "repo"
    assert write(tiny_export, out) == ["vision_tower", "text_tower", "cross_modal", "cross_modal_pooled", "itm"]
    return out


def _golden(tiny_export):
    manifest = read_manifest(tiny_export)
    return {t.name: read(manifest, t) for t in manifest.golden.tensors}


def test_every_config_parses_and_the_ensemble_is_wired(repo):
    configs = validate(repo)
    assert set(configs) == {"vision_tower", "text_tower", "cross_modal", "cross_modal_pooled", "itm"}
    for name in ("cross_modal", "cross_modal_pooled"):
        assert configs[name].max_batch_size == 16 and configs[name].backend == "onnxruntime"
        assert [i.name for i in configs[name].input] == ["text_bridge", "image_bridge", "attention_mask"]
    assert "mlm_logits" not in [o.name for o in configs["cross_modal_pooled"].output]
    assert configs["itm"].platform == "ensemble"
    # ITM through the head-specific graph: no MLM head, the last layer at the class positions
    assert [s.model_name for s in configs["itm"].ensemble_scheduling.step] == ["vision_tower", "text_tower",
                                                                              "cross_modal_pooled"]


def test_the_ensemble_reproduces_the_golden_logits(repo, tiny_export):
    golden = _golden(tiny_export)
    texts = golden["input_ids"].shape[0]
    pixels = np.repeat(golden["pixel_values"][None], texts, axis=0)  # paired: one image row per text
    out = simulate_itm(repo, {"pixel_values": pixels, "input_ids": golden["input_ids"],
                              "attention_mask": golden["attention_mask"]})
    tolerance = next(t.tolerance for t in read_manifest(tiny_export).golden.tensors if t.name == "itm_logits")
    np.testing.assert_allclose(out["itm_logits"], golden["itm_logits"], atol=tolerance)  # what bt-run verify allows


def test_merged_requests_pair_each_image_with_its_own_text(repo, tiny_export, photos_dir):
    """Two requests with different images, merged into one batch as Triton's batcher would: each pair keeps its
    own image (a per-request image_index of 0 would have given both the first image)."""
    with BridgeTowerRuntime.load(tiny_export) as runtime:
        photos = sorted(photos_dir.iterdir())[:2]
        pixels = np.stack([runtime.preprocess.pixel_values(p) for p in photos])
        encoded = runtime.tokenizer(["two cats on a couch", "two cats on a couch"])
        expected = runtime.itm_pairs(photos, ["two cats on a couch"] * 2)
    out = simulate_itm(repo, {"pixel_values": pixels, "input_ids": encoded.input_ids,
                              "attention_mask": encoded.attention_mask})
    logits = out["itm_logits"]
    probabilities = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
    np.testing.assert_allclose(probabilities, expected, atol=SAME_GRAPH_ABS)
    assert abs(expected[0] - expected[1]) > 100 * SAME_GRAPH_ABS  # the images score differently: a swap would fail


def test_a_broken_config_is_refused_naming_the_file(repo, tmp_path):
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    path = copy / "text_tower" / "config.pbtxt"
    path.write_text(path.read_text().replace("TYPE_INT64", "TYPE_INT65", 1))
    with pytest.raises(BtRuntimeError, match="text_tower/config.pbtxt: not a valid Triton model config"):
        validate(copy)
    path.write_text(path.read_text().replace("TYPE_INT65", "TYPE_INT64").replace('name: "attention_mask"',
                                                                                  'name: "mask"'))
    with pytest.raises(BtRuntimeError, match="step text_tower maps inputs.*declares"):
        validate(copy)


def test_existing_directories_are_never_clobbered(tiny_export, repo, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(BtRuntimeError, match="not a repository written by bt-run triton-repo"):
        write(tiny_export, foreign)
    assert (foreign / "notes.txt").read_text() == "keep"
    own = tmp_path / "own"
    write(tiny_export, own)
    with pytest.raises(BtRuntimeError, match="pass --overwrite"):
        write(tiny_export, own)
    (own / "extra.txt").write_text("user file")
    with pytest.raises(BtRuntimeError, match="entries bt-run did not write: \\['extra.txt'\\]"):
        write(tiny_export, own, overwrite=True)
    (own / "extra.txt").unlink()
    write(tiny_export, own, overwrite=True, max_batch=4)
    assert validate(own)["itm"].max_batch_size == 4


def test_cli_writes_and_reports(tiny_export, tmp_path):
    out = tmp_path / "cli-repo"
    result = CliRunner().invoke(app, ["triton-repo", str(tiny_export), str(out), "--instances", "2", "--gpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["models"][-1] == "itm"
    assert validate(out)["vision_tower"].instance_group[0].count == 2
    bad = CliRunner().invoke(app, ["triton-repo", str(tiny_export), str(tmp_path / "x"), "--precision", "int3"])
    assert bad.exit_code == 2 and "precision 'int3'" in bad.output
    assert not (tmp_path / "x").exists()
    for option, value, says in (("--queue-delay-us", -5, "queue_delay_us must be an integer ≥ 0, got -5"),
                                ("--max-batch", 0, "max_batch must be a positive integer, got 0")):
        bad = CliRunner().invoke(app, ["triton-repo", str(tiny_export), str(tmp_path / "x"), option, str(value)])
        assert bad.exit_code == 2 and says in bad.output and ".partial" not in bad.output, bad.output
        assert not (tmp_path / "x").exists()
