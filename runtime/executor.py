"""Execute a schedule with NumPy, counting every byte, FLOP and cycle it costs.

The executor reads only the schedule (never the IR). Each tier is a set of
NumPy buffers with a capacity; DMAs are copies between tiers of the boxes the
schedule names; each kernel computes on its SRAM copies, op by op. Counters
(bytes per tier pair, FLOPs, cycles, peak occupancy) come from what the
schedule moves and computes, and cycles from the shared cost model.

A kernel is walked phase by phase, and a phase tile by tile, in one of two modes:

- ``Mode.COUNT`` (``count_tile``): bytes and work, one tile of each size, times how
  many tiles of that size there are. Counting needs no data.
- ``Mode.EXECUTE``: the same counts, then ``compute_tile`` moves and computes the
  data, a run of whole tiles at a time (``step_rows``) so that NumPy gets calls big
  enough to be fast; a phase's tiles are independent along the streamed dim, so the
  run size changes no value.

Like torch.fx's ``Interpreter``, each op kind has its method, ``run_<op>(op, ins,
tile)`` (``run_matmul``, ``run_gather``, ``run_allreduce``, ...), which returns the
op's result for one tile; ``run_op`` dispatches on ``op.op``. A subclass overrides
one method to change or observe one kind of op. What an op costs is the cost model's
(``count_op``), not the method's: overriding ``run_matmul`` changes no count.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from coec.backend.cost import (
    buffers_per_tile,
    collective_bytes,
    collective_steps,
    kernel_cost,
    op_work,
    pmus_for,
    tile_shape,
    tile_sizes,
)
from coec.backend.schedule import DTYPE_BYTES, Dma, Kernel, Op, Schedule, Value, as_schedule
from coec.backend.target import Target
from coec.ir.errors import CapacityError, ExecutionError
from coec.runtime.ops import as_compute, matmul, run_op

Box = Sequence[Sequence[int]]


class Tier:
    """One memory tier: its live buffers, their bytes, and the high-water mark."""

    def __init__(self, name: str, capacity: int):
        self.name, self.capacity = name, capacity
        self.arrays: dict[str, np.ndarray | None] = {}
        self.sizes: dict[str, int] = {}
        self.addresses: dict[str, tuple[int, int]] = {}  # buffer -> (offset, bytes)
        self.used = 0
        self.peak = 0
        self.window_peak = 0

    def alloc(
        self, buffer: str, nbytes: int, data: np.ndarray | None = None, offset: int | None = None
    ) -> None:
        """Hold ``buffer``; at ``offset`` it must fit the tier and overlap no live buffer."""
        if buffer in self.sizes:
            raise ExecutionError(f"buffer {buffer} allocated twice in {self.name.upper()}")
        if self.used + nbytes > self.capacity:
            raise CapacityError(self.name, self.used + nbytes, self.capacity, f"buffer {buffer}")
        if offset is not None:
            if offset + nbytes > self.capacity:
                raise CapacityError(self.name, offset + nbytes, self.capacity, f"buffer {buffer}")
            for other, (start, size) in self.addresses.items():
                if offset < start + size and start < offset + nbytes:
                    raise ExecutionError(
                        f"buffer {buffer} [{offset}, {offset + nbytes}) overlaps live buffer "
                        f"{other} [{start}, {start + size}) in {self.name.upper()}"
                    )
            self.addresses[buffer] = (offset, nbytes)
        self.arrays[buffer], self.sizes[buffer] = data, nbytes
        self.used += nbytes
        self.peak = max(self.peak, self.used)
        self.window_peak = max(self.window_peak, self.used)

    def start_window(self) -> None:
        """Start measuring a new high-water mark (one kernel's SRAM)."""
        self.window_peak = self.used

    def free(self, buffer: str) -> None:
        self.used -= self.sizes.pop(buffer)
        self.arrays.pop(buffer)
        self.addresses.pop(buffer, None)


class Mode(Enum):
    """What a walk of the schedule does."""

    COUNT = "count"  # bytes, FLOPs, cycles; no data
    EXECUTE = "execute"  # the same counts, and the data computed


@dataclass
class Walk:
    """Where the executor is: a kernel, the phase it is in, and what that phase holds."""

    index: int
    kernel: Kernel
    #: values whole in SRAM for the kernel (resident loads, ``whole``, constants)
    whole: dict[str, np.ndarray | None] = field(default_factory=dict)
    #: the kernel's bytes by tier pair (``hbm->sram``)
    pairs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: ring steps of the kernel's collectives (each tile's collective is one ring)
    p2p_steps: int = 0
    phase: int = -1
    ops: list[Op] = field(default_factory=list)
    loads: list[Dma] = field(default_factory=list)
    stores: list[Dma] = field(default_factory=list)
    #: per op of the phase: the work of each tile shape -> how many such tiles ran
    work: list[dict] = field(default_factory=list)

    def enter_phase(self, p: int) -> None:
        self.phase = p
        self.ops = [op for op in self.kernel.ops if op.phase == p]
        self.loads = [d for d in self.kernel.loads if d.phase == p]
        self.stores = [d for d in self.kernel.stores if d.phase == p]
        self.work = [defaultdict(int) for _ in self.ops]

    def value(self, name: str) -> Value:
        return self.kernel.values[name]


