import pytest

from bt_runtime import read_manifest
from bt_runtime.backends.trt_profiles import check_shape_in_profile, input_shapes, ort_tensorrt_options, profile_ranges
from bt_runtime.errors import BackendInputError


def test_profile_ranges_cap_seq_and_follow_batch():
    ranges = profile_ranges((1, 8, 32), (8, 40, 512), max_seq=128)
    assert ranges == {"batch": (1, 8, 32), "seq": (8, 40, 128), "image_batch": (1, 1, 32)}
    for bad in [(8, 1, 32), (0, 1, 2), (1, 2)]:
        with pytest.raises(BackendInputError, match="batch"):
            profile_ranges(bad)


def test_input_shapes_resolve_every_graph_of_an_export(tiny_export):
    manifest = read_manifest(tiny_export)
    ranges = profile_ranges(max_seq=manifest.config.max_text_length)
    cross = input_shapes(manifest.graph_io("cross_modal"), ranges)
    layers, tokens, hidden = 2, manifest.config.num_image_tokens, 128
    assert cross["text_bridge"] == ((1, layers, 8, hidden), (8, layers, 40, hidden), (32, layers, 128, hidden))
    assert cross["image_bridge"] == ((1, layers, tokens, hidden), (1, layers, tokens, hidden),
                                     (32, layers, tokens, hidden))
    assert cross["image_index"] == ((1,), (8,), (32,))
    assert input_shapes(manifest.graph_io("vision_tower"), ranges)["pixel_values"][2] == (32, 3, 96, 96)
    with pytest.raises(BackendInputError, match="axis 'seq' has no profile range"):
        input_shapes(manifest.graph_io("text_tower"), {"batch": (1, 1, 1)})


def test_shapes_outside_the_profile_are_refused_with_advice():
    profile = ((1, 8), (8, 40), (32, 128))
    check_shape_in_profile("input_ids", (4, 100), profile)
    with pytest.raises(BackendInputError, match=r"input 'input_ids' of shape \(64, 10\).*rebuild the engines"):
        check_shape_in_profile("input_ids", (64, 10), profile)


def test_onnxruntime_tensorrt_provider_options(tiny_export):
    manifest = read_manifest(tiny_export)
    options = ort_tensorrt_options(manifest.graph_io("text_tower"), profile_ranges(max_seq=128), "/cache")
    assert options["trt_profile_min_shapes"] == "input_ids:1x8,attention_mask:1x8"
    assert options["trt_profile_max_shapes"] == "input_ids:32x128,attention_mask:32x128"
    assert options["trt_engine_cache_enable"] == "True" and options["trt_engine_cache_path"] == "/cache"


def test_runtime_passes_tensorrt_ep_options_per_graph(tiny_export, monkeypatch):
    """The ONNX Runtime TensorRT-EP route, with the provider faked as available (no GPU here)."""
    import onnxruntime as ort

    from bt_runtime import BridgeTowerRuntime

    captured = {}
    real = ort.InferenceSession

    class Session:
        def __init__(self, path, options, providers, disabled_optimizers=None):
            captured[path.rsplit("/", 1)[-1]] = providers
            captured["disabled_optimizers"] = disabled_optimizers
            self.providers = [p if isinstance(p, str) else p[0] for p in providers]  # as if each one started
            self.declared = real(path, providers=["CPUExecutionProvider"])  # what the graph declares, checked at load

        def get_inputs(self):
            return self.declared.get_inputs()

        def get_outputs(self):
            return self.declared.get_outputs()

        def get_providers(self):
            return self.providers

    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", Session)
    runtime = BridgeTowerRuntime.load(tiny_export, providers=["TensorrtExecutionProvider", "CPUExecutionProvider"],
                                      tensorrt_profiles={"batch": (1, 2, 4)})
    runtime.backend.session("vision_tower")
    (name, options), fallback = captured["vision_tower.onnx"]
    assert name == "TensorrtExecutionProvider" and fallback == "CPUExecutionProvider"
    assert options["trt_profile_max_shapes"] == "pixel_values:4x3x96x96"
    assert captured["disabled_optimizers"] is None  # the CPU-only fusion opt-out stays off the GPU providers
