"""Execute a schedule with NumPy, counting every byte, FLOP and cycle it costs.

The executor reads only the schedule (never the IR). Each tier is a set of
NumPy buffers with a capacity; DMAs are copies between tiers of the boxes the
schedule names; each kernel computes on its SRAM copies, op by op. Counters
(bytes per tier pair, FLOPs, cycles, peak occupancy) come from what was
actually moved and computed, and cycles from the shared cost model.

Counting and computing are two walks of each phase: counts go tile by tile (one
tile of each size, times how many there are), data in runs of whole tiles
(``step_rows``) so NumPy gets calls big enough to be fast; a phase's tiles are
independent along the streamed dim, so the run size changes no value.
``count_only=True`` does the first walk only; its counts equal execute mode's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from coec.backend.cost import collective_bytes, kernel_cost, op_work, tile_shape, tile_sizes
from coec.backend.schedule import DTYPE_BYTES, validate
from coec.backend.target import Target
from coec.ir.errors import CapacityError, ExecutionError
from coec.runtime.ops import as_compute, matmul, run_op


def _box_index(box: Sequence[Sequence[int]]) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in box)


def _box_numel(box: Sequence[Sequence[int]]) -> int:
    return math.prod(b - a for a, b in box)


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


class Executor:
    """Runs one schedule; ``run`` may be called many times with new inputs."""

    def __init__(
        self,
        schedule: dict,
        weights: Mapping[str, np.ndarray] | None = None,
        *,
        count_only: bool = False,
        emulate_bf16: bool = False,
        all_reduce: Callable[[np.ndarray], np.ndarray] | None = None,
        all_gather: Callable[[np.ndarray, int], np.ndarray] | None = None,
        step_rows: int = 256,
    ):
        self.schedule = validate(schedule)
        self.target = Target.from_json(schedule["target"])
        self.buffers: dict[str, dict] = schedule["buffers"]
        self.count_only = count_only
        self.emulate_bf16 = emulate_bf16
        # data moves through a phase in steps of whole tiles covering at least this many
        # rows of the streamed dim (1: strictly tile by tile); counts are always per tile
        self.step_rows = max(1, step_rows)
        # a sum across sockets and a concatenation (along an axis) of every socket's
        # shard: the Node running this socket supplies them; alone, a socket is all there is
        self.all_reduce = all_reduce or (lambda x: x)
        self.all_gather = all_gather or (lambda x, axis: x)
        self.weights = weights or {}
        if not count_only:
            missing = [
                n
                for n, b in self.buffers.items()
                if b["kind"] == "weight" and "alias_of" not in b and n not in self.weights
            ]
            if missing:
                raise ExecutionError(
                    f"no data for weight {missing[0]!r} (and {len(missing) - 1} more)"
                )

    # -- storage ------------------------------------------------------------------------
    def _store_dtype(self, x: np.ndarray, dtype: str) -> np.ndarray:
        """Bring ``x`` to its compute dtype, rounding through bf16 when emulating it."""
        x = as_compute(np.asarray(x), dtype)
        if self.emulate_bf16 and dtype == "bf16":
            import ml_dtypes

            x = x.astype(ml_dtypes.bfloat16).astype(np.float32)
        return x

    def _array(self, tiers: dict[str, Tier], buffer: str) -> np.ndarray | None:
        b = self.buffers[buffer]
        root = b.get("alias_of", buffer)
        arr = tiers[self.buffers[root]["tier"]].arrays.get(root)
        if arr is None:
            return None
        return arr.reshape(b["shape"]) if root != buffer else arr

    # -- the walk -----------------------------------------------------------------------
    def run(self, inputs: Sequence[np.ndarray] | None = None) -> tuple[list, dict]:
        sched = self.schedule
        mem = self.target.memory
        tiers = {t: Tier(t, mem[t].capacity_bytes) for t in ("hbm", "ddr")}
        sram = Tier("sram", mem["sram"].capacity_bytes)
        counts = Counters()

        feeds = {}
        if not self.count_only:
            if inputs is None or len(inputs) != len(sched["inputs"]):
                got = 0 if inputs is None else len(inputs)
                raise ExecutionError(f"the schedule takes {len(sched['inputs'])} inputs, got {got}")
            for name, x in zip(sched["inputs"], inputs, strict=True):
                want = tuple(self.buffers[name]["shape"])
                if tuple(np.shape(x)) != want:
                    raise ExecutionError(
                        f"input {name}: shape {tuple(np.shape(x))}, expected {want}"
                    )
                feeds[name] = x
        for name, b in self.buffers.items():  # resident before the first kernel
            if b["kind"] in ("input", "weight") and "alias_of" not in b:
                data = None
                if not self.count_only:
                    src = feeds[name] if b["kind"] == "input" else self.weights[name]
                    data = self._store_dtype(src, b["dtype"])
                tiers[b["tier"]].alloc(name, b["bytes"], data, b["offset"])

        frees = defaultdict(list)
        for name, b in self.buffers.items():
            if b["kind"] == "activation" and "alias_of" not in b:
                frees[b["live"][1]].append(name)

        for index, kernel in enumerate(sched["kernels"]):
            try:
                self._kernel(index, kernel, tiers, sram, counts)
            except (CapacityError, ExecutionError):
                raise
            except Exception as e:
                raise ExecutionError(f"while executing kernel {kernel['name']}: {e}") from e
            for name in frees[index]:
                tiers[self.buffers[name]["tier"]].free(name)

        outputs = [] if self.count_only else [self._array(tiers, n) for n in sched["outputs"]]
        peak = {"sram": sram.peak, "hbm": tiers["hbm"].peak, "ddr": tiers["ddr"].peak}
        return outputs, counts.report(self.target, peak)

    def _kernel(self, index: int, kernel: dict, tiers: dict[str, Tier], sram: Tier, counts) -> None:
        """One kernel: resident loads, then each phase (counted tile by tile), then SRAM freed."""
        for name in (s["buffer"] for s in kernel["stores"]):
            b = self.buffers[name]
            if b["live"][0] == index:
                tiers[b["tier"]].alloc(name, b["bytes"], offset=b["offset"])
        values = kernel["values"]
        sram.start_window()
        whole: dict[str, np.ndarray | None] = {}
        pairs: dict[str, int] = defaultdict(int)

        for dma in kernel["loads"]:
            if dma["phase"] is None:  # resident for the whole kernel
                sram.alloc(dma["value"], dma["bytes"])
                whole[dma["value"]] = self._load(tiers, dma, None, 0, 0, pairs, 1)
        for name in kernel["whole"]:
            sram.alloc(name, self._nbytes(values[name]["shape"], values[name]["dtype"]))
            whole[name] = None
        for name, value in kernel["constants"].items():
            whole[name] = np.float32(value)

        works: list[list[dict]] = []
        for p, phase in enumerate(kernel["phases"]):
            works.append(self._phase(p, phase, kernel, tiers, sram, whole, pairs))

        cost = kernel_cost(self.target, works, pairs)
        ops = [
            op["attrs"].get("kind", op["op"]) if op["op"] == "elementwise" else op["op"]
            for op in kernel["ops"]
        ]
        flops = sum(w.total * n for ph in works for op_w in ph for w, n in op_w.items())
        pmu_bytes = sram.capacity // self.target.compute.pmus
        pmus = max(1, math.ceil(sram.window_peak / pmu_bytes))
        counts.add_kernel(kernel["name"], ops, flops, pairs, cost, sram.window_peak, pmus)
        for name in list(sram.sizes):
            sram.free(name)

    def _nbytes(self, shape, dtype: str) -> int:
        return math.prod(shape) * DTYPE_BYTES[dtype]

    @staticmethod
    def _tile_classes(extent: int, tile: int):
        """(start, size, multiplicity): one representative of each class of equal tiles."""
        start = 0
        for size, n in tile_sizes(extent, tile).items():
            yield start, size, n
            start += size * n

    def _steps(self, extent: int, tile: int):
        """(start, size): the runs of consecutive tiles the data moves through in one step."""
        step = tile * max(1, -(-self.step_rows // tile))
        for t0 in range(0, extent, step):
            yield t0, min(step, extent - t0)

    def _transfer(self, dma: dict, axis, t0: int, size: int, pairs, mult: int) -> list:
        """``dma``'s box cut to one tile along ``axis``; its bytes counted ``mult`` times."""
        box = [list(r) for r in dma["box"]]
        if axis is not None:
            box[axis] = [box[axis][0] + t0, box[axis][0] + t0 + size]
        dtype = self.buffers[dma["buffer"]]["dtype"]
        pairs[f"{dma['src']}->{dma['dst']}"] += _box_numel(box) * DTYPE_BYTES[dtype] * mult
        return box

    def _load(self, tiers, dma: dict, axis, t0: int, size: int, pairs, mult: int, data=None):
        """Copy ``dma``'s box (cut to one tile along ``axis``) from its tier into SRAM."""
        box = self._transfer(dma, axis, t0, size, pairs, mult)
        if not (not self.count_only if data is None else data):
            return None
        data = self._array(tiers, dma["buffer"])[_box_index(box)]
        # weights are never written: SRAM may read them in place (a copy costs what the
        # matmul does); anything else is copied, as a DMA does, so later stores cannot alias it
        return data if self.buffers[dma["buffer"]]["kind"] == "weight" else data.copy()

    def _phase(self, p, phase, kernel, tiers, sram, whole, pairs) -> list[dict]:
        extent, tile = phase["extent"], phase["tile"]
        values = kernel["values"]
        per = 2 if math.ceil(extent / tile) > 1 else 1  # double-buffer when streaming
        ops = [op for op in kernel["ops"] if op["phase"] == p]
        loads = [d for d in kernel["loads"] if d["phase"] == p]
        stores = [d for d in kernel["stores"] if d["phase"] == p]
        streamed = [(d["value"], d["axis"]) for d in loads] + [
            (op["output"], op["axis"]) for op in ops if op["output"] not in whole
        ]
        buffers = []
        for name, axis in streamed:
            shape = tile_shape(values[name]["shape"], axis, min(tile, extent))
            buffers.append((f"{name}@tile", per * self._nbytes(shape, values[name]["dtype"])))
        for op in ops:
            if "b_stream" in op:
                d = op["b_stream"]
                shape = tile_shape(values[d["value"]]["shape"], d["axis"], d["chunk"])
                buffers.append(
                    (f"{d['value']}@chunk", per * self._nbytes(shape, values[d["value"]]["dtype"]))
                )
        for name, nbytes in buffers:
            sram.alloc(name, nbytes)

        works = [defaultdict(int) for _ in ops]
        for t0, size, mult in self._tile_classes(extent, tile):  # what every tile costs
            self._tile(
                ops, loads, stores, values, tiers, whole, t0, size, mult, pairs, works, False
            )
        if not self.count_only:  # what the tiles compute, a step of tiles at a time
            scratch: dict[str, int] = defaultdict(int)
            scratch_works = [defaultdict(int) for _ in ops]
            for t0, size in self._steps(extent, tile):
                self._tile(
                    ops,
                    loads,
                    stores,
                    values,
                    tiers,
                    whole,
                    t0,
                    size,
                    1,
                    scratch,
                    scratch_works,
                    True,
                )
        for d in stores:
            if d["axis"] is None:
                self._store(tiers, d, None, 0, 0, whole.get(d["value"]), pairs, 1)
        for name, _ in buffers:
            sram.free(name)
        return [dict(w) for w in works]

    def _tile(self, ops, loads, stores, values, tiers, whole, t0, size, mult, pairs, works, data):
        """One tile (``size`` rows from ``t0``) of a phase: loads, ops, stores.

        With ``data`` it moves and computes arrays; without, it counts bytes and work
        ``mult`` times (every tile of this size costs the same).
        """
        env: dict[str, np.ndarray | None] = {}
        shapes: dict[str, tuple] = {}
        for d in loads:
            env[d["value"]] = self._load(tiers, d, d["axis"], t0, size, pairs, mult, data)
            shapes[d["value"]] = tile_shape(values[d["value"]]["shape"], d["axis"], size)
        for op, w in zip(ops, works, strict=True):
            ins, in_shapes = self._inputs(op, values, env, shapes, whole, tiers, t0, size, data)
            out_shape = tile_shape(values[op["output"]]["shape"], op["axis"], size)
            out = None
            if "b_stream" in op:
                out = self._streamed_matmul(op, ins, tiers, pairs, mult, out_shape, data)
            elif "gather_from" in op:
                d = op["gather_from"]
                nbytes = self._nbytes(out_shape, values[op["output"]]["dtype"])
                pairs[f"{d['src']}->sram"] += nbytes * mult
                if data:
                    out = run_op(
                        "gather", ins, op["attrs"], out_shape, values[op["output"]]["dtype"]
                    )
            elif op["op"] in ("allreduce", "allgather"):
                out = self._collective(op, ins[0], in_shapes[0], out_shape, data)
                nbytes = self._nbytes(out_shape, values[op["output"]]["dtype"])
                if self.target.sockets > 1:
                    sent = collective_bytes(op["op"], nbytes, self.target.sockets)
                    pairs["sram->p2p"] += sent * mult
            elif data:
                attrs = op["attrs"]
                if op["op"] == "attention" and op["axis"] == len(out_shape) - 2:
                    attrs = {**attrs, "q_offset": t0}
                out = run_op(op["op"], ins, attrs, out_shape, values[op["output"]]["dtype"])
            if out is not None:
                out = self._store_dtype(out, values[op["output"]]["dtype"])
            w[op_work(op["op"], op["attrs"], in_shapes, out_shape)] += mult
            name = op["output"]
            if name in whole:
                if data:
                    if op["axis"] is None:
                        whole[name] = out
                    else:
                        if whole[name] is None:
                            whole[name] = np.empty(values[name]["shape"], dtype=out.dtype)
                        _cut(whole[name], op["axis"], t0, size)[...] = out
            else:
                env[name] = out
                shapes[name] = out_shape
        for d in stores:
            if d["axis"] is not None:
                src = (
                    env.get(d["value"])
                    if d["value"] in env
                    else _cut(whole.get(d["value"]), d["axis"], t0, size)
                )
                self._store(tiers, d, d["axis"], t0, size, src, pairs, mult, data)

    def _collective(self, op: dict, x, in_shape, out_shape, data: bool) -> np.ndarray | None:
        """One tile of an all-reduce or all-gather, exchanged with the peer sockets."""
        if op["op"] == "allreduce":
            return self.all_reduce(x) if data else None
        axis = op["attrs"]["axis"]
        if out_shape[axis] != in_shape[axis] * self.target.sockets:
            raise ExecutionError(
                f"{op['output']}: an all-gather of {tuple(in_shape)} into {tuple(out_shape)} "
                f"along axis {axis} does not join the schedule's {self.target.sockets} socket(s)"
            )
        return self.all_gather(x, axis) if data else None

    def _inputs(self, op, values, env, shapes, whole, tiers, t0: int, size: int, data):
        """One tile's operands of ``op`` and their shapes, from wherever each one lives."""
        streamed_b = op["b_stream"]["value"] if "b_stream" in op else None
        table = op["gather_from"]["value"] if "gather_from" in op else None
        ins, in_shapes = [], []
        for name, axis in zip(op["inputs"], op["axes"], strict=True):
            if name == streamed_b:  # arrives chunk by chunk inside the matmul
                ins.append(None)
                in_shapes.append(tuple(values[name]["shape"]))
            elif name == table:  # looked up where it lives, row by row
                buffer = op["gather_from"]["buffer"]
                ins.append(self._array(tiers, buffer) if data else None)
                in_shapes.append(tuple(values[name]["shape"]))
            elif name in env:  # a tile of this phase
                ins.append(env[name])
                in_shapes.append(shapes[name])
            else:  # whole in SRAM (resident, an earlier phase's, or a constant)
                full = values[name]["shape"] if name in values else ()
                ins.append(_cut(whole[name], axis, t0, size))
                in_shapes.append(tile_shape(full, axis, size))
        return ins, in_shapes

    def _store(self, tiers, dma, axis, t0, size, array, pairs, mult, data=None) -> None:
        """Copy one tile of an SRAM value out to ``dma``'s box in its tier."""
        b = self.buffers[dma["buffer"]]
        box = self._transfer(dma, axis, t0, size, pairs, mult)
        if not (not self.count_only if data is None else data):
            return
        dst = tiers[dma["dst"]].arrays
        if dst.get(dma["buffer"]) is None:
            dst[dma["buffer"]] = np.empty(b["shape"], dtype=array.dtype)
        dst[dma["buffer"]][_box_index(box)] = array

    def _streamed_matmul(self, op, ins, tiers, pairs, mult, out_shape, data):
        """``a @ b`` with ``b`` brought from HBM/DDR chunk by chunk along its N dim."""
        d = op["b_stream"]
        n_total = self.buffers[d["buffer"]]["shape"][d["axis"]]
        if not data:
            for n0, size, n in self._tile_classes(n_total, d["chunk"]):
                self._transfer(d, d["axis"], n0, size, pairs, mult * n)
            return None
        parts = []
        for n0, size in self._steps(n_total, d["chunk"]):
            chunk = self._load(tiers, d, d["axis"], n0, size, pairs, mult, data)
            parts.append(matmul([ins[0], chunk], op["attrs"], ()))
        return np.concatenate(parts, axis=-1).reshape(out_shape)


def _cut(x: np.ndarray | None, axis: int | None, t0: int, size: int):
    """``x`` sliced to one tile along ``axis`` (whole if ``axis`` is None)."""
    if x is None or axis is None or np.ndim(x) == 0:
        return x
    index = [slice(None)] * x.ndim
    index[axis] = slice(t0, t0 + size)
    return x[tuple(index)]


class Counters:
    """Everything the runtime counts, kept in one place."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = defaultdict(int)
        self.flops = 0
        self.cycles = 0
        self.kernels: list[dict] = []

    def add_kernel(
        self, name: str, ops, flops: int, pairs: Mapping[str, int], cost, sram_bytes, pmus
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
