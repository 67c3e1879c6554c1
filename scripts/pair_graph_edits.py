"""Two graph edits that could speed up the fp32 pair, measured against the export as written (issue 21: fp32 ≥ 1.15×
the naive export; results: docs/benchmarks.md, "Where the goals are out of reach").

    python3 scripts/pair_graph_edits.py EXPORT [--rounds 21] [--json out.json]

- `packed`: MatMuls that read the same tensor with constant weights (+ constant bias Add) become one MatMul over the
  concatenated weights, one Add and a Split: the text tower's Q/K/V, and in the cross-modal stack each side's
  Q/K/V together with the other side's cross-attention K/V (they read the same layer input). Fewer, wider calls are
  what small-M matrix products (40 text tokens) usually gain from.
- `gemm`: MatMul(3-D x, W) + Add(bias) → Reshape to 2-D → Gemm(x, W, bias) → Reshape back, which puts the bias into
  the matrix product (ONNX Runtime fuses MatMul + Add into Gemm only for 2-D inputs).
- `packed+gemm`: both.

Each variant's three fp32 graphs run as the runtime runs them (its session options) on one synthetic image and a
40-token text; variants interleaved in a seeded shuffled order per round, 100 ms pause before each pair, medians.
Outputs are compared with the export's (max |Δ|). The edits are for measuring only; nothing here writes an export.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

GRAPHS = ("vision_tower", "text_tower", "cross_modal_pooled")


def _linears(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto, str]]:
    """(MatMul, its bias Add, the bias initializer) for every MatMul with a constant weight and a constant bias."""
    inits = {i.name for i in model.graph.initializer}
    consumers = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    found = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits or len(consumers[node.output[0]]) != 1:
            continue
        (add,) = consumers[node.output[0]]
        bias = [name for name in add.input if name != node.output[0]]
        if add.op_type == "Add" and len(bias) == 1 and bias[0] in inits:
            found.append((node, add, bias[0]))
    return found


def pack(model: onnx.ModelProto) -> int:
    """Merge the linears that share an input into MatMul + Add + Split; returns how many groups."""
    inits = {i.name: i for i in model.graph.initializer}
    groups = collections.defaultdict(list)
    for linear in _linears(model):
        groups[linear[0].input[0]].append(linear)
    replace, dead = {}, set()
    for k, (source, members) in enumerate((s, m) for s, m in groups.items() if len(m) > 1):
        weights = [numpy_helper.to_array(inits[mm.input[1]]) for mm, _, _ in members]
        biases = [numpy_helper.to_array(inits[b]) for _, _, b in members]
        model.graph.initializer.extend([
            numpy_helper.from_array(np.concatenate(weights, axis=1), f"packed_w_{k}"),
            numpy_helper.from_array(np.concatenate(biases), f"packed_b_{k}"),
            numpy_helper.from_array(np.array([w.shape[1] for w in weights], np.int64), f"packed_sizes_{k}")])
        # at the first member's place: every member reads `source`, so it exists there, and consumers come later
        replace[members[0][0].output[0]] = [
            helper.make_node("MatMul", [source, f"packed_w_{k}"], [f"packed_mm_{k}"]),
            helper.make_node("Add", [f"packed_mm_{k}", f"packed_b_{k}"], [f"packed_add_{k}"]),
            helper.make_node("Split", [f"packed_add_{k}", f"packed_sizes_{k}"], [a.output[0] for _, a, _ in members],
                             axis=-1)]
        dead.update(n.output[0] for mm, add, _ in members for n in (mm, add))
    _rewrite(model, replace, dead)
    return len(replace)


def gemm(model: onnx.ModelProto) -> int:
    """MatMul + bias Add → Reshape, Gemm, Reshape; returns how many."""
    inits = {i.name: i for i in model.graph.initializer}
    replace, dead = {}, set()
    for k, (mm, add, bias) in enumerate(_linears(model)):
        if len(inits[bias].dims) != 1:
            continue
        rows, cols = inits[mm.input[1]].dims
        model.graph.initializer.extend([numpy_helper.from_array(np.array([-1, rows], np.int64), f"gemm_2d_{k}"),
                                        numpy_helper.from_array(np.array([cols], np.int64), f"gemm_n_{k}")])
        x = mm.input[0]
        replace[mm.output[0]] = [
            helper.make_node("Shape", [x], [f"gemm_lead_{k}"], end=-1),
            helper.make_node("Reshape", [x, f"gemm_2d_{k}"], [f"gemm_x_{k}"]),
            helper.make_node("Gemm", [f"gemm_x_{k}", mm.input[1], bias], [f"gemm_y_{k}"]),
            helper.make_node("Concat", [f"gemm_lead_{k}", f"gemm_n_{k}"], [f"gemm_shape_{k}"], axis=0),
            helper.make_node("Reshape", [f"gemm_y_{k}", f"gemm_shape_{k}"], [add.output[0]])]
        dead.add(add.output[0])
    _rewrite(model, replace, dead)
    del model.graph.value_info[:]  # shapes of the rewired tensors are re-inferred at load
    return len(replace)


def _rewrite(model: onnx.ModelProto, replace: dict, dead: set) -> None:
    """Nodes keyed by their first output's name (unique in a graph; Python ids of protobuf wrappers are not stable)."""
    nodes = []
    for node in model.graph.node:
        if node.output[0] in replace:
            nodes += replace[node.output[0]]
        elif node.output[0] not in dead:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


