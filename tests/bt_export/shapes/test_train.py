"""A few training steps of the shapes recipe: the loss falls; the encoder matches transformers' processor."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bt_export.shapes import data  # noqa: E402 (after the torch skip)
from bt_export.shapes.train import Encoder, Parts, TrainConfig, build_model, build_tokenizer, training_step  # noqa: E402
from bt_export.specs import PREPROCESSING_ABS  # noqa: E402


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    cfg = TrainConfig(hidden_size=64, unimodal_layers=2, cross_layers=1, contrastive_size=32)
    tokenizer = build_tokenizer()
    enc, model = Encoder(tokenizer), build_model(cfg, tokenizer.get_vocab_size()).train()
    parts = Parts(model)
    samples = data.make_samples(0, 16)
    pixels = enc.pixels(np.stack([np.asarray(s.image) for s in samples]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    totals = []
    for _ in range(12):
        losses = training_step(parts, enc, cfg, pixels, [s.scene for s in samples], rng)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        totals.append(loss.item())
    assert np.isfinite(totals).all()
    assert np.mean(totals[-3:]) < 0.8 * np.mean(totals[:3]), totals


def test_encoder_matches_the_hf_processor(tmp_path):
    from bt_export.samples import hf_processor
    from bt_export.shapes.tokenizer import hf_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    hf_tokenizer(str(tmp_path / "tokenizer.json"), 32).save_pretrained(tmp_path / "hf")  # + its special tokens
    samples = data.make_samples(1, 3)
    processor = hf_processor({"size": {"shortest_edge": 64}, "crop_size": {"shortest_edge": 64}, "size_divisor": 32},
                             tmp_path / "hf")
    expected = processor(images=[s.image for s in samples], text=[s.caption for s in samples], padding=True,
                         return_tensors="pt")
    enc = Encoder(tokenizer)
    ids, mask = enc.texts([s.caption for s in samples])
    assert torch.equal(ids, expected["input_ids"]) and torch.equal(mask, expected["attention_mask"])
    pixels = enc.pixels(np.stack([np.asarray(s.image) for s in samples]))
    assert torch.allclose(pixels, expected["pixel_values"], atol=PREPROCESSING_ABS)


def test_the_shape_presence_loss_reaches_the_image_tower_and_is_not_saved():
    torch.manual_seed(0)
    cfg = TrainConfig(hidden_size=64, unimodal_layers=2, cross_layers=1, contrastive_size=32, shape_aux_weight=1.0)
    tokenizer = build_tokenizer()
    enc, model = Encoder(tokenizer), build_model(cfg, tokenizer.get_vocab_size()).train()
    parts = Parts(model)
    samples = data.make_samples(0, 8)
    pixels = enc.pixels(np.stack([np.asarray(s.image) for s in samples]))
    losses = training_step(parts, enc, cfg, pixels, [s.scene for s in samples], np.random.default_rng(0))
    assert set(losses) == {"itc", "itm", "mlm", "shape"} and 0.3 < losses["shape"].item() < 1.5  # BCE of 4 logits
    losses["shape"].backward()
    patch = model.bridgetower.vision_model.visual.embeddings.patch_embedding.weight
    assert patch.grad is not None and patch.grad.abs().sum() > 0
    assert not any(name.startswith("shape_head") for name in model.state_dict())  # a training-only head


def test_vision_pretraining_trains_only_the_vision_tower_and_zero_turns_it_off(monkeypatch):
    from bt_export.shapes import vision_pretrain
    from bt_export.shapes.train import train

    monkeypatch.setattr(vision_pretrain, "POOL", 64)  # one batch: the test only checks the wiring
    cfg = TrainConfig(hidden_size=64, unimodal_layers=2, cross_layers=1, contrastive_size=32, steps=0, pool=8)
    reference = build_model(cfg, build_tokenizer().get_vocab_size()).state_dict()
    states = {}
    for steps in (0, 3):
        model, _, _ = train(TrainConfig(**{**cfg.__dict__, "vision_pretrain_steps": steps}), log=lambda line: None)
        states[steps] = model.state_dict()
        assert list(states[steps]) == list(reference)  # the pre-training head is not in the saved state
    assert all(torch.equal(states[0][k], v) for k, v in reference.items())  # N = 0: no pre-training, weights as built
    patch = "bridgetower.vision_model.visual.embeddings.patch_embedding.weight"
    assert not torch.equal(states[3][patch], reference[patch])
    changed = {k for k, v in reference.items() if not torch.equal(states[3][k], v)}
    assert changed and all(".vision_model." in k or "cross_modal_image_transform" in k or "token_type" in k
                           for k in changed), sorted(changed)[:5]


def test_retrieval_ranks_give_its_recalls_and_a_subset_reruns_the_same_ranks():
    """What the shipped-metrics check relies on: itm_first_relevant follows the recalls, and rerunning some queries
    (itm_queries) gives those queries' ranks."""
    from bt_export.shapes.train import retrieval

    torch.manual_seed(0)
    cfg = TrainConfig(hidden_size=64, unimodal_layers=2, cross_layers=1, contrastive_size=32)
    tokenizer = build_tokenizer()
    parts, enc = Parts(build_model(cfg, tokenizer.get_vocab_size()).eval()), Encoder(tokenizer)
    gallery = data.make_samples(3, 12, split="heldout")
    full = retrieval(parts, enc, gallery, 6)
    ranks = np.array(full["itm_first_relevant"])
    assert ranks.shape == (6,) and all(full["itm"][f"r@{n}"] == round(np.mean(ranks < n), 4) for n in (1, 5, 10))
    subset = retrieval(parts, enc, gallery, 6, itm_queries=[1, 4])
    assert "itm" not in subset and subset["itm_first_relevant"] == ranks[[1, 4]].tolist()
    assert subset["itc"] == full["itc"]


