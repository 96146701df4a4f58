"""How a kernel streams: phases, stream axes, tiles, and the SRAM buffers that follow.

A kernel runs as a sequence of *phases*. A phase is a loop over tiles of one
extent; every op in it runs once per tile on slices along its stream axis. An op
that cannot continue the current phase's stream (softmax along the streamed dim,
attention's keys produced in this kernel...) starts a new phase: the values it
needs are then kept whole in SRAM. A phase of extent 1 runs its ops once, whole.

The plan lives in the IR as attributes (``stream`` and ``phase`` on inner ops,
``b_tile`` on matmuls whose weight streams in chunks; ``extents`` and ``tiles`` on
the kernel), so passes write it and the backend reads it without sharing Python
state. ``layout`` derives every SRAM buffer and DMA of a plan — the one place both
the tiling pass (to size tiles) and schedule emission (to write DMAs) ask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from xdsl.dialects.builtin import DenseArrayBase, IntegerAttr, i64
from xdsl.ir import BlockArgument, SSAValue

from coec.backend.cost import buffers_per_tile
from coec.backend.streaming import input_axes
from coec.ir import ops as df
from coec.ir.errors import VerifyError
from coec.ir.types import TensorType


@dataclass
class OpStream:
    phase: int
    out_axis: int | None
    in_axes: list[int | None]


@dataclass
class KernelPlan:
    """Phases and stream axes of a kernel's compute ops (constants excluded)."""

    ops: list[df.DfOp]
    streams: dict[df.DfOp, OpStream]
    extents: list[int]
    tiles: list[int] = field(default_factory=list)
    b_tiles: dict[df.DfOp, int] = field(default_factory=dict)  # 0 / absent: resident

    def tile(self, phase: int) -> int:
        return self.tiles[phase] if self.tiles else 1

    def ntiles(self, phase: int) -> int:
        return math.ceil(self.extents[phase] / self.tile(phase))


def _shape(v: SSAValue) -> tuple[int, ...]:
    return df.tensor_type(v).shape_tuple


class StreamPlanner:
    """Assigns ops, in program order, to phases and stream axes (incrementally)."""

    def __init__(self) -> None:
        self.plan = KernelPlan([], {}, [])
        self.producer: dict[SSAValue, df.DfOp] = {}

    @property
    def phase(self) -> int:
        return len(self.plan.extents) - 1

    def _candidates(self, op: df.DfOp) -> list[tuple[int, list]]:
        """Valid (out axis, operand axes) for ``op`` against the current phase's values."""
        out = _shape(op.results[0])
        found = []
        for j in range(len(out)):
            axes = input_axes(op, j)
            if axes is None:
                continue
            ok = True
            for v, a in zip(op.operands, axes, strict=True):
                src = self.producer.get(v)
                if src is not None and self.plan.streams[src].phase == self.phase:
                    s = self.plan.streams[src]
                    ok = ok and s.out_axis is not None and a == s.out_axis
            if ok:
                found.append((j, axes))
        return found

    def add(self, op: df.DfOp) -> OpStream:
        out = _shape(op.results[0])
        extent = self.plan.extents[-1] if self.plan.extents else None
        stream = None
        if extent is not None and extent > 1:  # continue the current stream if we can
            for j, axes in self._candidates(op):
                if out[j] == extent:
                    stream = OpStream(self.phase, j, axes)
                    break
        if stream is None:
            fresh = self._fresh_stream(op)
            if fresh is not None:  # a barrier, then a new stream with every input whole
                self.plan.extents.append(out[fresh[0]])
                stream = OpStream(self.phase, *fresh)
            else:  # nothing to stream: run whole, in a whole phase
                if extent != 1:
                    self.plan.extents.append(1)
                stream = OpStream(self.phase, None, [None] * len(op.operands))
        self.plan.ops.append(op)
        self.plan.streams[op] = stream
        self.producer[op.results[0]] = op
        return stream

    def _fresh_stream(self, op: df.DfOp) -> tuple[int, list] | None:
        """The longest dim (outermost on ties; never the innermost) ``op`` can stream on."""
        out = _shape(op.results[0])
        best = None
        for j in range(len(out) - 1):
            if out[j] > 1 and (best is None or out[j] > out[best[0]]):
                axes = input_axes(op, j)
                if axes is not None:
                    best = (j, axes)
        return best


