"""Accuracy-aware int8 (`bt-export --precision int8 --int8-search`): which blocks to quantize, measured on the
calibration pairs of this export (the user's checkpoint, `--parity-images` and captions, else the defaults; the
shapes checkpoint's own scenes and captions, `samples.shapes_calibration`).

Blocks are the checkpoint's own units, read from the graphs: each tower layer (`vision_tower/blocks.3`,
`text_tower/layers.7`), each cross-modal layer per side (`cross_modal/image_layers.2`), the bridge transforms, the
poolers, each head, and the MLM head split into its transform and its decoder (`cross_modal/mlm_score.decoder`,
the vocabulary projection, judged on its own). The head-specific cross_modal_pooled graph follows cross_modal.

1. Sensitivity: each block quantized alone (everything else float32), the export's int8 task bounds measured on the
   chained graphs against fp32 eager transformers; its damage = the largest metric deviation over its allowance
   (|Δp| / bound, (1 − agreement) / (1 − bound), …: ≥ 1 fails).
2. Greedy: blocks in order of increasing damage join the set one by one; a block whose addition breaks a bound
   is left out (float32), and the search goes on with the next. Every accepted set was measured, so the chosen set
   keeps every bound on these pairs (bt-export then checks the written variant again, as for any precision).

Cost: two quantize-and-evaluate rounds per block (tiny: seconds; the full-size base: 10–15 min on 2 cores). Between
rounds the Evaluator reuses what did not change: the outputs of a graph given the same file and the same inputs (so
a cross-modal candidate does not re-run the towers), and the int8 file of the graphs whose part of the set is the
one already chosen (so a candidate only re-quantizes its own graph). The chosen
blocks, the sensitivity table and the calibration size go into the manifest (`variants.int8.details.search`).
Activation quantization stays dynamic (per call): static calibrated activations were not measured here.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from bt_runtime.backends.onnxruntime import cpu_session

from .parity import ParityRow, check_task_parity
from .precision import attributed_paths, write_int8
from .specs import computes


@dataclass
class BlockResult:
    block: str  # "<graph>/<module path prefix>"
    damage: float  # max over metrics of deviation / allowance, alone; ≥ 1 fails
    passed_alone: bool
    chosen: bool = False

    def to_json(self) -> dict:
        return {"block": self.block, "damage_alone": round(self.damage, 6), "passed_alone": self.passed_alone,
                "chosen": self.chosen}


def block_key(path: str) -> str:
    """'blocks.3.attn.out_proj' → 'blocks.3'; 'mlm_score.mlm_score.decoder' → 'mlm_score.decoder'."""
    parts = path.split(".")
    if parts[0] == "mlm_score":
        return "mlm_score.decoder" if "decoder" in parts else "mlm_score.transform"
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0]


def find_blocks(directory: Path, files: dict[str, str]) -> list[str]:
    """Every block with a MatMul/Gemm weight in the graphs, in graph order, as '<graph family>/<key>'."""
    blocks = []
    for graph, file in files.items():
        model = onnx.load(str(directory / file), load_external_data=False)
        nodes = list(model.graph.node)
        for node, path in zip(nodes, attributed_paths(nodes), strict=True):
            if node.op_type in ("MatMul", "Gemm") and path:
                block = f"{computes(graph)}/{block_key(path)}"
                if block not in blocks:
                    blocks.append(block)
    return blocks


def exclusions(blocks: list[str], quantized: set[str]) -> tuple[str, ...]:
    """int8_excluded patterns that keep every block but `quantized` float32."""
    return tuple(f"^{re.escape(b)}(\\.|$)" for b in blocks if b not in quantized)


def damage(rows: list[ParityRow]) -> float:
    worst = 0.0
    for row in rows:
        if row.metric.endswith(("agreement", "cosine_min")):
            allowance, deviation = 1.0 - row.bound, 1.0 - row.value
        else:
            allowance, deviation = row.bound, row.value
        if allowance > 0:
            worst = max(worst, deviation / allowance)
        elif deviation > 0:  # a bound that allows nothing
            worst = float("inf")
    return worst


def _feeds_digest(feeds: dict) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(feeds):
        array = np.ascontiguousarray(feeds[name])
        digest.update(f"{name}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


KEPT_OUTPUTS_PER_FILE = 2  # the chosen set's inputs and the latest candidate's


class Evaluator:
    """Measures the task bounds of candidate sets of int8 blocks, one quantize-and-evaluate round each, without
    redoing work that a round shares with earlier ones (see the module's "Cost")."""

    def __init__(self, directory: Path, specs: dict, refs, bounds: dict, blocks: list[str], work: Path):
        self.directory, self.specs, self.refs, self.bounds, self.blocks, self.work = \
            directory, specs, refs, bounds, blocks, work
        self.written: dict[str, dict[frozenset, str]] = {}  # graph → its quantized blocks → int8 file
        self.sessions: dict[str, object] = {}  # file → ONNX Runtime session
        self.outputs: dict[tuple[str, str], dict] = {}  # (file, digest of the feeds) → outputs
        self.rounds = 0

    def evaluate(self, quantized: set[str], chosen: set[str] = frozenset()) -> list[ParityRow]:
        """The int8 task rows with the blocks in `quantized` int8; `chosen` (a subset) names the set that later
        rounds build on, whose files are kept."""
        self.rounds += 1
        files = {name: self._file(name, spec, quantized, chosen) for name, spec in self.specs.items()}
        return check_task_parity(self.directory, self.specs, self.refs, files, self.bounds,
                                 run=lambda name, feeds: self._run(name, files[name], feeds))

    def _part(self, name: str, blocks) -> frozenset:
        return frozenset(b for b in blocks if b.startswith(f"{computes(name)}/"))

    def _file(self, name: str, spec, quantized: set[str], chosen: set[str]) -> str:
        fp32 = str((self.directory / spec.file).resolve())
        part = self._part(name, quantized)
        if not part:
            return fp32
        cached = self.written.setdefault(name, {})
        if part not in cached:
            target = self.work / f"search.{name}.{self.rounds}.int8.onnx"
            written = write_int8(self.directory / spec.file, target, name, exclusions(self.blocks, part))
            cached[part] = str(target) if written is not None else fp32
        keep = {part, self._part(name, chosen)}
        for stale in [key for key in cached if key not in keep]:
            self._forget(cached.pop(stale), fp32)
        return cached[part]

    def _forget(self, file: str, fp32: str) -> None:
        if file == fp32:
            return
        self.sessions.pop(file, None)
        for key in [k for k in self.outputs if k[0] == file]:
            del self.outputs[key]
        Path(file).unlink(missing_ok=True)
        Path(f"{file}.data").unlink(missing_ok=True)

    def _run(self, name: str, file: str, feeds: dict) -> dict:
        key = (file, _feeds_digest(feeds))
        if key in self.outputs:
            self.outputs[key] = self.outputs.pop(key)  # most recently used last
        else:
            same_file = [k for k in self.outputs if k[0] == file]
            for stale in same_file[:-(KEPT_OUTPUTS_PER_FILE - 1) or None]:  # bounded: mlm_logits are large
                del self.outputs[stale]
            if file not in self.sessions:
                self.sessions[file] = cpu_session(file)
            names = [t.name for t in self.specs[name].outputs]
            self.outputs[key] = dict(zip(names, self.sessions[file].run(names, feeds), strict=True))
        return self.outputs[key]


def search(directory: Path, specs: dict, refs, bounds: dict, log=lambda message: None):
    """(patterns keeping the unchosen blocks float32, [BlockResult…] in sensitivity order)."""
    blocks = find_blocks(directory, {name: spec.file for name, spec in specs.items()
                                     if computes(name) == name})  # a pooled graph has the blocks of cross_modal
    with tempfile.TemporaryDirectory(dir=directory, prefix=".int8-search-") as tmp:
        work = Path(tmp)
        evaluator, results = Evaluator(directory, specs, refs, bounds, blocks, work), []
        for index, block in enumerate(blocks):
            rows = evaluator.evaluate({block})
            results.append(BlockResult(block, damage(rows), all(r.passed for r in rows)))
            log(f"int8 search: sensitivity {index + 1}/{len(blocks)} {block}: damage {results[-1].damage:.3g}")
        results.sort(key=lambda r: r.damage)
        chosen: set[str] = set()
        for result in results:
            if not result.passed_alone:
                continue
            rows = evaluator.evaluate(chosen | {result.block}, chosen)
            if all(r.passed for r in rows):
                chosen.add(result.block)
                result.chosen = True
            log(f"int8 search: {'+' if result.chosen else '-'} {result.block} ({len(chosen)} chosen)")
    return exclusions(blocks, chosen), results
