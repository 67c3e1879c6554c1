"""The one backend interface, after Polygraphy's runner lifecycle: creating a backend is cheap and checks what was
asked (device, options, precision); sessions or engines are made on first use of each graph; `run` checks the
feeds against the manifest before and the outputs for NaN/Inf after, once, here; `close` (or leaving a `with`
block) releases them. Each backend takes its own small options object; `options_for` refuses options the chosen
backend would ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..errors import BackendInputError
from ..manifest import GraphIO, Manifest
from .feeds import check_feeds, check_outputs


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    # None: CPUExecutionProvider; "TensorrtExecutionProvider" gets profile shapes and an engine cache from the manifest
    providers: list | None = None
    intra_op_threads: int | None = None  # None/0: ONNX Runtime's default
    graph_optimization_level: str = "all"  # disable | basic | extended | all
    tensorrt_profiles: dict | None = None  # {"batch": (min, opt, max), "seq": …} for TensorrtExecutionProvider
    device: str = "cpu"  # cpu | cuda | cuda:N (CUDAExecutionProvider; CPU with a warning when the build lacks it)
    # How intra-op threads wait: "per-run" (spin during a run, stop when it returns), "off", "on" (ONNX Runtime's
    # default); measured in bt_runtime.backends.onnxruntime.SPINNING
    spinning: str = "per-run"
    prepack_weights: bool = True  # False: one copy of each weight instead of MLAS's extra prepacked one
    # int8 on CPU: None picks the recipe measured for this CPU's class (docs/int8.md); "safe" or a recipe's name
    # forces one
    int8_recipe: str | None = None

    def __post_init__(self):
        # types here, once, so a wrong one is a named error and not a TypeError deep in the backend; values
        # (known levels, providers, devices) are checked by the backend, which knows what this build has
        check_types(self, {"providers": ((list, tuple), "a list of provider names", True),
                           "intra_op_threads": ((int, np.integer), "an integer", True),
                           "graph_optimization_level": (str, "a string", False),
                           "tensorrt_profiles": (dict, "a dict", True), "device": (str, "a string", False),
                           "spinning": (str, "a string", False), "prepack_weights": (bool, "True or False", False),
                           "int8_recipe": (str, "a string", True)})


def check_types(options, wanted: dict) -> None:
    """Each field of `options` of the type `wanted` gives: {field: (types, in words, None allowed)}."""
    for name, (types, words, optional) in wanted.items():
        check_type(name, getattr(options, name), types, words, optional)


def check_type(name: str, value, types, words: str, optional: bool = False) -> None:
    """`value` is of `types` (None too if `optional`), else an error naming `name` and what is valid in `words`; a
    bool is not taken for an integer. For options and keyword arguments (counts: features.check_positive)."""
    if value is None and optional:
        return
    if not isinstance(value, types) or (words == "an integer" and isinstance(value, bool)):
        raise BackendInputError(f"{name} must be {words}{' or None' if optional else ''}, got {value!r}")


@dataclass(frozen=True)
class TensorRTOptions:
    """None yet: the engines carry their precision and profiles (`bt-run build-engines`)."""


BACKEND_OPTIONS = {"onnxruntime": OnnxRuntimeOptions, "tensorrt": TensorRTOptions}
RENAMED = {"allow_spinning": ("spinning", "spinning='on' (True) or spinning='off' (False); the default 'per-run' "
                                          "spins only while a graph runs")}  # old option → (new option, hint)


def options_for(backend: str, options=None, given: dict | None = None):
    """The options object for `backend`: `options` as given, or one built from keyword options `given`; options the
    backend would ignore are refused, naming them and the backend's own."""
    if backend not in BACKEND_OPTIONS:
        raise BackendInputError(f"backend {backend!r} is not available; valid: {list(BACKEND_OPTIONS)}")
    kind, given = BACKEND_OPTIONS[backend], dict(given or {})
    valid = [f.name for f in fields(kind)]
    ignored = sorted(set(given) - set(valid))
    if ignored:
        renamed = "".join(f"; {name} is now {RENAMED[name][1]}" for name in ignored
                          if name in RENAMED and RENAMED[name][0] in valid)
        raise BackendInputError(f"option(s) {ignored} do not apply to backend {backend!r}; its options: "
                                f"{valid or 'none'}{renamed}")
    if options is None:
        return kind(**given)
    if not isinstance(options, kind):
        raise BackendInputError(f"options: {type(options).__name__} given for backend {backend!r}; expected "
                                f"{kind.__name__}")
    if given:
        raise BackendInputError(f"give options={kind.__name__}(…) or keyword options {sorted(given)}, not both")
    return options


class Backend:
    """run(graph, feeds) → {output name: array}, for the graphs in `graphs`, on `device` ("cpu" or "cuda")."""

    name = "backend"

    def __init__(self, manifest: Manifest, precision: str, graphs: tuple[str, ...], device: str = "cpu"):
        self.manifest, self.precision, self.graphs, self.device = manifest, precision, graphs, device

    def graph_io(self, graph: str) -> GraphIO:
        if graph not in self.graphs:
            raise BackendInputError(f"graph {graph!r}; valid: {list(self.graphs)}")
        return self.manifest.graph_io(graph)

    def run(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        io = self.graph_io(graph)
        check_feeds(graph, io.inputs, feeds)
        results = self._infer(graph, feeds, list(outputs or io.output_names))
        check_outputs(graph, results)
        return results

    def run_bound(self, graph: str, feeds: dict, outputs: list[str], keep: tuple[str, ...] = ()) -> dict:
        """Like run, but outputs named in `keep` may stay on the device and feed a later run_bound without a host
        round trip. Here (no device path): every output comes back as an array."""
        return self.run(graph, feeds, outputs)

    def _infer(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release sessions, engines and buffers; they are made again if the backend is used after this."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
