"""Tiling: stream axes, phases and tile sizes for every kernel.

For each kernel the stream planner assigns ops to phases and stream axes
(``coec.backend.plan``); then tile sizes are searched: for each cap on the
tile size, weights stay resident in PMUs while SRAM allows, and otherwise the
largest ones stream from HBM in chunks (once per tile, the matmul formula
``|A| + |B|·⌈M/m⌉ + |C|``). The configuration with the fewest modeled cycles
that fits SRAM wins; ties go to the larger tile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from coec.backend.plan import (
    Footprint,
    KernelPlan,
    Layout,
    b_axis,
    plan_streams,
    structure,
    write_plan,
)
from coec.backend.plan_cost import estimate
from coec.backend.target import Target, load_target
from coec.ir import ops as df
from coec.ir.errors import CapacityError, ConfigError


def streamable_weights(
    inputs: Sequence[SSAValue], outputs: Sequence[tuple[SSAValue, SSAValue]], plan: KernelPlan
) -> list[df.MatmulOp]:
    """Matmuls whose right operand is a group input that only that matmul reads."""
    external = set(inputs)
    handed_back = {inner for inner, _ in outputs}
    readers: dict[SSAValue, int] = {}
    for op in plan.ops:
        for v in op.operands:
            readers[v] = readers.get(v, 0) + 1
    out = [
        op
        for op in plan.ops
        if isinstance(op, df.MatmulOp)
        and op.b in external
        and op.b not in handed_back
        and readers[op.b] == 1
    ]
    return sorted(out, key=lambda op: -df.tensor_type(op.b).nbytes)


def _tile_caps(extents: list[int], max_tile: int | None = None) -> list[int]:
    largest = max(extents, default=1)
    if max_tile:
        largest = min(largest, max_tile)
    caps, t = {largest}, 1
    while t < largest:
        caps.add(t)
        t *= 2
    return sorted(caps, reverse=True)


Boundary = tuple[Sequence[SSAValue], Sequence[tuple[SSAValue, SSAValue]]]


def kernel_boundary(kernel: df.KernelOp) -> Boundary:
    """A kernel's inputs (block arguments) and outputs (yielded value, kernel result)."""
    return list(kernel.block.args), list(
        zip(kernel.block.last_op.operands, kernel.outputs, strict=True)
    )


class _Layouts:
    """A group's layouts by the weights it streams (they do not depend on tile sizes), each
    worked out once for a tile search that tries many tile sizes and weight chunks."""

    def __init__(self, boundary: Boundary, plan: KernelPlan) -> None:
        self.boundary, self.plan = boundary, plan
        self.streamable = streamable_weights(*boundary, plan)
        self._found: dict[frozenset, tuple[Layout, Footprint]] = {}

    def __call__(self, streaming: frozenset) -> tuple[Layout, Footprint]:
        if streaming not in self._found:
            self._found[streaming] = structure(*self.boundary, self.plan, streaming)
        return self._found[streaming]

    def at(self, streaming: frozenset, tiles: Sequence[int], chunks: dict) -> Layout:
        """The layout with its SRAM at these tile sizes and weight chunks."""
        lay, footprint = self(streaming)
        return replace(lay, sram_by_phase=footprint.sram_by_phase(tiles, chunks))


def _chunks(n: int) -> list[int]:
    """The weight chunks tried, largest first: the whole N dim, then powers of two below it."""
    chunk, out = 1 << max(n - 1, 0).bit_length(), []
    while True:
        chunk = max(1, min(chunk, n))
        out.append(chunk)
        if chunk == 1:
            return out
        chunk //= 2


def _fit_weights(layouts: _Layouts, cap: int) -> Layout:
    """Stream weights (largest first, largest chunk that fits) until SRAM suffices.

    Returns the final layout; its ``sram_bytes`` says whether it fits ``cap``.
    """
    plan = layouts.plan
    plan.b_tiles = {}
    streaming: frozenset = frozenset()
    lay = layouts.at(streaming, plan.tiles, plan.b_tiles)
    if lay.sram_bytes <= cap:
        return lay
    for op in layouts.streamable:
        streaming = streaming | {op}
        _, footprint = layouts(streaming)
        for chunk in _chunks(df.tensor_type(op.b).shape_tuple[b_axis(op)]):
            plan.b_tiles[op] = chunk
            if max(footprint.sram_by_phase(plan.tiles, plan.b_tiles)) <= cap:
                break
        lay = layouts.at(streaming, plan.tiles, plan.b_tiles)
        if lay.sram_bytes <= cap:
            return lay
    return lay


def choose_tiles(
    boundary: Boundary,
    plan: KernelPlan,
    target: Target,
    max_tile: int | None = None,
    what: str = "a kernel",
) -> tuple[KernelPlan, int]:
    """The tiles (and weight chunks) with the fewest modeled cycles; returns (plan, cycles)."""
    cap = target.memory["sram"].capacity_bytes
    best: tuple[int, int, list[int], dict] | None = None
    smallest = None
    layouts = _Layouts(boundary, plan)

    def tier_of(_):
        return "hbm"

    for t_cap in _tile_caps(plan.extents, max_tile):
        plan.tiles = [min(e, t_cap) for e in plan.extents]
        lay = _fit_weights(layouts, cap)
        if lay.sram_bytes > cap:
            smallest = lay.sram_bytes if smallest is None else min(smallest, lay.sram_bytes)
            continue
        cost, _, _ = estimate(plan, lay, target, tier_of)
        key = (cost.cycles, -t_cap)
        if best is None or key < best[:2]:
            best = (cost.cycles, -t_cap, list(plan.tiles), dict(plan.b_tiles))
    if best is None:
        raise CapacityError("sram", smallest or 0, cap, what)
    plan.tiles, plan.b_tiles = best[2], best[3]
    return plan, best[0]


def min_sram_bytes(
    inputs: Sequence[SSAValue], outputs: Sequence[tuple[SSAValue, SSAValue]], plan: KernelPlan
) -> int:
    """SRAM a group needs at one-row tiles with every streamable weight in one-column chunks."""
    streaming = streamable_weights(inputs, outputs, plan)
    _, footprint = structure(inputs, outputs, plan, frozenset(streaming))
    return max(
        footprint.sram_by_phase([1] * len(plan.extents), dict.fromkeys(streaming, 1)), default=0
    )


@dataclass(frozen=True)
class TilePass(ModulePass):
    """Plan each kernel's phases and choose its tiles; written into the IR as attributes.

    Requires: fused IR. Guarantees: every kernel has ``extents``/``tiles`` and every
    inner op ``stream``/``phase``; each kernel's SRAM at those tiles fits the target.
    """

    name = "tile"
    requires = "fused"
    target: str | Target = "sn40l"
    max_tile: int = 0  # 0: no cap; otherwise no tile is larger (exercises tile-by-tile runs)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.max_tile < 0:
            raise ConfigError(f"tile pass: max-tile={self.max_tile} must be at least 1 (0: no cap)")
        self.apply_target(op, load_target(self.target), self.max_tile or None)

    @staticmethod
    def apply_target(module: ModuleOp, target: Target, max_tile: int | None = None) -> None:
        for kernel in module.walk():
            if isinstance(kernel, df.KernelOp):
                ops = [o for o in kernel.compute_ops() if not isinstance(o, df.ConstantOp)]
                plan, _ = choose_tiles(
                    kernel_boundary(kernel),
                    plan_streams(ops),
                    target,
                    max_tile,
                    f"kernel {kernel.sym_name.data}",
                )
                write_plan(kernel, plan)
