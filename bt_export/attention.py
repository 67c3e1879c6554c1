"""The one seam every attention of the exported graphs goes through.

Vision self-attention, text self-attention and the cross-modal stack's four attentions per layer all call `attend`
with already-projected query/key/value. What it emits is chosen by `attention_implementation(...)`:
`reference_attention` writes MatMul/Softmax out (unfused); `fused_attention` calls the custom op `bt::attention`,
which the exporter translates (see `bt_export.fused`) into exactly one fused ONNX node per attention.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, "torch.Tensor | None"], torch.Tensor]


def reference_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, num_heads: int,
                        key_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention written out as MatMul/Softmax (what an unfused export contains).

    query (B, Lq, D), key/value (B, Lk, D); key_bias (B, Lk) is added to every query's scores (0 keeps a key, a
    very negative number drops it). Returns (B, Lq, D). Same order of operations as transformers' eager attention.
    """
    head_dim = query.shape[-1] // num_heads
    q = query.unflatten(-1, (num_heads, head_dim)).transpose(1, 2)  # (B, H, Lq, Dh)
    k = key.unflatten(-1, (num_heads, head_dim)).transpose(1, 2)  # (B, H, Lk, Dh)
    v = value.unflatten(-1, (num_heads, head_dim)).transpose(1, 2)  # (B, H, Lk, Dh)
    scores = torch.matmul(q, k.transpose(-1, -2)) * head_dim**-0.5  # (B, H, Lq, Lk)
    if key_bias is not None:
        scores = scores + key_bias[:, None, None, :]
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v).transpose(1, 2).flatten(2)  # (B, Lq, D)


_implementation: AttentionFn = reference_attention


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, num_heads: int,
           key_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention through the active implementation; shapes as in `reference_attention`."""
    return _implementation(query, key, value, num_heads, key_bias)


@contextlib.contextmanager
def attention_implementation(fn: AttentionFn) -> Iterator[None]:
    """Route every `attend` call through `fn` inside the block (used while tracing a fused export)."""
    global _implementation
    previous, _implementation = _implementation, fn
    try:
        yield
    finally:
        _implementation = previous


@torch.library.custom_op("bt::attention", mutates_args=())
def _fused_attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_bias: torch.Tensor | None,
                        num_heads: int) -> torch.Tensor:
    """One multi-head attention as a single op, so the exporter sees (and translates) it as one node."""
    return reference_attention(query, key, value, num_heads, key_bias)


@_fused_attention_op.register_fake
def _(query, key, value, key_bias, num_heads):
    return torch.empty_like(query)


def fused_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, num_heads: int,
                    key_bias: torch.Tensor | None = None) -> torch.Tensor:
    return torch.ops.bt.attention(query, key, value, key_bias, num_heads)


FUSED_ATTENTION_OP = torch.ops.bt.attention.default


def key_padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, Lk) 1/0 padding mask → additive bias: 0 where attended, dtype's minimum where padded (as transformers).

    A select, not (1 - mask) * min: in fp16 the minimum of fp32 becomes -inf, and 0 * -inf would be NaN."""
    return torch.where(attention_mask.bool(), 0.0, torch.finfo(dtype).min).to(dtype)
