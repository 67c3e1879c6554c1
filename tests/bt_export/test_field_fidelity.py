"""What users bring: checkpoints written by transformers' own save_pretrained (model, image processor, tokenizer) in a
real HF-cache snapshot layout, for every head class; export → bt_runtime → parity against transformers loading
the same snapshot with its own from_pretrained. No hand-written JSON anywhere."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from transformers import (
    BridgeTowerForContrastiveLearning,
    BridgeTowerForImageAndTextRetrieval,
    BridgeTowerForMaskedLM,
    BridgeTowerModel,
    BridgeTowerProcessor,
    RobertaTokenizerFast,
)

from bt_export.configs import TINY_TOKENIZER_DIR
from bt_export.errors import ParityError
from bt_export.export import export_checkpoint
from bt_export.specs import RUNTIME_FP32_BOUNDS
from bt_runtime import BridgeTowerRuntime, TaskUnavailableError, read_manifest

from .checkpoint_dirs import small_config

REVISION = "0123456789abcdef0123456789abcdef01234567"
CASES = [  # head class, weights layout, tokenizer layout
    (BridgeTowerForImageAndTextRetrieval, "safetensors", "tokenizer.json"),
    (BridgeTowerForMaskedLM, "sharded", "vocab+merges"),
    (BridgeTowerForContrastiveLearning, "bin", "tokenizer.json"),
    (BridgeTowerModel, "sharded", "tokenizer.json"),
]


def hf_image_processor(**kwargs):
    """transformers' default BridgeTower image processor class (torchvision backend where installed)."""
    from transformers import BridgeTowerImageProcessor

    return BridgeTowerImageProcessor(**kwargs)


