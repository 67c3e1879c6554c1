"""The three exported sub-computations of BridgeTowerModel, as torch modules over Hugging Face's own submodules.

BridgeTowerModel.forward interleaves both towers with the cross-modal stack. Splitting it: the towers' top
`num_hidden_layers` (C) layers each feed one "bridge" (`image_bridge`, `text_bridge`, both (B, C, L, D): batch
first, so a server can concatenate requests along axis 0), which is
everything the cross-modal stack reads from them. So each tower runs once per input, and the cross-modal graph
runs once per (image, text) pair. Every attention goes through `bt_export.attention.attend`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .attention import attend, key_padding_bias

IMAGE_TOKEN_TYPE = 1  # BridgeTowerModel's default image_token_type_idx
TEXT_TOKEN_TYPE = 0


def _bridge_transform(transform: nn.Module, hidden: torch.Tensor, index: int) -> torch.Tensor:
    # share_cross_modal_transformer_layers=False keeps one Linear per bridge (BridgeTowerModel._apply_*_transform)
    return transform[index](hidden) if isinstance(transform, nn.ModuleList) else transform(hidden)


def _first_bridged_layer(config) -> int:
    """Index of the first unimodal layer that feeds the cross-modal stack (BridgeTowerModel's split_index - 1)."""
    return config.text_config.num_hidden_layers - config.num_hidden_layers


def vision_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """BridgeTowerResidualAttention on batch-first x (B, N, D); HF runs it sequence-first, the math is the same."""
    attn = block.attn  # nn.MultiheadAttention with packed in_proj
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)  # 3 × (B, N, D)
    x = x + attn.out_proj(attend(q, k, v, attn.num_heads))
    mlp = block.mlp
    return x + mlp.c_proj(mlp.gelu(mlp.c_fc(block.ln_2(x))))


def bert_attention(attention: nn.Module, hidden: torch.Tensor, context: torch.Tensor,
                   key_bias: torch.Tensor | None) -> torch.Tensor:
    """BridgeTowerAttention: projections, attention of `hidden` over `context`, then dense + residual LayerNorm."""
    heads = attention.self
    attended = attend(heads.query(hidden), heads.key(context), heads.value(context), heads.num_attention_heads,
                      key_bias)
    return attention.output(attended, hidden)


def feed_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer.output(layer.intermediate(x), x)


