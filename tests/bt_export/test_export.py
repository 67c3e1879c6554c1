from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from bt_export import export as export_module
from bt_export.checkpoints import load_checkpoint
from bt_export.cli import app
from bt_export.errors import OutputDirError, ParityError
from bt_export.export import export_checkpoint
from bt_export.model import hf_reference
from bt_export.specs import FP32_TOLERANCES, graph_specs
from bt_runtime.integrity import sha256_file
from bt_runtime.manifest import read_manifest


def test_tiny_export_layout_and_manifest(tiny_export):
    manifest = read_manifest(tiny_export)
    golden = {manifest.golden.image.file, *(t.file for t in manifest.golden.tensors)}
    golden |= {f for i in manifest.golden.inputs for f in (i.image.file, *(t.file for t in i.tensors))}
    assert all(name.startswith("golden.") for name in golden)
    graphs = {f"{g}.onnx" for g in ("vision_tower", "text_tower", "cross_modal", "cross_modal_pooled")}
    assert set(p.name for p in tiny_export.iterdir()) == graphs | {f"{g}.data" for g in graphs} | {
        "tokenizer.json", "tokenizer_config.json", "manifest.json"} | golden
    assert manifest.checkpoint.heads == ["itm", "mlm", "itc"]
    assert manifest.checkpoint.head_classes == ["BridgeTowerModel", "BridgeTowerForImageAndTextRetrieval",
                                                "BridgeTowerForMaskedLM", "BridgeTowerForContrastiveLearning"]
    fp32 = manifest.variants["fp32"]
    assert fp32.parity.passed is True
    for graph, entry in fp32.files.items():
        assert entry.sha256 == sha256_file(tiny_export / entry.file), graph
        assert entry.opset == 23 and not entry.contrib_ops
        # weights beside the graph (ONNX Runtime maps them), hashed like the graph
        [data] = entry.external_data
        assert data.file == f"{entry.file}.data" and data.sha256 == sha256_file(tiny_export / data.file)
        assert (tiny_export / data.file).stat().st_mode & 0o777 == (tiny_export / entry.file).stat().st_mode & 0o777
    # every other file the runtime reads is listed and hashed too
    assert {ref.file for ref in manifest.files} == {"tokenizer.json", "tokenizer_config.json"}
    for ref in manifest.files:
        assert ref.sha256 == sha256_file(tiny_export / ref.file)
    assert manifest.tokenizer.mask_token_id == 514 and manifest.tokenizer.pad_token_id == 1
    assert manifest.preprocessing.image_size == 96
    assert {"torch", "transformers", "onnx", "onnxruntime"} <= set(manifest.versions)
    import transformers

    assert manifest.reference.transformers == transformers.__version__
    assert manifest.reference.image_processor == "BridgeTowerImageProcessorPil"
    assert manifest.reference.conventions["alpha"] == manifest.preprocessing.alpha


def test_graph_io_matches_the_manifest(tiny_export):
    manifest = read_manifest(tiny_export)
    for graph in ("vision_tower", "text_tower", "cross_modal"):
        model = onnx.load(str(manifest.graph_path(graph)), load_external_data=False)
        declared = manifest.graph_io(graph)
        for kind, values in (("inputs", model.graph.input), ("outputs", model.graph.output)):
            actual = [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]
            assert actual == [(t.name, t.shape) for t in getattr(declared, kind)], (graph, kind)


def test_parity_covers_every_graph_and_every_head(tiny_export):
    rows = read_manifest(tiny_export).variants["fp32"].parity.rows
    checks = {(r["check"], r["output"]) for r in rows}
    assert ("e2e:BridgeTowerForImageAndTextRetrieval.logits", "itm_logits") in checks
    assert ("e2e:BridgeTowerForMaskedLM.logits", "mlm_logits") in checks
    assert ("e2e:BridgeTowerForContrastiveLearning.cross_embeds", "cross_embeds") in checks
    assert ("e2e:BridgeTowerModel.pooler_output", "pooler_output") in checks
    assert {c for c, _ in checks if c.startswith("graph:")} == {
        "graph:vision_tower", "graph:text_tower", "graph:cross_modal", "graph:cross_modal_pooled"}
    runtime_rows = [r for r in rows if r["check"].startswith("runtime:")]
    assert [(r["check"], r["metric"], r["passed"]) for r in runtime_rows] == [
        ("runtime:itm_scores", "itm_probability_abs", True)]  # bt_runtime scored a pair before the commit
    for row in rows:
        if row in runtime_rows:
            continue
        assert row["metric"] == "max_abs_diff" and row["passed"] and row["value"] <= row["bound"]
        assert row["bound"] == FP32_TOLERANCES[row["output"]]


