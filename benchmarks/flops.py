"""Work of each scenario in FLOPs (2 per multiply-add), from the manifest's config summary. Matmul-type work only
(projections, attention scores and weighted sums, patch embedding, heads); elementwise work is left out."""

from __future__ import annotations


def _linear(tokens: int, d_in: int, d_out: int) -> float:
    return 2.0 * tokens * d_in * d_out


def _attention(q_tokens: int, k_tokens: int, dim: int) -> float:
    return 2.0 * 2.0 * q_tokens * k_tokens * dim  # scores + weighted sum


def vision_tower(config) -> float:
    vision, hidden = config.vision, config.hidden_size
    tokens, dim, patch = config.num_image_tokens, vision["hidden_size"], vision["patch_size"]
    layer = 4 * _linear(tokens, dim, dim) + 2 * _linear(tokens, dim, 4 * dim) + _attention(tokens, tokens, dim)
    patches = _linear(tokens - 1, 3 * patch * patch, dim)
    bridges = config.num_cross_layers * _linear(tokens, dim, hidden)
    return patches + vision["num_layers"] * layer + bridges


def text_tower(config, seq: int) -> float:
    text, hidden = config.text, config.hidden_size
    dim, inner = text["hidden_size"], text["intermediate_size"]
    layer = 4 * _linear(seq, dim, dim) + 2 * _linear(seq, dim, inner) + _attention(seq, seq, dim)
    return text["num_layers"] * layer + config.num_cross_layers * _linear(seq, dim, hidden)


def cross_modal(config, seq: int, heads: tuple[str, ...] = ("itm",)) -> float:
    """One (image, text) pair through the cross-modal stack plus pooler and the given heads' matmuls."""
    dim, inner, tokens = config.hidden_size, config.text["intermediate_size"], config.num_image_tokens

    def side(own: int, other: int) -> float:  # self-attention, cross-attention over the other side, FFN
        self_attention = 4 * _linear(own, dim, dim) + _attention(own, own, dim)
        cross = 2 * _linear(own, dim, dim) + 2 * _linear(other, dim, dim) + _attention(own, other, dim)
        return self_attention + cross + 2 * _linear(own, dim, inner)

    total = config.num_cross_layers * (side(seq, tokens) + side(tokens, seq)) + 2 * _linear(1, dim, dim)
    if "itm" in heads:
        total += _linear(1, 2 * dim, 2)
    if "mlm" in heads:
        total += _linear(seq, dim, dim) + _linear(seq, dim, config.vocab_size)
    return total


def pair(config, seq: int) -> float:
    """1 image + 1 text → ITM, as eager transformers computes it (no MLM head)."""
    return vision_tower(config) + text_tower(config, seq) + cross_modal(config, seq)