EDITS = {"packed": (pack,), "gemm": (gemm,), "packed+gemm": (pack, gemm)}


def write_variants(export: Path, directory: Path) -> dict[str, dict[str, int]]:
    counts = {}
    for name, edits in EDITS.items():
        (directory / name).mkdir()
        for graph in GRAPHS:
            model = onnx.load(str(export / f"{graph}.onnx"))
            counts.setdefault(name, {})[graph] = [edit(model) for edit in edits]
            onnx.save(model, str(directory / name / f"{graph}.onnx"), save_as_external_data=True,
                      location=f"{graph}.onnx.data")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from benchmarks import machine
    from benchmarks.scenarios import pair_feeds
    from bt_runtime import BridgeTowerRuntime
    from bt_runtime.backends import onnxruntime as backend

    feeds = pair_feeds(BridgeTowerRuntime.load(args.export, precision="fp32"))

    def pair(sessions) -> tuple[list[float], list[np.ndarray]]:
        marks = [time.perf_counter()]
        image = sessions["vision_tower"].run(None, feeds["vision_tower"])[0]
        marks.append(time.perf_counter())
        text = sessions["text_tower"].run(None, feeds["text_tower"])[0]
        marks.append(time.perf_counter())
        outputs = sessions["cross_modal_pooled"].run(None, dict(feeds["cross_modal"], text_bridge=text,
                                                                image_bridge=image))
        marks.append(time.perf_counter())
        return [b - a for a, b in zip(marks, marks[1:], strict=False)] + [marks[-1] - marks[0]], [image, text, *outputs]

    with tempfile.TemporaryDirectory(prefix="bt-edits-") as tmp:
        counts = write_variants(args.export, Path(tmp))
        variants = {"as exported": {g: backend.cpu_session(args.export / f"{g}.onnx") for g in GRAPHS}}
        variants |= {name: {g: backend.cpu_session(Path(tmp) / name / f"{g}.onnx") for g in GRAPHS}
                     for name in EDITS}
        reference = pair(variants["as exported"])[1]
        differences = {name: max(float(np.abs(a - b).max()) for a, b in zip(reference, pair(s)[1], strict=True))
                       for name, s in variants.items()}
        samples = {name: [] for name in variants}
        rng = np.random.default_rng(0)
        for _ in range(args.rounds):
            for name in rng.permutation(list(variants)):
                time.sleep(0.1)
                samples[name].append(pair(variants[name])[0])
    medians = {name: np.median(np.array(s) * 1e3, axis=0) for name, s in samples.items()}
    base = medians["as exported"]
    print(f"{machine.cpu_info()}; {args.rounds} interleaved rounds; ms (median)")
    print("| variant | vision | text | cross_modal_pooled | pair | pair × as exported | max abs Δ |")
    print("|---|---|---|---|---|---|---|")
    for name, m in medians.items():
        print(f"| {name} | {m[0]:.1f} | {m[1]:.1f} | {m[2]:.1f} | {m[3]:.1f} | {base[3] / m[3]:.3f} | "
              f"{differences[name]:.2g} |")
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine.cpu_info(), "versions": machine.versions(), "rounds": args.rounds,
            "edited_nodes": counts, "max_abs_difference": differences,
            "median_ms": {n: dict(zip(("vision_tower", "text_tower", "cross_modal_pooled", "pair"),
                                      np.round(m, 2).tolist(), strict=True)) for n, m in medians.items()},
            "samples_ms": {n: np.round(np.array(s) * 1e3, 2).tolist() for n, s in samples.items()}}, indent=1) + "\n")


if __name__ == "__main__":
    main()
