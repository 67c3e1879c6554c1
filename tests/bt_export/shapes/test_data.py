"""The shapes generator: deterministic per seed, splits apart, negatives one attribute away, captions parse."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from bt_export.shapes import data


def _pixels(samples):
    return [np.asarray(s.image) for s in samples]


def test_same_seed_same_samples_and_prefix_property():
    a, b = data.make_samples(3, 20), data.make_samples(3, 30)
    assert [s.caption for s in a] == [s.caption for s in b[:20]]
    assert all(np.array_equal(x, y) for x, y in zip(_pixels(a), _pixels(b), strict=False))
    assert [s.caption for s in data.make_samples(4, 20)] != [s.caption for s in a]


def test_splits_are_different_streams():
    train, heldout = data.make_samples(0, 20), data.make_samples(0, 20, split="heldout")
    assert not any(np.array_equal(x, y) for x, y in zip(_pixels(train), _pixels(heldout), strict=True))


@pytest.mark.parametrize("size", [64, 96])
def test_images_at_the_model_size(size):
    for s in data.make_samples(1, 5, image_size=size):
        assert s.image.mode == "RGB" and s.image.size == (size, size)


def _combos(scene):
    return {(g.colour, g.shape) for g in scene.groups}


def test_heldout_combos_never_in_train_stream_and_always_in_their_split():
    combos = set(data.HELDOUT_COMBOS)
    for split in ("train", "heldout"):
        assert not any(_combos(s.scene) & combos for s in data.make_samples(7, 400, split=split))
    assert all(_combos(s.scene) & combos for s in data.make_samples(7, 200, split="heldout_combos"))


def _differences(a: data.Scene, b: data.Scene) -> list[str]:
    diffs = [f.name for f in fields(a) if f.name != "groups" and getattr(a, f.name) != getattr(b, f.name)]
    for ga, gb in zip(a.groups, b.groups, strict=False):
        diffs += [f.name for f in fields(ga) if getattr(ga, f.name) != getattr(gb, f.name)]
    return diffs


def test_each_negative_changes_exactly_one_attribute():
    seen = set()
    for sample in data.make_samples(2, 300, split="heldout"):
        for kind, caption in data.hard_negatives(sample):
            seen.add(kind)
            negative = data.parse_caption(caption)
            assert caption != sample.caption
            diffs = _differences(sample.scene, negative)
            if kind == "binding":  # the two groups' colours swapped: one attribute, the colour binding
                assert diffs == ["colour", "colour"]
            else:
                assert diffs == [{"position": "position", "relation": "relation"}.get(kind, kind)], (kind, caption)
            assert not _combos(negative) & set(data.HELDOUT_COMBOS)
    assert seen == set(data.NEGATIVE_KINDS)


def test_captions_parse_back_and_attribute_words():
    for sample in data.make_samples(5, 100):
        assert data.parse_caption(sample.caption) == sample.scene
        words = sample.caption.split()
        for index, category in data.attribute_words(sample.caption):
            assert words[index] in data.GRAMMAR_WORDS, category
        masked, chosen = data.mask_attribute_words(sample.caption, np.random.default_rng(0), count=2)
        assert masked.split().count("<mask>") == 2 and all(masked.split()[i] == "<mask>" for i, _, _ in chosen)


@pytest.mark.parametrize("bad", ["a red circle", "two small red circle on the left", "a small pink circle at the top"])
def test_other_text_is_refused(bad):
    with pytest.raises(ValueError, match="caption"):
        data.parse_caption(bad)


def test_bad_arguments_name_the_input():
    with pytest.raises(ValueError, match="split"):
        data.make_samples(0, 1, split="test")
    with pytest.raises(ValueError, match="seed"):
        data.make_samples(-1, 1)


def test_grid_placement_puts_centres_on_cells_and_falls_back_where_none_exists(monkeypatch):
    cells, size = 4, 64
    cell = size / cells
    scene = data.parse_caption("two small red circles left of a large blue star")
    rng = np.random.default_rng(0)
    for _ in range(20):
        placed = data._place(rng, scene, size, cells=cells)
        assert placed
        regions = [data._half("left")] * 2 + [data._half("right")]
        for (_, cx, cy, r), (x0, y0, x1, y1) in zip(placed, regions, strict=False):
            for c, lo, hi in ((cx, x0 * size + r + 1, x1 * size - r - 1), (cy, y0 * size + r + 1, y1 * size - r - 1)):
                off_centre = abs(c - (np.floor(c / cell) + 0.5) * cell)
                assert off_centre <= data.CELL_JITTER + 1e-9 or np.isclose(c, lo) or np.isclose(c, hi), (c, lo, hi)
    monkeypatch.setattr(data, "GRID_CELLS", cells)
    crowded = data.parse_caption("three large red circles on the left")  # no grid placement: free centres
    assert data.render(crowded, rng).size == (64, 64)


def test_grid_fraction_keeps_captions_and_moves_only_drawn_scenes():
    free = data.make_samples(4, 12)
    assert all(np.array_equal(x, y) for x, y in zip(_pixels(free), _pixels(data.make_samples(4, 12, grid_fraction=0.0)),
                                                     strict=True))  # 0 draws nothing: the same stream
    gridded = data.make_samples(4, 12, grid_fraction=1.0)
    assert [s.caption for s in gridded] == [s.caption for s in free]  # scenes are drawn before placement
    assert any(not np.array_equal(x, y) for x, y in zip(_pixels(free), _pixels(gridded), strict=True))
    with pytest.raises(ValueError, match="grid_fraction"):
        data.make_samples(0, 1, grid_fraction=1.5)