def text_layer(layer: nn.Module, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
    return feed_forward(layer, bert_attention(layer.attention, x, x, key_bias))


def cross_layer(layer: nn.Module, x: torch.Tensor, other: torch.Tensor, self_bias: torch.Tensor | None,
                cross_bias: torch.Tensor | None, first_only: bool = False) -> torch.Tensor:
    """BridgeTowerBertCrossLayer: self-attention, attention over the other modality, feed-forward.

    first_only: compute position 0 only (queries from x[:, :1]; keys and values still from every position of x and
    `other`), which is all the poolers read: the same numbers at position 0 for a fraction of the work."""
    x = bert_attention(layer.attention, x[:, :1] if first_only else x, x, self_bias)
    x = bert_attention(layer.crossattention, x, other, cross_bias)
    return feed_forward(layer, x)


class VisionTower(nn.Module):
    """pixel_values (B, 3, H, W) → image_bridge (B, C, N, D) [, image_embeds (B, E) for contrastive checkpoints]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        bridgetower = model.bridgetower
        visual = bridgetower.vision_model.visual
        self.embeddings, self.ln_pre, self.ln_post = visual.embeddings, visual.ln_pre, visual.ln_post
        self.blocks = visual.transformer.resblocks
        self.transform = bridgetower.cross_modal_image_transform
        self.token_type_embeddings = bridgetower.token_type_embeddings
        self.itc_image_head = getattr(model, "itc_image_head", None)
        self.first_bridged = _first_bridged_layer(model.config)

    def forward(self, pixel_values: torch.Tensor):
        x = self.ln_pre(self.embeddings(pixel_values))  # (B, N, Dv)
        token_type = self.token_type_embeddings.weight[IMAGE_TOKEN_TYPE]  # (D,)
        bridges = []
        for index, block in enumerate(self.blocks):
            x = vision_block(block, x)
            if index >= self.first_bridged:
                bridge_index = index - self.first_bridged
                bridges.append(_bridge_transform(self.transform, self.ln_post(x), bridge_index) + token_type)
        image_bridge = torch.stack(bridges, dim=1)  # (B, C, N, D)
        if self.itc_image_head is None:
            return image_bridge
        image_embeds = F.normalize(self.itc_image_head(image_bridge[:, -1, 0]), dim=-1)  # (B, E)
        return image_bridge, image_embeds


class TextTower(nn.Module):
    """input_ids, attention_mask (B, S) → text_bridge (B, C, S, D) [, text_embeds (B, E)]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        bridgetower = model.bridgetower
        self.embeddings = bridgetower.text_model.embeddings
        self.layers = bridgetower.text_model.encoder.layer
        self.transform = bridgetower.cross_modal_text_transform
        self.token_type_embeddings = bridgetower.token_type_embeddings
        self.itc_text_head = getattr(model, "itc_text_head", None)
        self.first_bridged = _first_bridged_layer(model.config)
        self.padding_idx = self.embeddings.padding_idx

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """RoBERTa positions (padding_idx + 1, + 2, … for tokens; padding_idx for padding), as transformers'
        create_position_ids_from_input_ids, but with the running count in float: TensorRT's CumSum takes
        floating-point tensors only (exact: counts stay far below 2**24)."""
        tokens = input_ids.ne(self.padding_idx).to(torch.float32)  # (B, S)
        return (torch.cumsum(tokens, dim=1) * tokens).to(torch.int64) + self.padding_idx

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        x = self.embeddings(input_ids=input_ids, position_ids=self.position_ids(input_ids))  # (B, S, D)
        key_bias = key_padding_bias(attention_mask, x.dtype)  # (B, S)
        token_type = self.token_type_embeddings.weight[TEXT_TOKEN_TYPE]  # (D,)
        bridges = []
        for index, layer in enumerate(self.layers):
            x = text_layer(layer, x, key_bias)
            if index >= self.first_bridged:
                bridges.append(_bridge_transform(self.transform, x, index - self.first_bridged) + token_type)
        text_bridge = torch.stack(bridges, dim=1)  # (B, C, S, D)
        if self.itc_text_head is None:
            return text_bridge
        # BridgeTowerForContrastiveLearning projects the last text layer's <s> token, before the bridge transform
        text_embeds = F.normalize(self.itc_text_head(x[:, 0]), dim=-1)  # (B, E)
        return text_bridge, text_embeds


class CrossModalStack(nn.Module):
    """text_bridge (B, C, S, D), image_bridge (I, C, N, D), attention_mask (B, S), image_index (B,) →
    pooler_output (B, 2D) and the heads the checkpoint has. Pair b uses image `image_index[b]`, so one image is
    scored against B texts with image_bridge of batch 1 and image_index all zeros (the graph gathers).

    Only the MLM head reads more than the class positions of the last cross-modal layer: without it (`mlm=False`,
    or a checkpoint that has none) that layer runs at position 0 only and mlm_logits is not computed — the
    head-specific graph `cross_modal_pooled` that ITM and ITC use (bt_export.specs)."""

    def __init__(self, model: nn.Module, mlm: bool = True):
        super().__init__()
        bt = model.bridgetower
        self.text_layernorm, self.image_layernorm = bt.cross_modal_text_layernorm, bt.cross_modal_image_layernorm
        self.text_layers, self.image_layers = bt.cross_modal_text_layers, bt.cross_modal_image_layers
        self.text_links, self.image_links = bt.cross_modal_text_link_tower, bt.cross_modal_image_link_tower
        self.text_pooler, self.image_pooler = bt.cross_modal_text_pooler, bt.cross_modal_image_pooler
        self.itm_score = getattr(model, "itm_score", None)
        self.mlm_score = getattr(model, "mlm_score", None) if mlm else None
        self.itc_cross_modal_head = getattr(model, "itc_cross_modal_head", None)

    def forward(self, text_bridge: torch.Tensor, image_bridge: torch.Tensor, attention_mask: torch.Tensor,
                image_index: torch.Tensor):
        image_bridge = image_bridge.index_select(0, image_index)  # (B, C, N, D)
        text_bias = key_padding_bias(attention_mask, text_bridge.dtype)  # (B, S)
        text = self.text_layernorm(text_bridge[:, 0])
        image = self.image_layernorm(image_bridge[:, 0])
        layers, text_out, image_out = text_bridge.shape[1], None, None
        for k in range(layers):
            if k:  # layer k reads bridge k linked with layer k - 1's output
                text = self.text_links[k - 1](text_bridge[:, k], text_out, None)
                image = self.image_links[k - 1](image_bridge[:, k], image_out, None)
            # the last layer's image side is read at position 0 only (image pooler), its text side too without MLM
            last = k == layers - 1
            text_out = cross_layer(self.text_layers[k], text, image, text_bias, None,
                                   first_only=last and self.mlm_score is None)
            image_out = cross_layer(self.image_layers[k], image, text, None, text_bias, first_only=last)
        pooler_output = torch.cat([self.text_pooler(text_out), self.image_pooler(image_out)], dim=-1)  # (B, 2D)
        outputs = [pooler_output]
        if self.itm_score is not None:
            outputs.append(self.itm_score(pooler_output))  # (B, 2)
        if self.mlm_score is not None:
            outputs.append(self.mlm_score(text_out))  # (B, S, V)
        if self.itc_cross_modal_head is not None:
            outputs.append(F.normalize(self.itc_cross_modal_head(pooler_output), dim=-1))  # (B, E)
        return tuple(outputs)
