"""What the scenarios time: eager PyTorch (the baseline, through bt_export's loading of the same checkpoint) and
bt_runtime backends, behind one small interface. Labels: `torch`, `torch:bf16`, `onnxruntime:<precision>[:<provider>]`,
`tensorrt:<precision>`."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from bt_runtime import BridgeTowerRuntime
from bt_runtime.contract import Manifest
from bt_runtime.runtime import softmax


class BackendUnavailable(Exception):
    """This backend cannot run here (the message says why); the report prints one line and skips it."""


def agreement_bounds(label: str) -> dict[str, float]:
    """Bounds a backend must meet against eager fp32: the export's fp32 or reduced-precision task bounds."""
    from bt_export.specs import RUNTIME_FP32_BOUNDS, VARIANT_BOUNDS

    precision = label.split(":")[1] if ":" in label else "fp32"
    precision = {"bf16": "fp16"}.get(precision, precision)
    if precision == "fp32":
        return {"itm_probability_abs": RUNTIME_FP32_BOUNDS["itm_probability_abs"],
                "embedding_cosine_min": RUNTIME_FP32_BOUNDS["embedding_cosine_min"]}
    return VARIANT_BOUNDS[precision]


@dataclass
class TorchBackend:
    """Eager transformers: HF processor + HF classes over the checkpoint's weights (bt_export.eager)."""

    eager: object  # bt_export.eager.EagerBridgeTower
    label: str = "torch"

    def _autocast(self):
        import torch

        if self.label.endswith(":bf16"):
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def itm_pair(self, pixel_values: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad(), self._autocast():
            logits = self.eager.model("itm")(input_ids=torch.from_numpy(input_ids),
                                             attention_mask=torch.from_numpy(attention_mask),
                                             pixel_values=torch.from_numpy(pixel_values)).logits
        return softmax(logits.float().numpy())[:, 1]

    def itm_loop(self, image, texts: list[str]) -> np.ndarray:
        """The transformers documentation's rerank loop: one processor + model call per text."""
        with self._autocast():
            return np.array([self.eager.itm_probability(image, text) for text in texts])

    def tower(self, graph: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The same sub-computation the exported tower graph holds, eager; its last output (embeds or bridge)."""
        import torch

        from bt_export.towers import TextTower, VisionTower

        module = {"vision_tower": VisionTower, "text_tower": TextTower}[graph](self.eager.loaded.model)
        with torch.no_grad(), self._autocast():
            out = module(*(torch.from_numpy(v) for v in feeds.values()))
        out = out[-1] if isinstance(out, tuple) else out
        return out.float().numpy()


@dataclass
class RuntimeBackend:
    runtime: BridgeTowerRuntime
    label: str

    def itm_pair(self, pixel_values: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        run = self.runtime.backend.run
        image = run("vision_tower", {"pixel_values": pixel_values})["image_bridge"]
        text = run("text_tower", {"input_ids": input_ids, "attention_mask": attention_mask})["text_bridge"]
        logits = run("cross_modal", {"text_bridge": text, "image_bridge": image, "attention_mask": attention_mask,
                                     "image_index": np.zeros(input_ids.shape[0], np.int64)}, ["itm_logits"])
        return softmax(logits["itm_logits"])[:, 1]

    def itm_loop(self, image, texts: list[str]) -> np.ndarray:
        return self.runtime.itm_scores(image, texts)

    def tower(self, graph: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return list(self.runtime.backend.run(graph, feeds).values())[-1]


def make_backend(label: str, export_dir, manifest: Manifest, eager):
    kind, _, rest = label.partition(":")
    if kind == "torch":
        if rest not in ("", "bf16"):
            raise BackendUnavailable(f"{label}: torch precisions here are fp32 (`torch`) and `torch:bf16`")
        return TorchBackend(eager, label)
    if kind == "onnxruntime":
        precision, _, provider = rest.partition(":")
        precision = precision or "fp32"
        if precision not in manifest.precisions:
            raise BackendUnavailable(f"{label}: the export has no {precision} variant ({list(manifest.precisions)})")
        # `cuda` (or `cuda:N`) selects ONNX Runtime's CUDA provider with IOBinding; other names are provider names
        device = provider if provider.split(":")[0] == "cuda" else "cpu"
        providers = [provider] if provider and device == "cpu" else None
        if device != "cpu":
            from bt_runtime.backends.onnxruntime import cuda_available

            if not cuda_available():
                raise BackendUnavailable(f"{label}: this onnxruntime has no CUDAExecutionProvider "
                                         "(install onnxruntime-gpu)")
        try:
            return RuntimeBackend(BridgeTowerRuntime.load(export_dir, precision=precision, providers=providers,
                                                          device=device), label)
        except ValueError as err:
            raise BackendUnavailable(f"{label}: {err}") from err
    if kind == "tensorrt":
        precision = rest or "fp16"
        try:
            return RuntimeBackend(BridgeTowerRuntime.load(export_dir, backend="tensorrt", precision=precision), label)
        except ValueError as err:  # no tensorrt package, no GPU, no engines, or engines from another TensorRT/GPU
            raise BackendUnavailable(f"{label}: {err}") from err
    raise BackendUnavailable(f"{label}: unknown backend; valid: torch, torch:bf16, onnxruntime:<precision>[:<provider>],"
                             " tensorrt:<precision>")
