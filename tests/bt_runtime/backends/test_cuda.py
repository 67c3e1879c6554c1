"""ONNX Runtime on CUDA: device selection, the CPU fallback, IOBinding bookkeeping (tested with the CPU provider,
where bound outputs stay OrtValues too), and the device path of itm_scores. Tests marked `gpu` need
onnxruntime-gpu and a GPU; the full GPU run is benchmarks/gpu_report.py (docs/gpu.md)."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest

from bt_export.specs import RUNTIME_FP32_BOUNDS, SAME_GRAPH_ABS
from bt_runtime import BridgeTowerRuntime
from bt_runtime.backends.onnxruntime import cuda_available, parse_device
from bt_runtime.errors import BackendInputError


@pytest.mark.parametrize("device,parsed", [("cpu", ("cpu", 0)), ("cuda", ("cuda", 0)), ("cuda:1", ("cuda", 1))])
def test_parse_device(device, parsed):
    assert parse_device(device) == parsed


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:0", "cuda:-1"])
def test_bad_device_names_list_the_valid_ones(device):
    with pytest.raises(BackendInputError, match="valid: cpu, cuda, cuda:N"):
        parse_device(device)


@pytest.mark.skipif(cuda_available(), reason="this onnxruntime has CUDA: nothing to fall back from")
def test_cuda_without_cuda_falls_back_to_cpu_with_a_warning(tiny_export, photos_dir):
    with pytest.warns(RuntimeWarning, match="no CUDAExecutionProvider.*running on CPU"):
        runtime = BridgeTowerRuntime.load(tiny_export, device="cuda")
    assert runtime.backend.device == "cpu"
    image = photos_dir / "coco_000000039769.png"
    expected = BridgeTowerRuntime.load(tiny_export).itm_scores(image, ["two cats", "a goal"])
    np.testing.assert_array_equal(runtime.itm_scores(image, ["two cats", "a goal"]), expected)


@pytest.mark.parametrize("asked, started, says", [
    ({"device": "cuda"}, "CPUExecutionProvider", "CUDA/cuDNN libraries did not load.*preload_dlls.*device='cpu'"),
    ({"providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]},
     "CUDAExecutionProvider", "TensorRT libraries \\(libnvinfer\\) did not load.*device='cuda'"),
])
def test_a_provider_that_does_not_start_is_an_error_not_a_silent_fallback(tiny_export, monkeypatch, asked, started,
                                                                          says):
    """onnxruntime-gpu without its CUDA (or TensorRT) libraries logs and runs the session on the next provider;
    the runtime refuses that, naming what to fix."""
    import onnxruntime as ort

    from bt_runtime.errors import BackendError

    class Fallen:  # the session ONNX Runtime returns after the asked-for provider failed to start
        def __init__(self, path, options, providers, disabled_optimizers=None):
            self.session = ort_session(path, options, providers=["CPUExecutionProvider"])

        def get_providers(self):
            return [started, "CPUExecutionProvider"][:1 if started == "CPUExecutionProvider" else 2]

    ort_session = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", Fallen)
    runtime = BridgeTowerRuntime.load(tiny_export, **asked)
    wanted = "CUDAExecutionProvider" if "device" in asked else "TensorrtExecutionProvider"
    with pytest.raises(BackendError, match=f"vision_tower: {wanted} was asked for but ONNX Runtime started the "
                                           f"session on {started}: .*{says}"):
        runtime.backend.session("vision_tower")


def test_device_and_providers_are_exclusive(tiny_export):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BackendInputError, match="either device='cuda' or providers"):
            BridgeTowerRuntime.load(tiny_export, device="cuda", providers=["CPUExecutionProvider"])


def test_bound_outputs_stay_ortvalues_and_feed_the_next_graph(tiny_export):
    runtime = BridgeTowerRuntime.load(tiny_export)
    backend = runtime.backend
    pixels = np.random.default_rng(0).standard_normal((1, 3, 96, 96)).astype(np.float32)
    encoded = runtime.tokenizer(["two cats on a couch", "a goal"])
    image = backend.run_bound("vision_tower", {"pixel_values": pixels}, ["image_bridge"], keep=("image_bridge",))
    assert not isinstance(image["image_bridge"], np.ndarray)  # an OrtValue, not copied out
    assert tuple(image["image_bridge"].shape()) == (1, 2, runtime.manifest.config.num_image_tokens, 128)
    text = backend.run_bound("text_tower", {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask},
                             ["text_bridge"], keep=("text_bridge",))
    feeds = {"text_bridge": text["text_bridge"], "image_bridge": image["image_bridge"],
             "attention_mask": encoded.attention_mask, "image_index": np.zeros(2, np.int64)}
    bound = backend.run_bound("cross_modal", feeds, ["itm_logits"])["itm_logits"]
    plain = backend.run("cross_modal", {**feeds, "text_bridge": text["text_bridge"].numpy(),
                                        "image_bridge": image["image_bridge"].numpy()}, ["itm_logits"])["itm_logits"]
    np.testing.assert_array_equal(bound, plain)
    with pytest.raises(BackendInputError, match="input 'text_bridge' has dtype int64; expected float32"):
        backend.run_bound("cross_modal", {**feeds, "text_bridge": ort.OrtValue.ortvalue_from_numpy(
            np.zeros((2, 2, 7, 128), np.int64))}, ["itm_logits"])


def test_device_path_of_itm_scores_matches_the_host_path(tiny_export, photos_dir):
    runtime = BridgeTowerRuntime.load(tiny_export)
    image = photos_dir / "skimage_chelsea.png"
    texts = [f"a cat number {i} sitting" + " very" * i for i in range(5)]
    expected = runtime.itm_scores(image, texts, batch_size=2)
    np.testing.assert_allclose(runtime.match_one_image_bound(image, texts, batch_size=2), expected, atol=SAME_GRAPH_ABS)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs onnxruntime-gpu and a CUDA GPU")
def test_cuda_fp32_matches_cpu_fp32(tiny_export, photos_dir):
    image, texts = photos_dir / "coco_000000039769.png", ["two cats on a couch", "a football player", "a dog"]
    cpu = BridgeTowerRuntime.load(tiny_export).itm_scores(image, texts)
    cuda = BridgeTowerRuntime.load(tiny_export, device="cuda")
    assert cuda.backend.device == "cuda"
    assert np.abs(cuda.itm_scores(image, texts) - cpu).max() <= RUNTIME_FP32_BOUNDS["itm_probability_abs"]