def _small_trained():
    cfg = TrainConfig(hidden_size=64, unimodal_layers=2, cross_layers=1, contrastive_size=32)
    tokenizer = build_tokenizer()
    return cfg, tokenizer, build_model(cfg, tokenizer.get_vocab_size()).eval()


def test_saving_replaces_a_previous_training_whole_and_nothing_else(tmp_path, monkeypatch):
    """scripts/train_reference.py's default --output is the shipped weights: a run without --overwrite, or over a
    directory holding anything training does not write, is refused before training; a save that fails midway
    leaves the previous weights as they were and no staging directory."""
    from bt_export.errors import OutputDirError
    from bt_export.shapes.train import check_output, save

    cfg, tokenizer, model = _small_trained()
    out = tmp_path / "shapes"
    save(model, tokenizer, cfg, out, {"run": 1})
    saved = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in saved and (out / "metrics.json").read_text().startswith('{\n "run": 1')
    with pytest.raises(OutputDirError, match=r"exists \(\d+ entries\); pass --overwrite"):
        check_output(out, overwrite=False)
    assert check_output(out, overwrite=True) == out  # a previous training's output may be replaced

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(type(model), "save_pretrained", crash)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OSError, match="No space left"):
        save(model, tokenizer, cfg, out, {"run": 2}, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no .shapes.partial-* left beside it
    monkeypatch.undo()

    save(model, tokenizer, cfg, out, {"run": 3}, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == saved and '"run": 3' in (out / "metrics.json").read_text()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match=r"holds what training does not write \(notes.txt\)"):
        save(model, tokenizer, cfg, out, {"run": 4}, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and '"run": 3' in (out / "metrics.json").read_text()


def test_the_training_script_refuses_its_output_before_training(tmp_path, monkeypatch, capsys):
    import runpy
    import sys
    from pathlib import Path

    from bt_export.shapes import train

    monkeypatch.setattr(train, "train", lambda cfg: pytest.fail("training started before the output was checked"))
    script = Path(__file__).resolve().parents[3] / "scripts" / "train_reference.py"
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    monkeypatch.setattr(sys, "argv", [str(script), "--output", str(tmp_path / "taken")])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 2 and "pass --overwrite" in capsys.readouterr().err
