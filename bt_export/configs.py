"""The checkpoints bt-toolkit knows by name: hub ids, official architecture values and the offline `tiny` and
`shapes` ones (`shapes`: a small BridgeTower trained on generated scenes, shipped in the package).

The official values are recorded here so that `--random-init` can build the full-size architecture of any alias
without the hub. They mirror the `config.json` files of the BridgeTower/* repositories on the Hugging Face hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bt_runtime.manifest import HEAD_NAMES

TINY_TOKENIZER_DIR = Path(__file__).parent / "assets" / "tiny_tokenizer"
SHAPES_DIR = Path(__file__).parent / "assets" / "shapes"  # trained here: scripts/train_reference.py


@dataclass(frozen=True)
class KnownCheckpoint:
    hub_id: str
    config: dict  # kwargs for transformers.BridgeTowerConfig
    heads: tuple[str, ...]  # heads whose weights the released checkpoint holds


def _base(**extra) -> dict:
    return dict(
        hidden_size=768, num_attention_heads=12, num_hidden_layers=6,  # cross-modal stack
        share_cross_modal_transformer_layers=True, share_link_tower_layers=False, link_tower_type="add",
        init_layernorm_from_vision_encoder=False, tie_word_embeddings=False,
        text_config=dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1),
        vision_config=dict(hidden_size=768, num_hidden_layers=12, patch_size=16, image_size=288),
        **extra,
    )


def _large(**extra) -> dict:
    return dict(
        hidden_size=1024, num_attention_heads=16, num_hidden_layers=6,
        share_cross_modal_transformer_layers=True, share_link_tower_layers=False, link_tower_type="add",
        init_layernorm_from_vision_encoder=False, tie_word_embeddings=False,
        text_config=dict(vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                         intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1),
        vision_config=dict(hidden_size=1024, num_hidden_layers=24, patch_size=14, image_size=294),
        **extra,
    )


KNOWN_CHECKPOINTS: dict[str, KnownCheckpoint] = {
    "base": KnownCheckpoint("BridgeTower/bridgetower-base", _base(), ()),
    "base-itm-mlm": KnownCheckpoint("BridgeTower/bridgetower-base-itm-mlm", _base(), ("itm", "mlm")),
    "large-itm-mlm": KnownCheckpoint("BridgeTower/bridgetower-large-itm-mlm", _large(), ("itm", "mlm")),
    "large-itm-mlm-itc": KnownCheckpoint(
        "BridgeTower/bridgetower-large-itm-mlm-itc",
        _large(contrastive_hidden_size=512, logit_scale_init_value=2.6592),
        ("itm", "mlm", "itc"),
    ),
}

# Small enough to export in seconds, but every structural piece is there: 3 unimodal layers per tower, 2 of them
# bridged into a 2-layer cross-modal stack (so one link tower per side), several heads per attention, all heads.
TINY_CONFIG = dict(
    hidden_size=128, num_attention_heads=4, num_hidden_layers=2,
    share_cross_modal_transformer_layers=True, share_link_tower_layers=False, link_tower_type="add",
    init_layernorm_from_vision_encoder=False, tie_word_embeddings=False,
    contrastive_hidden_size=32, logit_scale_init_value=2.6592,
    text_config=dict(vocab_size=515, hidden_size=128, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=130, type_vocab_size=1),
    # nn.MultiheadAttention in the vision tower uses hidden_size // 64 heads: 128 gives 2 heads. (transformers'
    # BridgeTowerForContrastiveLearning needs the vision and cross-modal hidden sizes equal, as in every release.)
    vision_config=dict(hidden_size=128, num_hidden_layers=3, patch_size=16, image_size=96),
)
TINY_HEADS = HEAD_NAMES
TINY_SEED = 0


def valid_names() -> list[str]:
    return ["tiny", "shapes", *KNOWN_CHECKPOINTS]
