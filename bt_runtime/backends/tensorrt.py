"""TensorRT backend: deserialize the export's engines, set input shapes within the profile, bind device buffers
(reused across calls, grown when needed), run with execute_async_v3 on a stream, return NumPy.

`tensorrt` and `cuda-python` are imported only when the backend is created. Before deserializing, the engine's
recorded TensorRT version and GPU compute capability are compared with this machine's: a mismatch is a clear error
that says how to rebuild, never a crash inside TensorRT. `EngineRunner` holds the buffer and shape logic; it talks
to the engine, the execution context and device memory through their methods only, so it is tested on CPU with a
test double. Not run on this project's machines (no TensorRT there); see docs/tensorrt.md.
"""

from __future__ import annotations

import numpy as np

from ..errors import BackendError, BackendInputError, ManifestError
from ..integrity import verify_sha256
from ..manifest import Manifest, TensorRTEngines
from .base import Backend, TensorRTOptions
from .trt_profiles import check_shape_in_profile, input_shapes


def rebuild_hint(directory) -> str:
    return (f"rebuild the engines on this machine: bt-run build-engines {directory}; ONNX Runtime's "
            "TensorrtExecutionProvider is the alternative route")


def check_engine_compatibility(section: TensorRTEngines, trt_version: str, gpu: dict, directory) -> None:
    """Engines are specific to TensorRT's version and the GPU architecture they were built for."""
    built_major_minor = ".".join(section.version.split(".")[:2])
    here_major_minor = ".".join(trt_version.split(".")[:2])
    problems = []
    if built_major_minor != here_major_minor:
        problems.append(f"built with TensorRT {section.version}, this is TensorRT {trt_version}")
    if section.compute_capability != gpu["compute_capability"]:
        problems.append(f"built for {section.gpu} (compute capability {section.compute_capability}), this GPU "
                        f"is {gpu['name']} ({gpu['compute_capability']})")
    if problems:
        raise BackendError("TensorRT engines cannot be used here: " + "; ".join(problems) + ". " +
                           rebuild_hint(directory))


class EngineRunner:
    """One engine + execution context: names, dtypes and device buffers, reused call after call."""

    def __init__(self, engine, context, memory, profile: dict[str, tuple[tuple, tuple, tuple]], input_mode):
        self.engine, self.context, self.memory, self.profile = engine, context, memory, profile
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == input_mode]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: memory.numpy_dtype(engine.get_tensor_dtype(n)) for n in names}
        self._buffers: dict[str, tuple[int, int]] = {}  # name → (device pointer, capacity in bytes)

    def _buffer(self, name: str, nbytes: int) -> int:
        pointer, capacity = self._buffers.get(name, (None, 0))
        if nbytes > capacity:
            if pointer is not None:
                self.memory.free(pointer)
            capacity = max(nbytes, 2 * capacity)  # grow geometrically: few reallocations as batches vary
            pointer = self.memory.alloc(capacity)
            self._buffers[name] = (pointer, capacity)
        return pointer

    def infer(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        for name in self.inputs:
            array = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            check_shape_in_profile(name, array.shape, self.profile[name])
            if not self.context.set_input_shape(name, array.shape):
                raise BackendInputError(f"TensorRT rejected input {name!r} of shape {array.shape}")
            pointer = self._buffer(name, array.nbytes)
            self.memory.copy_to_device(pointer, array)
            self.context.set_tensor_address(name, pointer)
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            results[name] = np.empty(shape, dtype=self.dtypes[name])
            self.context.set_tensor_address(name, self._buffer(name, results[name].nbytes))
        if not self.context.execute_async_v3(self.memory.stream):
            raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        for name, array in results.items():
            self.memory.copy_to_host(array, self._buffers[name][0])
        self.memory.synchronize()
        return {name: results[name] for name in (outputs or self.outputs)}

    def close(self) -> None:
        for pointer, _ in self._buffers.values():
            self.memory.free(pointer)
        self._buffers.clear()


class CudaMemory:
    """Device memory and one stream through cuda-python (never torch)."""

    def __init__(self, trt):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        self.cudart, self.trt = cudart, trt
        self.stream = self._check(cudart.cudaStreamCreate())

    def _check(self, result):
        error, *values = result if isinstance(result, tuple) else (result,)
        if int(error) != 0:
            raise BackendError(f"CUDA call failed: {error}")
        return values[0] if values else None

    def numpy_dtype(self, trt_dtype):
        return np.dtype(self.trt.nptype(trt_dtype))

    def alloc(self, nbytes: int) -> int:
        return int(self._check(self.cudart.cudaMalloc(nbytes)))

    def free(self, pointer: int) -> None:
        self._check(self.cudart.cudaFree(pointer))

    def copy_to_device(self, pointer: int, array: np.ndarray) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, kind, self.stream))

    def copy_to_host(self, array: np.ndarray, pointer: int) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes, kind, self.stream))

    def synchronize(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self.stream))


