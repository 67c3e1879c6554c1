"""The split forward (towers + cross-modal stack) equals transformers' BridgeTowerModel, for every supported variant."""

from __future__ import annotations

import pytest
import torch

from bt_export.attention import attention_implementation, reference_attention
from bt_export.model import hf_reference, with_heads_class
from bt_export.specs import SAME_MATH_ABS
from bt_export.towers import CrossModalStack, TextTower, VisionTower

from .checkpoint_dirs import small_config


def _inputs(batch=3, seq=9, image_size=96):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 500, (batch, seq), generator=generator)
    ids[:, 0] = 0
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 6:] = 0
    ids[1, 6:] = 1
    return ids, mask, torch.randn(batch, 3, image_size, image_size, generator=generator)


def _model(**overrides):
    torch.manual_seed(0)
    # transformers' ContrastiveLearning class cannot run unshared bridge transforms (the loader refuses that
    # combination)
    heads = ("itm", "mlm") if overrides.get("share_cross_modal_transformer_layers") is False else ("itm", "mlm", "itc")
    model = with_heads_class(heads)(small_config(**overrides)).eval()
    with torch.no_grad():  # non-trivial link-tower parameters, so scaled_add/interpolate are really exercised
        for name, param in model.named_parameters():
            if name.endswith(("scaled_factor", "beta")):
                param.fill_(0.3)
    return model


@pytest.mark.parametrize("overrides", [
    {},
    {"link_tower_type": "scaled_add"},
    {"link_tower_type": "interpolate"},
    {"share_cross_modal_transformer_layers": False},
    {"num_hidden_layers": 3},  # every unimodal layer bridged
    {"num_hidden_layers": 1},  # a single cross-modal layer: no link towers used
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "tiny")
@torch.no_grad()
def test_split_forward_equals_hf_classes(overrides):
    model = _model(**overrides)
    ids, mask, pixels = _inputs()
    itc = "itc" in model.HEADS
    vision, text = VisionTower(model)(pixels), TextTower(model)(ids, mask)
    image_bridge, text_bridge = (vision[0], text[0]) if itc else (vision, text)
    pooler, itm, mlm, *cross = CrossModalStack(model)(text_bridge, image_bridge, mask, torch.arange(3))
    kwargs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    torch.testing.assert_close(pooler, hf_reference(model, None)(**kwargs).pooler_output, atol=SAME_MATH_ABS, rtol=0)
    torch.testing.assert_close(itm, hf_reference(model, "itm")(**kwargs).logits, atol=SAME_MATH_ABS, rtol=0)
    torch.testing.assert_close(mlm, hf_reference(model, "mlm")(**kwargs).logits, atol=SAME_MATH_ABS, rtol=0)
    # the head-specific stack (last layer at the class positions, no MLM head) gives the same pooled outputs
    pooled = CrossModalStack(model, mlm=False)(text_bridge, image_bridge, mask, torch.arange(3))
    assert len(pooled) == 2 + len(cross)  # pooler_output, itm_logits [, cross_embeds]: no mlm_logits
    torch.testing.assert_close(pooled[0], pooler, atol=SAME_MATH_ABS, rtol=0)
    torch.testing.assert_close(pooled[1], itm, atol=SAME_MATH_ABS, rtol=0)
    if not itc:
        return
    torch.testing.assert_close(pooled[2], cross[0], atol=SAME_MATH_ABS, rtol=0)
    text_embeds, image_embeds, cross = text[1], vision[1], cross[0]
    contrastive = hf_reference(model, "itc")(**kwargs)
    torch.testing.assert_close(text_embeds, contrastive.text_embeds, atol=SAME_MATH_ABS, rtol=0)
    torch.testing.assert_close(image_embeds, contrastive.image_embeds, atol=SAME_MATH_ABS, rtol=0)
    torch.testing.assert_close(cross, contrastive.cross_embeds, atol=SAME_MATH_ABS, rtol=0)


@torch.no_grad()
def test_image_index_scores_one_image_against_many_texts():
    model = _model()
    ids, mask, pixels = _inputs()
    image_bridge, _ = VisionTower(model)(pixels[:1])  # vision tower once, batch 1
    text_bridge, _ = TextTower(model)(ids, mask)
    _, itm, _, _ = CrossModalStack(model)(text_bridge, image_bridge, mask, torch.zeros(3, dtype=torch.long))
    expected = hf_reference(model, "itm")(input_ids=ids, attention_mask=mask,
                                          pixel_values=pixels[:1].expand(3, -1, -1, -1))
    torch.testing.assert_close(itm, expected.logits, atol=SAME_MATH_ABS, rtol=0)


@torch.no_grad()
def test_every_attention_goes_through_the_seam():
    model = _model()
    ids, mask, pixels = _inputs()
    calls = []

    def counting(*args):
        calls.append(args[0].shape[1])
        return reference_attention(*args)

    with attention_implementation(counting):
        image_bridge, _ = VisionTower(model)(pixels)
        text_bridge, _ = TextTower(model)(ids, mask)
        CrossModalStack(model)(text_bridge, image_bridge, mask, torch.arange(3))
    config = model.config
    vision, text = config.vision_config.num_hidden_layers, config.text_config.num_hidden_layers
    expected = vision + text + 4 * config.num_hidden_layers
    assert len(calls) == expected
