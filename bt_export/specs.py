"""Export contract of each graph: tensor names, dtypes, symbolic axes, and per-output parity tolerances.

Names are the contract: the manifest copies them, and the runtime, benchmarks, C++ example and tests read them
from the manifest. Tolerances are max |onnx - eager| in fp32; tests read them from here instead of inventing them.
"""

from __future__ import annotations

from dataclasses import dataclass

BATCH, SEQ, IMAGE_BATCH = "batch", "seq", "image_batch"
# Exported beside cross_modal when the checkpoint has an MLM head and ITM or ITC: the same inputs and outputs but
# mlm_logits, its last layer computed at the class positions only (what the poolers read). Without an MLM head,
# cross_modal itself is computed that way and no second graph is written.
POOLED_GRAPH = "cross_modal_pooled"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[str | int, ...]  # str: a symbolic (dynamic) axis; int: fixed by the checkpoint
    tolerance: float | None = None  # outputs only: max abs diff allowed against eager PyTorch in fp32

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def output(self, name: str) -> TensorSpec:
        return next(o for o in self.outputs if o.name == name)


# fp32 tolerances. Bridges and pooled features are LayerNorm-scale activations (O(1)); logits come after a further
# matmul. Measured on tiny: ≤ 2e-6 everywhere; on the full-size base architecture (random init): docs/export.md,
# "Parity".
FP32_TOLERANCES = {
    "image_bridge": 1e-3, "text_bridge": 1e-3, "image_embeds": 1e-4, "text_embeds": 1e-4,
    "pooler_output": 1e-4, "itm_logits": 1e-4, "mlm_logits": 1e-3, "cross_embeds": 1e-4,
}


# Golden vectors (bt_runtime.golden): graph outputs at their fp32 tolerances, pixel_values at float32 rounding of
# deterministic arithmetic, the ITM probability at the runtime's end-to-end bound (defined below)
GOLDEN_PIXEL_TOLERANCE = 1e-6


# Reduced-precision variants vs fp32 eager transformers, in task terms (checked by bt_export.parity).
VARIANT_BOUNDS = {
    "fp16": {"itm_probability_abs": 5e-3, "itm_decision_agreement": 0.98, "mlm_top1_agreement": 0.99,
             "embedding_cosine_min": 0.999},
    "int8": {"itm_probability_abs": 0.02, "itm_decision_agreement": 0.98, "mlm_top1_agreement": 0.97,
             "embedding_cosine_min": 0.99},
}

# End-to-end bounds for the runtime's task outputs at fp32 (bt_runtime vs transformers' processor + model).
RUNTIME_FP32_BOUNDS = {"itm_probability_abs": 1e-4, "embedding_cosine_min": 0.9999}
GOLDEN_TOLERANCES = {**FP32_TOLERANCES, "pixel_values": GOLDEN_PIXEL_TOLERANCE,
                     "itm_probability": RUNTIME_FP32_BOUNDS["itm_probability_abs"]}

# The same fp32 graph on the same inputs, batched or routed differently (itm_matrix vs itm_scores, batch sizes,
# device-bound vs host buffers, session options, the served models vs bt_runtime called directly): only the order
# of the kernels' sums can differ.
SAME_GRAPH_ABS = 1e-6
# The same fp32 computation arranged differently (the split towers vs transformers' forward, fused vs unfused
# attention, the pooled cross-modal stack vs the full one): reassociated sums over a few layers.
SAME_MATH_ABS = 1e-5
# bt_runtime's NumPy + Pillow preprocessing vs transformers' BridgeTowerImageProcessor, pixel_values after
# normalization (every photo and size: tests/bt_runtime/test_images.py)
PREPROCESSING_ABS = 1e-5


def num_image_tokens(config) -> int:
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2 + 1  # patches + class token


def graph_specs(config, heads: tuple[str, ...]) -> dict[str, GraphSpec]:
    """The graphs for `config` with `heads` (subset of itm, mlm, itc): the three, and POOLED_GRAPH where it applies."""
    layers, hidden = config.num_hidden_layers, config.hidden_size
    size, tokens = config.vision_config.image_size, num_image_tokens(config)
    itc = "itc" in heads

    def out(name, shape):
        return TensorSpec(name, "float32", shape, FP32_TOLERANCES[name])

    vision = GraphSpec(
        "vision_tower",
        inputs=(TensorSpec("pixel_values", "float32", (BATCH, 3, size, size)),),
        outputs=(out("image_bridge", (BATCH, layers, tokens, hidden)),
                 *([out("image_embeds", (BATCH, config.contrastive_hidden_size))] if itc else [])),
    )
    text = GraphSpec(
        "text_tower",
        inputs=(TensorSpec("input_ids", "int64", (BATCH, SEQ)), TensorSpec("attention_mask", "int64", (BATCH, SEQ))),
        outputs=(out("text_bridge", (BATCH, layers, SEQ, hidden)),
                 *([out("text_embeds", (BATCH, config.contrastive_hidden_size))] if itc else [])),
    )
    head_outputs = []
    if "itm" in heads:
        head_outputs.append(out("itm_logits", (BATCH, 2)))
    if "mlm" in heads:
        head_outputs.append(out("mlm_logits", (BATCH, SEQ, config.text_config.vocab_size)))
    if itc:
        head_outputs.append(out("cross_embeds", (BATCH, config.contrastive_hidden_size)))
    cross = GraphSpec(
        "cross_modal",
        inputs=(TensorSpec("text_bridge", "float32", (BATCH, layers, SEQ, hidden)),
                TensorSpec("image_bridge", "float32", (IMAGE_BATCH, layers, tokens, hidden)),
                TensorSpec("attention_mask", "int64", (BATCH, SEQ)),
                TensorSpec("image_index", "int64", (BATCH,))),
        outputs=(out("pooler_output", (BATCH, 2 * hidden)), *head_outputs),
    )
    graphs = [vision, text, cross]
    if "mlm" in heads and ("itm" in heads or "itc" in heads):
        # the head-specific graph ITM/ITC run: everything but mlm_logits, the last layer at the class positions
        graphs.append(GraphSpec(POOLED_GRAPH, inputs=cross.inputs,
                                outputs=tuple(o for o in cross.outputs if o.name != "mlm_logits")))
    return {g.name: g for g in graphs}


def computes(graph: str) -> str:
    """The graph whose computation (and module paths) `graph` shares: cross_modal for its pooled form."""
    return "cross_modal" if graph == POOLED_GRAPH else graph