def plan_streams(ops: list[df.DfOp]) -> KernelPlan:
    planner = StreamPlanner()
    for op in ops:
        planner.add(op)
    return planner.plan


# -- buffers and DMAs of a plan ----------------------------------------------------------
@dataclass
class Load:
    value: SSAValue  # the kernel's block argument
    phase: int | None  # None: loaded whole before the first phase (resident)
    axis: int | None


@dataclass
class Store:
    value: SSAValue  # the inner value yielded
    result: SSAValue  # the kernel result it becomes
    phase: int
    axis: int | None  # None: stored whole once its phase ends
    #: an update written in place: (axis, start, stop), the only rows that leave SRAM
    region: tuple[int, int, int] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes the store writes: the value, or only its updated region."""
        t = df.tensor_type(self.result)
        if self.region is None:
            return t.nbytes
        axis, start, stop = self.region
        return t.nbytes // t.shape_tuple[axis] * (stop - start) if t.shape_tuple[axis] else 0


@dataclass
class Layout:
    loads: list[Load]
    stores: list[Store]
    whole: list[SSAValue]  # values produced in-kernel and kept whole in SRAM
    streamed: dict[SSAValue, tuple[int, int]]  # value -> (phase, axis): tile buffers
    b_streams: dict[df.DfOp, SSAValue]  # matmul -> its weight streamed in chunks
    gathers: dict[df.DfOp, SSAValue]  # gather -> its table, read row by row where it lives
    sram_by_phase: list[int]
    #: update written in place -> its dest, when nothing in the kernel reads the result:
    #: the dest is never loaded and only the update's rows are stored
    updates: dict[df.DfOp, SSAValue] = field(default_factory=dict)

    @property
    def sram_bytes(self) -> int:
        return max(self.sram_by_phase, default=0)


def tile_bytes(t: TensorType, axis: int, tile: int) -> int:
    shape = list(t.shape_tuple)
    return t.nbytes // shape[axis] * min(tile, shape[axis]) if shape[axis] else 0


def kernel_layout(kernel: df.KernelOp, plan: KernelPlan) -> Layout:
    outputs = list(zip(kernel.block.last_op.operands, kernel.outputs, strict=True))
    return layout(list(kernel.block.args), outputs, plan)


def _outer(v: SSAValue) -> SSAValue:
    """``v``, or the value a kernel was given for its block argument ``v``."""
    if isinstance(v, BlockArgument) and isinstance(v.owner.parent_op(), df.KernelOp):
        return v.owner.parent_op().operands[v.index]
    return v


def writes_in_place(op: df.DfOp, inputs: Sequence[SSAValue], yielded: Sequence[SSAValue]) -> bool:
    """Whether update ``op`` of a group may write its rows straight into its dest's buffer:
    the dest comes from outside the group, nothing else reads it (inside the group or out),
    it is a model input or an activation (never a weight, which the next run reads again),
    and the updated tensor leaves the group (so it lives on in the dest's buffer)."""
    if not isinstance(op, df.UpdateOp) or op.dest not in inputs or op.dest in yielded:
        return False
    if op.results[0] not in yielded or op.dest.uses.get_length() != 1:
        return False
    outer = _outer(op.dest)
    source = outer.owner
    from_function = isinstance(outer, BlockArgument) and not isinstance(
        source.parent_op(), df.KernelOp
    )
    # an activation: another kernel's result (or, before outlining, a compute op's); a
    # reshape outside kernels is a view of storage that may have other readers
    activation = isinstance(source, df.DfOp) and not isinstance(
        source, df.WeightOp | df.ConstantOp | df.ReshapeOp
    )
    return outer.uses.get_length() == 1 and (from_function or activation)


def inplace_results(kernel: df.KernelOp) -> dict[int, int]:
    """Result index -> input index, for the kernel's results written in place into an input."""
    args, yielded = list(kernel.block.args), list(kernel.block.last_op.operands)
    found = {}
    for op in kernel.compute_ops():
        if writes_in_place(op, args, yielded):
            found[yielded.index(op.results[0])] = args.index(op.dest)
    return found


def layout(
    inputs: Sequence[SSAValue], outputs: Sequence[tuple[SSAValue, SSAValue]], plan: KernelPlan
) -> Layout:
    """Buffers and DMAs of ``plan`` for a group reading ``inputs`` and handing back
    ``outputs`` (inner value, the result it becomes)."""
    lay, footprint = structure(inputs, outputs, plan, streaming_weights(plan))
    lay.sram_by_phase = footprint.sram_by_phase(plan.tiles, plan.b_tiles)
    return lay


def streaming_weights(plan: KernelPlan) -> frozenset[df.DfOp]:
    """The matmuls whose weight the plan streams in chunks."""
    return frozenset(op for op, chunk in plan.b_tiles.items() if chunk)


@dataclass(frozen=True)
class Footprint:
    """A layout's SRAM as a function of its tile sizes, for a tile search that tries many:
    the bytes that stay whole, and per phase its extent, each tile buffer's bytes per row
    and rows (``tile_bytes``) and each streamed weight's bytes per column and columns."""

    resident: int
    extents: tuple[int, ...]
    rows: tuple[tuple[tuple[int, int], ...], ...]
    columns: tuple[tuple[tuple[df.DfOp, int, int], ...], ...]

    def phase_bytes(self, p: int, tile: int, chunks: dict[df.DfOp, int]) -> int:
        """SRAM of phase ``p`` at ``tile`` rows a tile and weights in ``chunks`` columns."""
        per = buffers_per_tile(self.extents[p], tile)
        rows = sum(row * min(tile, n) for row, n in self.rows[p])
        cols = sum(col * min(chunks[op], n) for op, col, n in self.columns[p])
        return self.resident + per * (rows + cols)

    def sram_by_phase(self, tiles: Sequence[int], chunks: dict[df.DfOp, int]) -> list[int]:
        return [
            self.phase_bytes(p, tiles[p] if tiles else 1, chunks) for p in range(len(self.rows))
        ]


def _per_row(t: TensorType, axis: int) -> tuple[int, int]:
    """(bytes per index of ``axis``, its length): ``tile_bytes`` is the first times rows."""
    n = t.shape_tuple[axis]
    return (t.nbytes // n if n else 0), n


def structure(
    inputs: Sequence[SSAValue],
    outputs: Sequence[tuple[SSAValue, SSAValue]],
    plan: KernelPlan,
    streaming: frozenset[df.DfOp],
) -> tuple[Layout, Footprint]:
    """The buffers and DMAs of ``plan`` when the matmuls in ``streaming`` stream their
    weights (they do not depend on tile sizes), and their SRAM as a function of tile sizes.
    The layout's ``sram_by_phase`` is left empty."""
    uses: dict[SSAValue, list[tuple[df.DfOp, int | None]]] = {}
    for op in plan.ops:
        s = plan.streams[op]
        for v, a in zip(op.operands, s.in_axes, strict=True):
            uses.setdefault(v, []).append((op, a))
    yielded = [inner for inner, _ in outputs]
    inplace = [op for op in plan.ops if writes_in_place(op, inputs, yielded)]
    # a dest no op of the kernel reads after the update: written where it lives, never loaded
    updates = {op: op.dest for op in inplace if op.results[0] not in uses}

    loads, b_streams, gathers = [], {}, {}
    for arg in inputs:
        users = uses.get(arg, [])
        phases = {(plan.streams[o].phase, a) for o, a in users}
        only = users[0][0] if len(users) == 1 else None
        if only in updates and updates[only] == arg:
            continue
        if (  # an embedding-style lookup reads only the rows it needs (an indirect DMA)
            isinstance(only, df.GatherOp)
            and only.operands[0] == arg
            and users[0][1] is None
            and arg not in yielded
        ):
            gathers[only] = arg
        elif (
            isinstance(only, df.MatmulOp)
            and only in streaming
            and only.b == arg
            and arg not in yielded
        ):
            b_streams[only] = arg
        elif len(phases) == 1 and next(iter(phases))[1] is not None and arg not in yielded:
            p, a = next(iter(phases))
            loads.append(Load(arg, p, a))
        else:
            loads.append(Load(arg, None, None))

    whole, streamed = [], {}
    for op in plan.ops:
        s = plan.streams[op]
        r = op.results[0]
        later = any(plan.streams[o].phase != s.phase or a != s.out_axis for o, a in uses.get(r, []))
        if s.out_axis is None or later:
            whole.append(r)
        else:
            streamed[r] = (s.phase, s.out_axis)
    for ld in loads:
        if ld.phase is not None:
            streamed[ld.value] = (ld.phase, ld.axis)

    stores = []
    for inner, result in outputs:
        owner = inner.owner
        if isinstance(inner, BlockArgument) or owner not in plan.streams:
            stores.append(Store(inner, result, 0, None))
            continue
        s = plan.streams[owner]
        axis = s.out_axis if inner in streamed else None
        region = None
        if owner in inplace:
            p = owner.props()
            size = df.tensor_type(owner.src).shape_tuple[p["axis"]]
            region = (p["axis"], p["start"], p["start"] + size)
        stores.append(Store(inner, result, s.phase, axis, region))

    # an update written where it lives holds only its source rows in SRAM
    direct = {op.results[0] for op in updates}
    resident = sum(df.tensor_type(ld.value).nbytes for ld in loads if ld.phase is None)
    resident += sum(df.tensor_type(v).nbytes for v in whole if v not in direct)
    phases = range(len(plan.extents))
    rows = tuple(
        tuple(
            _per_row(df.tensor_type(v), a)
            for v, (q, a) in streamed.items()
            if q == p and v not in direct
        )
        for p in phases
    )
    columns = tuple(
        tuple(
            (op, *_per_row(df.tensor_type(op.b), b_axis(op)))
            for op in b_streams
            if plan.streams[op].phase == p
        )
        for p in phases
    )
    footprint = Footprint(resident, tuple(plan.extents), rows, columns)
    lay = Layout(loads, stores, whole, streamed, b_streams, gathers, [], updates)
    return lay, footprint


def b_axis(op: df.MatmulOp) -> int:
    """The weight's N dim, which its chunks follow."""
    rank = len(_shape(op.b))
    return rank - 2 if op.transpose_b.value.data else rank - 1


def b_chunk_bytes(op: df.MatmulOp, chunk: int) -> int:
    return tile_bytes(df.tensor_type(op.b), b_axis(op), chunk)


# -- the plan in the IR --------------------------------------------------------------------
def _ints(values) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def write_plan(kernel: df.KernelOp, plan: KernelPlan) -> None:
    kernel.attributes["extents"] = _ints(plan.extents)
    kernel.attributes["tiles"] = _ints(plan.tiles or [1] * len(plan.extents))
    for op in plan.ops:
        s = plan.streams[op]
        axes = [-1 if a is None else a for a in [*s.in_axes, s.out_axis]]
        op.attributes["stream"] = _ints(axes)
        op.attributes["phase"] = IntegerAttr(s.phase, i64)
        if plan.b_tiles.get(op):
            op.attributes["b_tile"] = IntegerAttr(plan.b_tiles[op], i64)
        else:
            op.attributes.pop("b_tile", None)


def read_plan(kernel: df.KernelOp) -> KernelPlan:
    ops = [op for op in kernel.compute_ops() if not isinstance(op, df.ConstantOp)]
    if "extents" not in kernel.attributes:
        raise VerifyError(
            f"kernel {kernel.sym_name.data} has no tile plan: run the tile pass before placing "
            "or emitting it"
        )
    streams, b_tiles = {}, {}
    for op in ops:
        axes = [None if a < 0 else a for a in op.attributes["stream"].get_values()]
        streams[op] = OpStream(op.attributes["phase"].value.data, axes[-1], axes[:-1])
        if "b_tile" in op.attributes:
            b_tiles[op] = op.attributes["b_tile"].value.data
    return KernelPlan(
        ops,
        streams,
        list(kernel.attributes["extents"].get_values()),
        list(kernel.attributes["tiles"].get_values()),
        b_tiles,
    )