@dataclass
class Tile:
    """``size`` rows from ``start`` along the streamed dim of ``walk``'s phase.

    Counting, it stands for ``mult`` tiles of that size; computing, it may be a run of
    several whole tiles (``mult`` 1). ``values`` holds the tile's streamed values
    (computing), ``shapes`` their shapes (both modes).
    """

    walk: Walk
    start: int
    size: int
    mult: int = 1
    values: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def out_shape(self, op: Op) -> tuple[int, ...]:
        """The shape of ``op``'s result in this tile."""
        return tile_shape(self.walk.value(op.output).shape, op.axis, self.size)

    def cut(self, x: np.ndarray | None, axis: int | None):
        """``x`` sliced to this tile along ``axis`` (whole if ``axis`` is None)."""
        if x is None or axis is None or np.ndim(x) == 0:
            return x
        index = [slice(None)] * x.ndim
        index[axis] = slice(self.start, self.start + self.size)
        return x[tuple(index)]


class Executor:
    """Runs one schedule; ``run`` may be called many times with new inputs."""

    def __init__(
        self,
        schedule: Schedule | dict,
        weights: Mapping[str, np.ndarray] | None = None,
        *,
        count_only: bool = False,
        emulate_bf16: bool = False,
        all_reduce: Callable[[np.ndarray], np.ndarray] | None = None,
        all_gather: Callable[[np.ndarray, int], np.ndarray] | None = None,
        step_rows: int = 256,
    ):
        self.schedule = as_schedule(schedule)
        self.target: Target = self.schedule.target.to_target()
        self.buffers = self.schedule.buffers
        self.mode = Mode.COUNT if count_only else Mode.EXECUTE
        self.emulate_bf16 = emulate_bf16
        # data moves through a phase in steps of whole tiles covering at least this many
        # rows of the streamed dim (1: strictly tile by tile); counts are always per tile
        self.step_rows = max(1, step_rows)
        # a sum across sockets and a concatenation (along an axis) of every socket's
        # shard: the Node running this socket supplies them; alone, a socket is all there is
        self.all_reduce = all_reduce or (lambda x: x)
        self.all_gather = all_gather or (lambda x, axis: x)
        self.weights = weights or {}
        if self.mode is Mode.EXECUTE:
            missing = [
                n
                for n, b in self.buffers.items()
                if b.kind == "weight" and b.storage and n not in self.weights
            ]
            if missing:
                raise ExecutionError(
                    f"no data for weight {missing[0]!r} (and {len(missing) - 1} more)"
                )

    @property
    def count_only(self) -> bool:
        return self.mode is Mode.COUNT

    # -- the schedule, kernel by kernel ---------------------------------------------------
    def run(self, inputs: Sequence[np.ndarray] | None = None) -> tuple[list, dict]:
        """Execute (or count) the whole schedule: the outputs and the report."""
        mem = self.target.memory
        self.tiers = {t: Tier(t, mem[t].capacity_bytes) for t in ("hbm", "ddr")}
        self.sram = Tier("sram", mem["sram"].capacity_bytes)
        self.counters = Counters()
        feeds = self._feeds(inputs) if self.mode is Mode.EXECUTE else {}
        for name, b in self.buffers.items():  # resident before the first kernel
            if b.kind in ("input", "weight") and b.storage:
                data = None
                if self.mode is Mode.EXECUTE:
                    src = feeds[name] if b.kind == "input" else self.weights[name]
                    data = self.store_dtype(src, b.dtype)
                    if b.kind == "input":  # a kernel may update it in place: never the caller's
                        data = np.array(data, copy=True)
                self.tiers[b.tier].alloc(name, b.bytes, data, b.offset)

        frees = defaultdict(list)  # activations, freed after the last kernel reading them
        for name, b in self.buffers.items():
            if b.kind == "activation" and b.storage:
                frees[b.live[1]].append(name)

        for index, kernel in enumerate(self.schedule.kernels):
            try:
                self.run_kernel(index, kernel)
            except (CapacityError, ExecutionError):
                raise
            except Exception as e:
                raise ExecutionError(f"while executing kernel {kernel.name}: {e}") from e
            for name in frees[index]:
                self.tiers[self.buffers[name].tier].free(name)

        outputs = []
        if self.mode is Mode.EXECUTE:
            outputs = [self.array(n) for n in self.schedule.outputs]
        peak = {
            "sram": self.sram.peak,
            "hbm": self.tiers["hbm"].peak,
            "ddr": self.tiers["ddr"].peak,
        }
        return outputs, self.counters.report(self.target, peak)

    def _feeds(self, inputs: Sequence[np.ndarray] | None) -> dict[str, np.ndarray]:
        names = self.schedule.inputs
        if inputs is None or len(inputs) != len(names):
            got = 0 if inputs is None else len(inputs)
            raise ExecutionError(f"the schedule takes {len(names)} inputs, got {got}")
        for name, x in zip(names, inputs, strict=True):
            want = tuple(self.buffers[name].shape)
            if tuple(np.shape(x)) != want:
                raise ExecutionError(f"input {name}: shape {tuple(np.shape(x))}, expected {want}")
        return dict(zip(names, inputs, strict=True))

    def run_kernel(self, index: int, kernel: Kernel) -> None:
        """One kernel: resident loads, then each phase, then SRAM freed and the kernel counted."""
        for dma in kernel.stores:  # the buffers this kernel defines
            b = self.buffers[dma.buffer]
            if b.live[0] == index:
                self.tiers[b.tier].alloc(dma.buffer, b.bytes, offset=b.offset)
        walk = Walk(index, kernel)
        self.sram.start_window()
        for dma in kernel.loads:
            if dma.phase is None:  # resident for the whole kernel
                self.sram.alloc(dma.value, dma.bytes)
                self.count_transfer(walk, dma, None, 0, 0)
                walk.whole[dma.value] = None
                if self.mode is Mode.EXECUTE:
                    walk.whole[dma.value] = self.load(dma, None, 0, 0)
        direct = {op.output for op in kernel.ops if op.update_in is not None}
        for name in kernel.whole:
            if name not in direct:  # an update written where it lives takes no SRAM
                self.sram.alloc(name, _nbytes(walk.value(name)))
            walk.whole[name] = None
        for name, value in kernel.constants.items():
            walk.whole[name] = np.float32(value)

        works = [self.run_phase(walk, p) for p in range(len(kernel.phases))]

        cost = kernel_cost(self.target, works, walk.pairs, walk.p2p_steps)
        ops = [_op_label(op) for op in kernel.ops]
        flops = sum(w.total * n for ph in works for op_w in ph for w, n in op_w.items())
        pmus = pmus_for(self.sram.window_peak, self.sram.capacity, self.target.compute.pmus)
        # the stages, as kernel_cost numbers them: each phase's ops with work, in order
        by_phase = [[op for op in kernel.ops if op.phase == p] for p in range(len(works))]
        stage_ops = [
            _op_label(op)
            for phase_ops, phase_works in zip(by_phase, works, strict=True)
            for op, w in zip(phase_ops, phase_works, strict=True)
            if any(x.total for x in w)
        ]
        self.counters.add_kernel(
            kernel.name, ops, flops, walk.pairs, cost, self.sram.window_peak, pmus, stage_ops
        )
        for name in list(self.sram.sizes):
            self.sram.free(name)

    def run_phase(self, walk: Walk, p: int) -> list[dict]:
        """One phase: its tile buffers in SRAM, the count walk, the compute walk, the
        stores of whole values. Returns each op's work per tile shape."""
        walk.enter_phase(p)
        phase = walk.kernel.phases[p]
        extent, tile = phase.extent, phase.tile
        per = buffers_per_tile(extent, tile)
        streamed = [(d.value, d.axis) for d in walk.loads] + [
            (op.output, op.axis)
            for op in walk.ops
            if op.output not in walk.whole and op.update_in is None
        ]
        buffers = []
        for name, axis in streamed:
            shape = tile_shape(walk.value(name).shape, axis, min(tile, extent))
            buffers.append((f"{name}@tile", per * _nbytes(walk.value(name), shape)))
        for op in walk.ops:
            if op.b_stream is not None:
                d = op.b_stream
                shape = tile_shape(walk.value(d.value).shape, d.axis, d.chunk)
                buffers.append((f"{d.value}@chunk", per * _nbytes(walk.value(d.value), shape)))
        for name, nbytes in buffers:
            self.sram.alloc(name, nbytes)

        for start, size, mult in tile_classes(extent, tile):  # what every tile costs
            self.count_tile(Tile(walk, start, size, mult))
        if self.mode is Mode.EXECUTE:  # what the tiles compute, a step of tiles at a time
            for start, size in self.steps(extent, tile):
                self.compute_tile(Tile(walk, start, size))
        for d in walk.stores:
            if d.axis is None:
                self.count_transfer(walk, d, None, 0, 0)
                if self.mode is Mode.EXECUTE:
                    self.store(d, None, 0, 0, walk.whole.get(d.value))
        for name, _ in buffers:
            self.sram.free(name)
        return [dict(w) for w in walk.work]

    def steps(self, extent: int, tile: int) -> Iterator[tuple[int, int]]:
        """(start, size): the runs of consecutive tiles the data moves through in one step."""
        step = tile * max(1, -(-self.step_rows // tile))
        for t0 in range(0, extent, step):
            yield t0, min(step, extent - t0)

    # -- counting -----------------------------------------------------------------------
    def count_tile(self, tile: Tile) -> None:
        """What ``tile.mult`` tiles of this size cost: their DMAs' bytes and their ops' work."""
        walk = tile.walk
        for d in walk.loads:
            self.count_transfer(walk, d, d.axis, tile.start, tile.size, tile.mult)
            tile.shapes[d.value] = tile_shape(walk.value(d.value).shape, d.axis, tile.size)
        for op, work in zip(walk.ops, walk.work, strict=True):
            in_shapes = self.in_shapes(tile, op)
            out_shape = tile.out_shape(op)
            self.count_op(tile, op, in_shapes, out_shape)
            work[op_work(op.op, op.attrs, in_shapes, out_shape)] += tile.mult
            if op.output not in walk.whole:
                tile.shapes[op.output] = out_shape
        for d in walk.stores:
            if d.axis is not None:
                self.count_transfer(walk, d, d.axis, tile.start, tile.size, tile.mult)

    def in_shapes(self, tile: Tile, op: Op) -> list[tuple[int, ...]]:
        """The shapes of ``op``'s operands in one tile."""
        walk = tile.walk
        whole_reads = {d.value for d in (op.b_stream, op.gather_from) if d is not None}
        shapes = []
        for name, axis in zip(op.inputs, op.axes, strict=True):
            if name in whole_reads:  # a streamed weight or a gathered table: all of it
                shapes.append(tuple(walk.value(name).shape))
            elif name in tile.shapes:  # a tile of this phase
                shapes.append(tile.shapes[name])
            else:  # whole in SRAM (resident, an earlier phase's, or a constant)
                full = walk.value(name).shape if name in walk.kernel.values else ()
                shapes.append(tile_shape(full, axis, tile.size))
        return shapes

    def count_op(self, tile: Tile, op: Op, in_shapes, out_shape) -> None:
        """The bytes an op moves itself: a streamed weight's chunks, a gather's rows read
        from their tier, a collective's share sent to the peer sockets."""
        walk = tile.walk
        out_bytes = _nbytes(walk.value(op.output), out_shape)
        if op.b_stream is not None:
            d = op.b_stream
            n_total = self.buffers[d.buffer].shape[d.axis]
            for n0, size, n in tile_classes(n_total, d.chunk):
                self.count_transfer(walk, d, d.axis, n0, size, tile.mult * n)
        if op.gather_from is not None:
            walk.pairs[f"{op.gather_from.src}->sram"] += out_bytes * tile.mult
        if op.op == "allgather":
            axis, sockets = op.attrs["axis"], self.target.sockets
            if out_shape[axis] != in_shapes[0][axis] * sockets:
                raise ExecutionError(
                    f"{op.output}: an all-gather of {tuple(in_shapes[0])} into "
                    f"{tuple(out_shape)} along axis {axis} does not join the schedule's "
                    f"{sockets} socket(s)"
                )
        if op.op in ("allreduce", "allgather") and self.target.sockets > 1:
            sent = collective_bytes(op.op, out_bytes, self.target.sockets)
            walk.pairs["sram->p2p"] += sent * tile.mult
            walk.p2p_steps += collective_steps(op.op, self.target.sockets) * tile.mult

    def count_transfer(
        self, walk: Walk, dma: Dma, axis: int | None, start: int, size: int, mult: int = 1
    ) -> None:
        """``dma``'s box cut to ``size`` from ``start`` along ``axis``, counted ``mult`` times."""
        box = _box(dma, axis, start, size)
        itemsize = DTYPE_BYTES[self.buffers[dma.buffer].dtype]
        walk.pairs[dma.pair] += math.prod(b - a for a, b in box) * itemsize * mult

    # -- computing ----------------------------------------------------------------------
    def compute_tile(self, tile: Tile) -> None:
        """Move and compute one tile (or a run of tiles): its loads, its ops, its stores."""
        walk = tile.walk
        for d in walk.loads:
            tile.values[d.value] = self.load(d, d.axis, tile.start, tile.size)
        for op in walk.ops:
            out = self.run_op(op, self.operands(tile, op), tile)
            out = self.store_dtype(out, walk.value(op.output).dtype)
            name = op.output
            if name not in walk.whole:
                tile.values[name] = out
            elif op.axis is None:
                walk.whole[name] = out
            else:  # a whole value written tile by tile
                if walk.whole[name] is None:
                    walk.whole[name] = np.empty(walk.value(name).shape, dtype=out.dtype)
                tile.cut(walk.whole[name], op.axis)[...] = out
        for d in walk.stores:
            if d.axis is not None:
                src = tile.values.get(d.value)
                if d.value not in tile.values:
                    src = tile.cut(walk.whole.get(d.value), d.axis)
                self.store(d, d.axis, tile.start, tile.size, src)

    def operands(self, tile: Tile, op: Op) -> list[np.ndarray | None]:
        """One tile's operands of ``op``, from wherever each one lives."""
        ins = []
        for name, axis in zip(op.inputs, op.axes, strict=True):
            if op.b_stream is not None and name == op.b_stream.value:
                ins.append(None)  # arrives chunk by chunk inside the matmul
            elif op.gather_from is not None and name == op.gather_from.value:
                ins.append(self.array(op.gather_from.buffer))  # read where it lives
            elif op.update_in is not None and name == op.update_in.value:
                ins.append(tile.cut(self.array(op.update_in.buffer), axis))  # updated there
            elif name in tile.values:  # a tile of this phase
                ins.append(tile.values[name])
            else:  # whole in SRAM (resident, an earlier phase's, or a constant)
                ins.append(tile.cut(tile.walk.whole[name], axis))
        return ins

    def run_op(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        """Dispatch to the method for ``op``'s kind: ``run_matmul``, ``run_gather``, ..."""
        return getattr(self, f"run_{op.op}")(op, ins, tile)

    def compute(self, op: Op, ins: list, tile: Tile, attrs: Mapping | None = None) -> np.ndarray:
        """``op``'s NumPy semantics (``coec.runtime.ops``) on one tile."""
        dtype = tile.walk.value(op.output).dtype
        return run_op(op.op, ins, op.attrs if attrs is None else attrs, tile.out_shape(op), dtype)

    # one method per op kind; these are the op's semantics alone, nothing moves
    def run_elementwise(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        return self.compute(op, ins, tile)

    def run_reduce(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        return self.compute(op, ins, tile)

    def run_softmax(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        return self.compute(op, ins, tile)

    def run_topk(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        return self.compute(op, ins, tile)

    def run_layernorm(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        return self.compute(op, ins, tile)

    def run_rmsnorm(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        return self.compute(op, ins, tile)

    def run_reshape(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        return self.compute(op, ins, tile)

    def run_permute(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        return self.compute(op, ins, tile)

    def run_slice(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        return self.compute(op, ins, tile)

    def run_concat(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        return self.compute(op, ins, tile)

    def run_broadcast(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        return self.compute(op, ins, tile)

    def run_gather(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        """Rows of a table; with ``gather_from`` the table is read in its tier, not SRAM."""
        return self.compute(op, ins, tile)

    def run_update(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        """``dest`` with ``src``'s rows written in; with ``update_in``, dest is read where it
        lives and the kernel's store writes only the rows."""
        return self.compute(op, ins, tile)

    def run_attention(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        """Attention; a tile of query rows tells the causal mask where it starts."""
        attrs = op.attrs
        if op.axis is not None and op.axis == len(tile.out_shape(op)) - 2:
            attrs = {**attrs, "q_offset": tile.start}
        return self.compute(op, ins, tile, attrs)

    def run_matmul(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        """``a @ b``; with ``b_stream``, ``b`` comes from its tier chunk by chunk along N."""
        if op.b_stream is None:
            return self.compute(op, ins, tile)
        d = op.b_stream
        parts = []
        for n0, size in self.steps(self.buffers[d.buffer].shape[d.axis], d.chunk):
            chunk = self.load(d, d.axis, n0, size)
            parts.append(matmul([ins[0], chunk], op.attrs, ()))
        return np.concatenate(parts, axis=-1).reshape(tile.out_shape(op))

    def run_allreduce(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        """The sum of every socket's tile."""
        return self.all_reduce(ins[0])

    def run_allgather(self, op: Op, ins: list, tile: Tile) -> np.ndarray:
        """Every socket's shard, joined along ``attrs.axis`` in socket order."""
        return self.all_gather(ins[0], op.attrs["axis"])

    # -- storage ------------------------------------------------------------------------
    def store_dtype(self, x: np.ndarray, dtype: str) -> np.ndarray:
        """Bring ``x`` to its compute dtype, rounding through bf16 when emulating it."""
        x = as_compute(np.asarray(x), dtype)
        if self.emulate_bf16 and dtype == "bf16":
            import ml_dtypes

            x = x.astype(ml_dtypes.bfloat16).astype(np.float32)
        return x

    def array(self, buffer: str) -> np.ndarray | None:
        """A buffer's data in its tier (a view's through its root)."""
        root = self.schedule.root(buffer)
        arr = self.tiers[self.buffers[root].tier].arrays.get(root)
        if arr is None:
            return None
        return arr.reshape(self.buffers[buffer].shape) if root != buffer else arr

    def load(self, dma: Dma, axis: int | None, start: int, size: int) -> np.ndarray:
        """Copy ``dma``'s box (cut to ``size`` from ``start`` along ``axis``) into SRAM."""
        data = self.array(dma.buffer)[_index(_box(dma, axis, start, size))]
        # weights are never written: SRAM may read them in place (a copy costs what the
        # matmul does); anything else is copied, as a DMA does, so later stores cannot alias it
        return data if self.buffers[dma.buffer].kind == "weight" else data.copy()

    def store(self, dma: Dma, axis: int | None, start: int, size: int, array: np.ndarray) -> None:
        """Copy one tile of an SRAM value out to ``dma``'s box in its tier (a view's box in
        its root's storage). The value is cut to the box along every axis but the
        streamed one, which ``array`` (a tile) already is: an in-place update stores
        only its rows."""
        root = self.schedule.root(dma.buffer)
        dst = self.tiers[self.buffers[root].tier].arrays
        if dst.get(root) is None:
            dst[root] = np.empty(self.buffers[root].shape, dtype=array.dtype)
        box = _box(dma, axis, start, size)
        part = tuple(slice(None) if i == axis else slice(a, b) for i, (a, b) in enumerate(box))
        view = dst[root].reshape(self.buffers[dma.buffer].shape)  # a view: writes through
        view[_index(box)] = array[part] if np.ndim(array) else array


def tile_classes(extent: int, tile: int) -> Iterator[tuple[int, int, int]]:
    """(start, size, multiplicity): one representative of each class of equal tiles."""
    start = 0
    for size, n in tile_sizes(extent, tile).items():
        yield start, size, n
        start += size * n


def _box(dma: Dma, axis: int | None, start: int, size: int) -> list[list[int]]:
    """``dma``'s box cut to ``size`` from ``start`` along ``axis`` (all of it if None)."""
    box = [list(r) for r in dma.box]
    if axis is not None:
        box[axis] = [box[axis][0] + start, box[axis][0] + start + size]
    return box


def _index(box: Box) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in box)


def _nbytes(value: Value, shape: Sequence[int] | None = None) -> int:
    """Bytes of ``value`` (or of a tile of it of ``shape``)."""
    return math.prod(value.shape if shape is None else shape) * DTYPE_BYTES[value.dtype]


def _op_label(op) -> str:
    """An op as the report names it: an elementwise op by its kind."""
    return op.attrs.get("kind", op.op) if op.op == "elementwise" else op.op


class Counters:
    """Everything the runtime counts, kept in one place."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = defaultdict(int)
        self.flops = 0
        self.cycles = 0
        self.kernels: list[dict] = []

    def add_kernel(
        self,
        name: str,
        ops,
        flops: int,
        pairs: Mapping[str, int],
        cost,
        sram_bytes,
        pmus,
        stage_ops=(),
    ) -> None:
        for pair, n in pairs.items():
            self.bytes[pair] += n
        self.flops += flops
        self.cycles += cost.cycles
        self.kernels.append(
            {
                "name": name,
                "ops": ops,
                "flops": flops,
                "bytes": dict(sorted(pairs.items())),
                "sram_bytes": sram_bytes,
                "pmus": pmus,
                **cost.to_json(),
                "stage_ops": list(stage_ops),
                **cost.stages_json(),
            }
        )

    def report(self, target: Target, peak: dict[str, int]) -> dict:
        return {
            "kernels": len(self.kernels),
            "flops": self.flops,
            "cycles": self.cycles,
            "seconds": self.cycles / target.compute.clock_hz,
            "bytes": dict(sorted(self.bytes.items())),
            "peak_bytes": peak,
            "per_kernel": self.kernels,
        }