def gpu_identity() -> dict:
    """Name and compute capability of GPU 0, through cuda-python (never torch)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    error, properties = cudart.cudaGetDeviceProperties(0)
    if int(error) != 0:
        raise BackendError(f"no CUDA GPU visible (cudaGetDeviceProperties: {error})")
    name = properties.name.decode() if isinstance(properties.name, bytes) else str(properties.name)
    return {"name": name.rstrip("\x00"), "compute_capability": f"{properties.major}.{properties.minor}"}


class TensorRTBackend(Backend):
    """The export's engines of one precision, each deserialized on its first run; outputs come back as float32."""

    name = "tensorrt"

    def __init__(self, manifest: Manifest, precision: str = "fp16", options: TensorRTOptions | None = None,
                 verify_checksums: bool = True):
        sections = manifest.tensorrt
        if precision not in sections:
            raise ManifestError(f"this export has no TensorRT {precision} engines (have: {list(sections) or 'none'}); "
                                + rebuild_hint(manifest.directory))
        try:
            import tensorrt as trt
        except ImportError as err:
            raise BackendError("backend 'tensorrt' needs the tensorrt package and an NVIDIA GPU "
                               "(pip install 'bt-toolkit[trt]')") from err
        self.section, self.trt = sections[precision], trt
        check_engine_compatibility(self.section, trt.__version__, gpu_identity(), manifest.directory)
        super().__init__(manifest, precision, tuple(g for g in manifest.graphs if g in self.section.engines), "cuda")
        self.verify_checksums = verify_checksums
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.memory = CudaMemory(trt)
        self._runners: dict[str, EngineRunner] = {}

    def _runner(self, graph: str) -> EngineRunner:
        if graph not in self._runners:
            entry = self.section.engines[graph]
            path = self.manifest.path(entry.file)
            if not path.is_file():
                raise ManifestError(f"engine {str(path)!r} is missing; " + rebuild_hint(self.manifest.directory))
            if self.verify_checksums:
                verify_sha256(path, entry.sha256, rebuild_hint(self.manifest.directory))
            engine = self.trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise BackendError(f"TensorRT could not deserialize {entry.file}; " +
                                   rebuild_hint(self.manifest.directory))
            context = engine.create_execution_context()
            ranges = {axis: tuple(r) for axis, r in self.section.profiles.items()}
            profile = input_shapes(self.manifest.graph_io(graph), ranges)
            self._runners[graph] = EngineRunner(engine, context, self.memory, profile, self.trt.TensorIOMode.INPUT)
        return self._runners[graph]

    def close(self) -> None:
        """Free every engine's device buffers; engines are deserialized again if used after this."""
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()

    def _infer(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        results = self._runner(graph).infer(feeds, outputs)
        return {name: array.astype(np.float32, copy=False) for name, array in results.items()}