def test_graphs_run_at_new_batch_and_length_and_broadcast_one_image(tiny_export):
    """Shapes never seen while tracing: 5 texts of 21 tokens against one image, image_index all zeros."""
    loaded = load_checkpoint("tiny")
    specs = graph_specs(loaded.config, loaded.heads)
    sessions = {g: ort.InferenceSession(str(tiny_export / s.file), providers=["CPUExecutionProvider"])
                for g, s in specs.items()}
    rng = np.random.default_rng(3)
    ids = rng.integers(5, 500, (5, 21)).astype(np.int64)
    ids[:, 0], mask = 0, np.ones_like(ids)
    mask[2, 12:], ids[2, 12:] = 0, 1
    pixels = rng.standard_normal((1, 3, 96, 96)).astype(np.float32)
    image_bridge, _ = sessions["vision_tower"].run(None, {"pixel_values": pixels})
    text_bridge, _ = sessions["text_tower"].run(None, {"input_ids": ids, "attention_mask": mask})
    outputs = sessions["cross_modal"].run(None, {"text_bridge": text_bridge, "image_bridge": image_bridge,
                                                 "attention_mask": mask, "image_index": np.zeros(5, np.int64)})
    with torch.no_grad():
        expected = hf_reference(loaded.model, "itm")(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
            pixel_values=torch.from_numpy(pixels).expand(5, -1, -1, -1)).logits.numpy()
    np.testing.assert_allclose(outputs[1], expected, atol=specs["cross_modal"].output("itm_logits").tolerance, rtol=0)


def test_existing_output_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="--overwrite"):
        export_checkpoint("tiny", out)
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_interrupted_export_leaves_nothing_half_written(tmp_path, monkeypatch, interrupt):
    out = tmp_path / "export"
    real_export_graph = export_module.export_graph
    calls = []

    def failing_second_graph(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise interrupt
        return real_export_graph(*args, **kwargs)

    monkeypatch.setattr(export_module, "export_graph", failing_second_graph)
    with pytest.raises(type(interrupt) if isinstance(interrupt, Exception) else interrupt):
        export_checkpoint("tiny", out, validate=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary sibling directory is gone too


def test_missing_parent_directories_are_created(tmp_path):
    out = tmp_path / "exports" / "nested" / "tiny"
    export_checkpoint("tiny", out, validate=False)
    assert (out / "manifest.json").is_file()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputDirError, match="is not a directory"):
        export_checkpoint("tiny", blocker / "tiny", validate=False)


def test_overwrite_replaces_a_previous_export_atomically(portable_export, tmp_path):
    out = tmp_path / "export"
    shutil.copytree(portable_export, out)  # an earlier export with fp16 (and int8) variants
    assert (out / "vision_tower.fp16.onnx").is_file()
    before = (out / "manifest.json").stat().st_ino
    export_checkpoint("tiny", out, overwrite=True, validate=False)
    assert (out / "manifest.json").stat().st_ino != before
    assert not (out / "vision_tower.fp16.onnx").exists()  # the old export was replaced whole, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_parity_failure_raises_and_writes_nothing(tmp_path, monkeypatch):
    """A deliberately broken graph (one weight changed after the references) must fail parity."""
    real = export_module.export_graph

    def export_with_corrupted_pooler(model, spec, inputs, out_dir, opset, attention):
        if spec.name == "cross_modal":
            with torch.no_grad():
                model.bridgetower.cross_modal_text_pooler.dense.bias.add_(0.01)
        return real(model, spec, inputs, out_dir, opset, attention)

    monkeypatch.setattr(export_module, "export_graph", export_with_corrupted_pooler)
    out = tmp_path / "export"
    with pytest.raises(ParityError) as err:
        export_checkpoint("tiny", out)
    failed = {(r.check, r.output) for r in err.value.rows["fp32"] if not r.passed}
    assert ("graph:cross_modal", "pooler_output") in failed
    assert ("e2e:BridgeTowerForImageAndTextRetrieval.logits", "itm_logits") in failed
    assert not out.exists()


def test_cli_tiny_prints_the_parity_table(tmp_path):
    result = CliRunner().invoke(app, ["--checkpoint", "tiny", "--output", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert "e2e:BridgeTowerForImageAndTextRetrieval.logits" in result.output
    assert read_manifest(tmp_path / "t").variants["fp32"].parity.passed


@pytest.mark.parametrize("args,message", [
    (["--checkpoint", "bridgetower-huge"], "neither a known alias"),
    (["--checkpoint", "base", "--random-init", "--tokenizer", "/nonexistent"], "--tokenizer"),
    (["--parity-images", "/nonexistent.png"], "'/nonexistent.png': No such file or directory"),
    (["--attention", "flash"], "valid: none, onnx, ort"),
    (["--opset", "99"], "--opset 99; valid: 17 to 23"), (["--opset", "0", "--attention", "none"], "--opset 0; valid"),
    (["--precision", "fp32,int4"], "valid: a comma list of fp32, fp16, int8"),
    (["--opset", "20"], "needs --opset ≥ 23"),
    (["--checkpoint", "tiny", "--revision", "v1"], "--revision 'v1' picks a commit of a hub checkpoint"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, args, message):
    result = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "t")])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "t").exists()
