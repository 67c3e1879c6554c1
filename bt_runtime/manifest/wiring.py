"""The `wiring` section of `manifest.json`: how the three graphs connect and what their outputs mean, as data a
reader in any language can follow (docs/manifest.md#wiring-wiring). Part of the schema (bt_runtime.manifest.schema).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class Wire:
    """`graph`.`input` takes `source_graph`.`source` (an output, or an input shared with that graph)."""
    graph: str
    input: str
    source_graph: str
    source: str
    source_kind: Literal["output", "input"]


@dataclass
class AxisLink:
    """Symbolic axes are per graph: `graph`.`axis` has the size of `same_as_graph`.`same_as_axis`."""
    graph: str
    axis: str
    same_as_graph: str
    same_as_axis: str


@dataclass
class Broadcast:
    """Pair b of `graph` uses row `index_input`[b] of `gathered_input` along `axis` (one image, many texts).
    `graphs`: every graph that takes this input by this rule (`graph` and its substitutes); when absent (exports made
    before the field), `graph` and the graphs listed in `wiring.substitutes` as replacing it."""
    graph: str
    index_input: str
    gathered_input: str
    axis: int
    rule: str
    graphs: list[str] = field(default_factory=list)


@dataclass
class Substitute:
    """`graph` takes the inputs of `replaces` and gives the same numbers for its outputs, all but `omits`, for less
    work: run it instead whenever none of `omits` is needed."""
    graph: str
    replaces: str
    omits: list[str]
    rule: str


@dataclass
class Wiring:
    """How the graphs connect and what their outputs mean, as data (for readers in any language)."""
    wires: list[Wire]
    axes: list[AxisLink]
    broadcast: Broadcast
    outputs: dict[str, str]  # output name → meaning (label order, normalization, layout)
    substitutes: list[Substitute] = field(default_factory=list)

    def substitute_for(self, graph: str, outputs: list[str]) -> str:
        """The cheapest listed graph that gives `outputs` in place of `graph` (else `graph` itself)."""
        return next((s.graph for s in self.substitutes
                     if s.replaces == graph and not set(outputs) & set(s.omits)), graph)