def save_snapshot(cache, repo: str, model_class, weights: str,
                  tokenizer_layout: str, seed: int = 0):
    """models--owner--name/snapshots/<rev>/ + refs/main, everything written by save_pretrained."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / REVISION
    torch.manual_seed(seed)
    model = model_class(small_config()).eval()
    if weights == "sharded":
        model.save_pretrained(snapshot, max_shard_size="1MB")
        assert (snapshot / "model.safetensors.index.json").is_file()
    else:
        model.save_pretrained(snapshot)
    if weights == "bin":  # older checkpoints: a pickled state dict (transformers 5 no longer writes them)
        for file in snapshot.glob("*.safetensors"):
            file.unlink()
        torch.save(model.state_dict(), snapshot / "pytorch_model.bin")
    tokenizer = RobertaTokenizerFast(tokenizer_file=str(TINY_TOKENIZER_DIR / "tokenizer.json"), model_max_length=128)
    processor = BridgeTowerProcessor(hf_image_processor(size={"shortest_edge": 96}, crop_size={"shortest_edge": 96}),
                                     tokenizer)
    processor.save_pretrained(snapshot)
    if tokenizer_layout == "vocab+merges":  # the older hub layout: the BPE files, no tokenizer.json
        (snapshot / "tokenizer.json").unlink()
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(TINY_TOKENIZER_DIR / name, snapshot / name)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(REVISION)
    return snapshot


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hf-cache")


def _photo(photos_dir, name="coco_000000039769.png"):
    with Image.open(photos_dir / name) as image:
        image.load()
        return image.copy()


@pytest.mark.parametrize("model_class,weights,tokenizer_layout", CASES, ids=lambda v: getattr(v, "__name__", v))
def test_transformers_written_snapshot_exports_and_serves(hf_cache, tmp_path, monkeypatch, photos_dir, model_class,
                                                          weights, tokenizer_layout):
    repo = f"someone/bridgetower-{model_class.__name__.lower()}"
    snapshot = save_snapshot(hf_cache, repo, model_class, weights, tokenizer_layout)
    written = snapshot / "processor_config.json"  # transformers 5 nests the image processor here
    written = written if written.is_file() else snapshot / "preprocessor_config.json"
    assert '"resample": 3' in written.read_text()  # PIL's integer code, as transformers writes it
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hf_cache))  # read once at import
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "export"
    result = export_checkpoint(repo, out, parity_images=[photos_dir])  # validates, then loads it with bt_runtime
    manifest = read_manifest(out)
    assert manifest.checkpoint.hub_id == repo and manifest.checkpoint.revision == REVISION
    assert manifest.preprocessing.resize.resample == "bicubic"
    runtime_rows = [r for r in manifest.variants["fp32"].parity.rows if r["check"].startswith("runtime:")]
    assert len(runtime_rows) == 1 and runtime_rows[0]["passed"]  # the committed export was loaded by bt_runtime
    assert result.manifest.reference.image_processor.startswith("BridgeTowerImageProcessor")

    # the reference: transformers itself, loading the same snapshot the way its documentation does
    processor = BridgeTowerProcessor.from_pretrained(snapshot)
    processor.image_processor.do_convert_rgb = True  # without it transformers fails on the RGBA photo itself
    reference = model_class.from_pretrained(snapshot).eval()
    images = [_photo(photos_dir), _photo(photos_dir, "pillow_transparent_dice.png")]
    texts = ["two cats on a couch", "a <mask> on a couch"]
    encoding = processor(images=images, text=texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**encoding)
    runtime = BridgeTowerRuntime.load(out)
    if model_class is BridgeTowerForImageAndTextRetrieval:
        ours = runtime.itm_pairs(images, texts)
        theirs = torch.softmax(expected.logits, -1)[:, 1].numpy()
        assert np.abs(ours - theirs).max() <= RUNTIME_FP32_BOUNDS["itm_probability_abs"]
    elif model_class is BridgeTowerForMaskedLM:
        result = runtime.fill_mask(images[1], texts[1], top_k=1)
        position = result.masks[0].position
        assert result.masks[0].token_ids[0] == int(expected.logits[1, position].argmax())
    elif model_class is BridgeTowerForContrastiveLearning:
        for ours, theirs in ((runtime.embed_images(images), expected.image_embeds),
                             (runtime.embed_texts(texts), expected.text_embeds)):
            cosine = np.sum(ours * theirs.numpy(), -1) / np.linalg.norm(theirs.numpy(), axis=-1)
            assert cosine.min() >= RUNTIME_FP32_BOUNDS["embedding_cosine_min"]
    else:
        with pytest.raises(TaskUnavailableError):
            runtime.itm_scores(images[0], texts)


def test_export_is_not_committed_when_the_runtime_disagrees(tmp_path, monkeypatch, photos_dir):
    """A wrong transparency convention is invisible to graph parity (both sides get transformers' pixels) but not
    to the runtime check on a transparent photo: nothing is written."""
    from bt_export import manifest as manifest_module

    real = manifest_module.alpha_convention
    monkeypatch.setattr(manifest_module, "alpha_convention",
                        lambda processor: {"composite_on_white": "drop_alpha"}.get(real(processor),
                                                                                   "composite_on_white"))
    out = tmp_path / "export"
    with pytest.raises(ParityError, match="bt_runtime, with its own preprocessing.*nothing was written"):
        export_checkpoint("tiny", out, parity_images=[photos_dir / "pillow_transparent_dice.png"])
    assert not out.exists()


def test_manifest_records_the_opset_actually_written(tmp_path, tiny_export):
    """The portable recipe (docs/development.md, "Minimum ONNX Runtime"): `--attention none --opset 17` is written as
    opset 18 and records the lowest ONNX Runtime measured to run it; the default export needs 1.23."""
    out = tmp_path / "export"
    export_checkpoint("tiny", out, attention="none", opset=17, validate=False)
    variant = read_manifest(out).variants["fp32"]
    for graph, entry in variant.files.items():
        model = onnx.load(str(out / entry.file), load_external_data=False)
        written = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        assert entry.opset == written, graph
    assert {e.opset for e in variant.files.values()} == {18} and variant.min_onnxruntime == "1.18.1"
    assert read_manifest(tiny_export).variants["fp32"].min_onnxruntime == "1.23.0"


@pytest.mark.parametrize("value,name", [(3, "bicubic"), (2, "bilinear"), ("BICUBIC", "bicubic"),
                                        ("lanczos", "lanczos")])
def test_resample_codes_and_names(value, name):
    from bt_export.manifest import resample_name

    assert resample_name(value) == name


def test_unknown_resample_is_refused_before_loading_weights(tmp_path):
    from bt_export.errors import CheckpointError
    from bt_export.image_processor import image_processor_kwargs

    config = small_config()
    processor = hf_image_processor(size={"shortest_edge": 96}, crop_size={"shortest_edge": 96}, resample=7)
    processor.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="resample 7"):
        image_processor_kwargs(config, tmp_path)
    hf_image_processor(size={"shortest_edge": 96}, crop_size={"shortest_edge": 288}).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="crop_size 288 does not match the model's vision_config.image_size 96"):
        image_processor_kwargs(config, tmp_path)
    # the older layout, nested: transformers 5's processor_config.json
    (tmp_path / "preprocessor_config.json").unlink()
    tokenizer = RobertaTokenizerFast(tokenizer_file=str(TINY_TOKENIZER_DIR / "tokenizer.json"))
    BridgeTowerProcessor(hf_image_processor(size={"shortest_edge": 96}, crop_size={"shortest_edge": 96}, resample=2),
                         tokenizer).save_pretrained(tmp_path)
    assert image_processor_kwargs(config, tmp_path)["resample"] == 2
