"""What the scenarios time: eager PyTorch (the baseline, through bt_export's loading of the same checkpoint) and
bt_runtime backends, behind one small interface. Labels: `torch`, `torch:bf16`,
`onnxruntime:<precision>[@<int8 recipe>][:<provider>]`,
`onnxruntime-naive[:int8]` (the whole model exported the naive way, int8 by a one-line `quantize_dynamic`; pair and
rerank only), `tensorrt:<precision>`.
A backend with a `scenarios` attribute runs only those scenarios."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bt_runtime import BackendError, BridgeTowerRuntime
from bt_runtime.features import softmax
from bt_runtime.manifest import Manifest


class BackendUnavailable(Exception):
    """This backend cannot run here (the message says why); the report prints one line and skips it."""


def agreement_bounds(label: str) -> dict[str, float]:
    """Bounds a backend must meet against eager fp32: the export's fp32 or reduced-precision task bounds."""
    from bt_export.specs import RUNTIME_FP32_BOUNDS, VARIANT_BOUNDS

    precision = label.split(":")[1].partition("@")[0] if ":" in label else "fp32"
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
        logits = run(self.runtime.cross_graph(["itm_logits"]),
                     {"text_bridge": text, "image_bridge": image, "attention_mask": attention_mask,
                      "image_index": np.zeros(input_ids.shape[0], np.int64)}, ["itm_logits"])
        return softmax(logits["itm_logits"])[:, 1]

    def itm_loop(self, image, texts: list[str]) -> np.ndarray:
        return self.runtime.itm_scores(image, texts)

    def tower(self, graph: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return list(self.runtime.backend.run(graph, feeds).values())[-1]


@dataclass
class NaiveExportBackend:
    """What a user's twenty-line export gives, as the peer the toolkit must beat (issue 14): the whole
    BridgeTowerForImageAndTextRetrieval traced by `torch.onnx.export` (TorchScript path, opset 17) into one graph,
    run by ONNX Runtime with default options, fed by the HF processor. Times `pair` and `rerank` only (it has no
    towers to reuse); its agreement with eager is reported next to its speed like every backend's."""

    session: object
    processor: object
    label: str = "onnxruntime-naive"
    scenarios: tuple = ("pair", "rerank")

    @classmethod
    def export(cls, eager, directory, precision: str = "fp32") -> "NaiveExportBackend":
        """fp32: the traced graph; int8: that graph through a one-line `quantize_dynamic` with s8 weights (its
        defaults otherwise: per tensor, every MatMul/Gemm), as a user would write it. The graph is written once per
        directory and shared by both."""
        import onnxruntime as ort

        path = Path(directory) / "naive_itm.onnx"
        if not path.exists():
            cls._trace(eager, path)
        if precision == "int8":
            quantized = Path(directory) / "naive_itm.int8.onnx"
            if not quantized.exists():
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
            path = quantized
        label = "onnxruntime-naive" + ("" if precision == "fp32" else f":{precision}")
        # ONNX Runtime's default session options, as a user's twenty lines would have them (threads: all cores)
        return cls(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), eager.processor, label)

    @staticmethod
    def _trace(eager, path: Path) -> None:
        import copy
        import warnings

        import torch

        class Itm(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, pixel_values):
                return self.model(input_ids=input_ids, attention_mask=attention_mask,
                                  pixel_values=pixel_values).logits

        # a deep copy: exporting through TorchScript once changed the in-memory model's outputs (issue 14)
        model = Itm(copy.deepcopy(eager.model("itm"))).eval()
        size = eager.loaded.model.config.vision_config.image_size
        ids = torch.tensor([[0, 100, 200, 2]], dtype=torch.int64)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros(1, 3, size, size)), str(path),
                              input_names=["input_ids", "attention_mask", "pixel_values"], output_names=["logits"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                            "attention_mask": {0: "batch", 1: "seq"},
                                            "pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17, dynamo=False)

    def itm_pair(self, pixel_values: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        logits = self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask,
                                               "pixel_values": pixel_values})[0]
        return softmax(logits)[:, 1]

    def itm_loop(self, image, texts: list[str]) -> np.ndarray:
        """The documentation loop on the naive graph: processor + one whole-model run per text."""
        scores = []
        for text in texts:
            encoding = self.processor(images=image, text=text, return_tensors="np")
            scores.append(self.itm_pair(encoding["pixel_values"].astype(np.float32), encoding["input_ids"],
                                        encoding["attention_mask"])[0])
        return np.array(scores)


def make_backend(label: str, export_dir, manifest: Manifest, eager, workdir=None):
    kind, _, rest = label.partition(":")
    if kind == "onnxruntime-naive":
        if rest not in ("", "fp32", "int8"):
            raise BackendUnavailable(f"{label}: the naive export's precisions are fp32 (`onnxruntime-naive`) and "
                                     "int8 (`onnxruntime-naive:int8`)")
        if "itm" not in manifest.heads:
            raise BackendUnavailable(f"{label}: the naive whole-model export is of the ITM model; this export has "
                                     "no itm head")
        if workdir is None:
            raise BackendUnavailable(f"{label}: needs a working directory for its graph")
        return NaiveExportBackend.export(eager, workdir, rest or "fp32")
    if kind == "torch":
        if rest not in ("", "bf16"):
            raise BackendUnavailable(f"{label}: torch precisions here are fp32 (`torch`) and `torch:bf16`")
        return TorchBackend(eager, label)
    if kind == "onnxruntime":
        precision, _, provider = rest.partition(":")
        precision, _, recipe = precision.partition("@")  # int8@<recipe>: that recipe, not the CPU class's choice
        precision = precision or "fp32"
        if recipe and precision != "int8":
            raise BackendUnavailable(f"{label}: @<recipe> names an int8 recipe (docs/int8.md); {precision} has none")
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
            extra = {"int8_recipe": recipe} if recipe else {}
            runtime = BridgeTowerRuntime.load(export_dir, precision=precision, providers=providers, device=device,
                                              **extra)
            runtime.backend.session("vision_tower")  # sessions are lazy: a provider that cannot start fails here
            return RuntimeBackend(runtime, label)
        except (ValueError, BackendError) as err:
            raise BackendUnavailable(f"{label}: {err}") from err
    if kind == "tensorrt":
        precision = rest or "fp16"
        try:
            return RuntimeBackend(BridgeTowerRuntime.load(export_dir, backend="tensorrt", precision=precision), label)
        # no tensorrt package, no GPU, no engines, or engines from another TensorRT/GPU
        except (ValueError, BackendError) as err:
            raise BackendUnavailable(f"{label}: {err}") from err
    raise BackendUnavailable(f"{label}: unknown backend; valid: torch, torch:bf16, "
                             "onnxruntime:<precision>[:<provider>],"
                             " onnxruntime-naive[:int8], tensorrt:<precision>")
