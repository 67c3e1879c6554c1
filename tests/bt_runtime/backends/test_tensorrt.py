"""The TensorRT backend's CPU-testable parts: compatibility checks and the buffer/shape logic, driven by a
test double of the engine, execution context and device memory (FakeEngine etc., defined here only)."""

from __future__ import annotations

import numpy as np
import pytest

from bt_runtime.backends.tensorrt import EngineRunner, TensorRTBackend, check_engine_compatibility
from bt_runtime.errors import BackendError, BackendInputError, ManifestError
from bt_runtime.manifest import TensorRTEngines

INPUT, OUTPUT = "input", "output"


class FakeEngine:
    """Test double: one float32 input 'x' (B, 4) and one output 'y' = 2x."""

    num_io_tensors = 2
    names = ["x", "y"]

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return INPUT if name == "x" else OUTPUT

    def get_tensor_dtype(self, name):
        return "float32"


class FakeContext:
    def __init__(self, memory, succeed=True):
        self.memory, self.succeed, self.shapes, self.addresses = memory, succeed, {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes["x"]

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer

    def execute_async_v3(self, stream):
        x = self.memory.blocks[self.addresses["x"]]
        size = int(np.prod(self.shapes["x"])) * 4
        self.memory.blocks[self.addresses["y"]][:size] = (np.frombuffer(x[:size], np.float32) * 2).tobytes()
        return self.succeed


class FakeMemory:
    stream = 0

    def __init__(self):
        self.blocks, self.allocations, self.freed = {}, 0, 0

    def numpy_dtype(self, trt_dtype):
        return np.dtype(trt_dtype)

    def alloc(self, nbytes):
        self.allocations += 1
        pointer = 1000 + self.allocations
        self.blocks[pointer] = bytearray(nbytes)
        return pointer

    def free(self, pointer):
        self.freed += 1
        del self.blocks[pointer]

    def copy_to_device(self, pointer, array):
        self.blocks[pointer][:array.nbytes] = array.tobytes()

    def copy_to_host(self, array, pointer):
        array[...] = np.frombuffer(bytes(self.blocks[pointer][:array.nbytes]), array.dtype).reshape(array.shape)

    def synchronize(self):
        pass


PROFILE = {"x": ((1, 4), (8, 4), (32, 4))}


def runner(succeed=True):
    memory = FakeMemory()
    return EngineRunner(FakeEngine(), FakeContext(memory, succeed), memory, PROFILE, INPUT), memory


def test_runner_binds_runs_and_reuses_buffers():
    run, memory = runner()
    assert run.inputs == ["x"] and run.outputs == ["y"]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(run.infer({"x": x})["y"], 2 * x)
    assert memory.allocations == 2
    run.infer({"x": x[:1]})  # smaller: same buffers
    assert memory.allocations == 2
    big = np.ones((16, 4), np.float32)
    np.testing.assert_array_equal(run.infer({"x": big})["y"], 2 * big)  # larger: both buffers regrown
    assert memory.allocations == 4 and memory.freed == 2
    run.close()
    assert memory.blocks == {}


def test_runner_refuses_shapes_outside_the_profile_and_reports_failed_runs():
    run, _ = runner()
    with pytest.raises(BackendInputError, match="outside the engine's optimization profile"):
        run.infer({"x": np.ones((64, 4), np.float32)})
    failing, _ = runner(succeed=False)
    with pytest.raises(BackendError, match="execute_async_v3 failed"):
        failing.infer({"x": np.ones((2, 4), np.float32)})


SECTION = TensorRTEngines(version="10.14.1", gpu="NVIDIA H100", compute_capability="9.0", precision="fp16",
                          strongly_typed=False, profiles={"batch": [1, 8, 32]}, workspace_gib=None,
                          timing_cache="tensorrt.timing_cache", engines={})


def test_engines_from_another_tensorrt_or_gpu_are_refused_with_rebuild_advice():
    check_engine_compatibility(SECTION, "10.14.3", {"name": "NVIDIA H100", "compute_capability": "9.0"}, "x")
    with pytest.raises(BackendError, match=r"TensorRT 10\.14\.1, this is TensorRT 11\.0\.0.*bt-run build-engines"):
        check_engine_compatibility(SECTION, "11.0.0", {"name": "NVIDIA H100", "compute_capability": "9.0"}, "x")
    with pytest.raises(BackendError, match=r"compute capability 9\.0\), this GPU is NVIDIA L4 \(8\.9\)"):
        check_engine_compatibility(SECTION, "10.14.1", {"name": "NVIDIA L4", "compute_capability": "8.9"}, "x")


def test_backend_without_engines_or_tensorrt_says_what_to_do(tiny_export):
    from bt_runtime import BridgeTowerRuntime, read_manifest

    with pytest.raises(ManifestError, match="no TensorRT fp16 engines.*bt-run build-engines"):
        BridgeTowerRuntime.load(tiny_export, backend="tensorrt", precision="fp16")
    manifest = read_manifest(tiny_export)
    manifest.tensorrt = {"fp16": SECTION}
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match="needs the tensorrt package"):
            TensorRTBackend(manifest, "fp16")
