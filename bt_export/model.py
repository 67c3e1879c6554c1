"""One torch model holding BridgeTowerModel plus every head a checkpoint has, loaded in one `from_pretrained`.

Hugging Face ships one class per head (…ForImageAndTextRetrieval, …ForMaskedLM, …ForContrastiveLearning) while the
released `*-itm-mlm` checkpoints hold several heads. `with_heads_class(heads)` builds a PreTrainedModel whose
attribute names equal those classes' (`bridgetower`, `itm_score`, `mlm_score`, `itc_*_head`, `logit_scale`), so one
state dict feeds it and transformers' own loading (safetensors, weights_only .bin, hub cache, key renames) applies.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.bridgetower import modeling_bridgetower as hf

from .configs import HEAD_NAMES

HEAD_KEY_PREFIXES = {
    "itm": ("itm_score.",),
    "mlm": ("mlm_score.",),
    "itc": ("itc_text_head.", "itc_image_head.", "itc_cross_modal_head.", "logit_scale"),
}
HF_HEAD_CLASSES = {
    "itm": hf.BridgeTowerForImageAndTextRetrieval,
    "mlm": hf.BridgeTowerForMaskedLM,
    "itc": hf.BridgeTowerForContrastiveLearning,
}


def heads_in_keys(keys: set[str]) -> tuple[str, ...]:
    """Heads whose weights appear among a checkpoint's tensor names."""
    return tuple(h for h in HEAD_NAMES if any(k.startswith(HEAD_KEY_PREFIXES[h]) for k in keys))


def with_heads_class(heads: tuple[str, ...]) -> type[hf.BridgeTowerPreTrainedModel]:
    """A PreTrainedModel class with BridgeTowerModel and exactly `heads` (a subset of HEAD_NAMES)."""
    unknown = set(heads) - set(HEAD_NAMES)
    if unknown:
        raise ValueError(f"heads: unknown {sorted(unknown)}; valid: {list(HEAD_NAMES)}")

    class BridgeTowerWithHeads(hf.BridgeTowerPreTrainedModel):
        HEADS = tuple(h for h in HEAD_NAMES if h in heads)
        if "mlm" in heads:
            _tied_weights_keys = hf.BridgeTowerForMaskedLM._tied_weights_keys

        def __init__(self, config):
            super().__init__(config)
            self.bridgetower = hf.BridgeTowerModel(config)
            if "itm" in self.HEADS:
                self.itm_score = hf.BridgeTowerITMHead(config.hidden_size * 2)
            if "mlm" in self.HEADS:
                self.mlm_score = hf.BridgeTowerMLMHead(config)
            if "itc" in self.HEADS:
                size = config.contrastive_hidden_size
                self.itc_text_head = hf.BridgeTowerContrastiveHead(config.hidden_size, size)
                self.itc_image_head = hf.BridgeTowerContrastiveHead(config.hidden_size, size)
                self.itc_cross_modal_head = hf.BridgeTowerContrastiveHead(config.hidden_size * 2, size)
                self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
            self.post_init()

        def get_output_embeddings(self):
            return self.mlm_score.decoder if "mlm" in self.HEADS else None

    return BridgeTowerWithHeads


def share_weights(dst: nn.Module, src: nn.Module) -> nn.Module:
    """Point every parameter and buffer of `dst` at the tensor of the same name in `src` (no copy).

    Used to build Hugging Face's own head classes (the parity references) over the exporter's loaded weights.
    """
    src_tensors = dict(src.named_parameters()) | dict(src.named_buffers())
    for name, _ in [*dst.named_parameters(), *dst.named_buffers()]:
        module_path, _, attr = name.rpartition(".")
        module = dst.get_submodule(module_path)
        if name not in src_tensors:
            raise KeyError(f"{type(dst).__name__}: no tensor named {name!r} in the loaded model")
        tensor = src_tensors[name]
        if attr in module._parameters:
            module._parameters[attr] = tensor
        else:
            module._buffers[attr] = tensor
    return dst


def hf_reference(model: nn.Module, head: str | None) -> nn.Module:
    """Hugging Face's class for `head` (None: BridgeTowerModel), sharing `model`'s weights, in eval mode."""
    cls = hf.BridgeTowerModel if head is None else HF_HEAD_CLASSES[head]
    with torch.device("meta"):
        ref = cls(model.config)
    source = model.bridgetower if head is None else model
    return share_weights(ref, source).eval()
