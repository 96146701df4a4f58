"""Execute a schedule with NumPy, counting every byte, FLOP and cycle it costs.

The executor reads only the schedule (never the IR). Each tier is a set of
NumPy buffers with a capacity; DMAs are copies between tiers of the boxes the
schedule names; each kernel computes on its SRAM copies, op by op. Counters
(bytes per tier pair, FLOPs, cycles, peak occupancy) come from what was
actually moved and computed, and cycles from the shared cost model.

``count_only=True`` walks the same schedule without data; its counts must
equal execute mode's exactly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from coec.backend.cost import kernel_cost, op_work
from coec.backend.schedule import DTYPE_BYTES, validate
from coec.backend.target import Target
from coec.ir.errors import CapacityError, ExecutionError
from coec.runtime.ops import as_compute, run_op


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
        self.used = 0
        self.peak = 0

    def alloc(self, buffer: str, nbytes: int, data: np.ndarray | None = None) -> None:
        if buffer in self.sizes:
            raise ExecutionError(f"buffer {buffer} allocated twice in {self.name.upper()}")
        if self.used + nbytes > self.capacity:
            raise CapacityError(self.name, self.used + nbytes, self.capacity, f"buffer {buffer}")
        self.arrays[buffer], self.sizes[buffer] = data, nbytes
        self.used += nbytes
        self.peak = max(self.peak, self.used)

    def free(self, buffer: str) -> None:
        self.used -= self.sizes.pop(buffer)
        self.arrays.pop(buffer)


class Executor:
    """Runs one schedule; ``run`` may be called many times with new inputs."""

    def __init__(
        self,
        schedule: dict,
        weights: Mapping[str, np.ndarray] | None = None,
        *,
        count_only: bool = False,
        emulate_bf16: bool = False,
    ):
        self.schedule = validate(schedule)
        self.target = Target.from_json(schedule["target"])
        self.buffers: dict[str, dict] = schedule["buffers"]
        self.count_only = count_only
        self.emulate_bf16 = emulate_bf16
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
                tiers[b["tier"]].alloc(name, b["bytes"], data)

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
        for name in (s["buffer"] for s in kernel["stores"]):
            b = self.buffers[name]
            if b["live"][0] == index:
                tiers[b["tier"]].alloc(name, b["bytes"])
        env: dict[str, np.ndarray | None] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        pairs: dict[str, int] = defaultdict(int)

        for dma in kernel["loads"]:
            b = self.buffers[dma["buffer"]]
            nbytes = _box_numel(dma["box"]) * DTYPE_BYTES[b["dtype"]]
            sram.alloc(dma["value"], nbytes)
            src = None if self.count_only else self._array(tiers, dma["buffer"])
            env[dma["value"]] = None if src is None else src[_box_index(dma["box"])].copy()
            shapes[dma["value"]] = tuple(b - a for a, b in dma["box"])
            pairs[f"{dma['src']}->sram"] += nbytes

        for name, value in kernel["constants"].items():
            env[name] = np.float32(value)
            shapes[name] = ()

        works = []
        for op in kernel["ops"]:
            info = kernel["values"][op["output"]]
            out_shape, dtype = tuple(info["shape"]), info["dtype"]
            if self.count_only:
                out = None
            else:
                out = run_op(
                    op["op"], [env[i] for i in op["inputs"]], op["attrs"], out_shape, dtype
                )
                out = self._store_dtype(out, dtype)
            sram.alloc(op["output"], math.prod(out_shape) * DTYPE_BYTES[dtype])
            env[op["output"]], shapes[op["output"]] = out, out_shape
            works.append(
                op_work(op["op"], op["attrs"], [shapes[i] for i in op["inputs"]], out_shape)
            )

        for dma in kernel["stores"]:
            b = self.buffers[dma["buffer"]]
            nbytes = _box_numel(dma["box"]) * DTYPE_BYTES[b["dtype"]]
            if not self.count_only:
                dst = tiers[dma["dst"]].arrays
                if dst.get(dma["buffer"]) is None:
                    dst[dma["buffer"]] = np.empty(b["shape"], dtype=env[dma["value"]].dtype)
                dst[dma["buffer"]][_box_index(dma["box"])] = env[dma["value"]]
            pairs[f"sram->{dma['dst']}"] += nbytes

        cost = kernel_cost(self.target, works, pairs, n_ops=len(kernel["ops"]))
        ops = [
            op["attrs"].get("kind", op["op"]) if op["op"] == "elementwise" else op["op"]
            for op in kernel["ops"]
        ]
        counts.add_kernel(kernel["name"], ops, works, pairs, cost, sram.used)
        for name in list(sram.sizes):
            sram.free(name)


class Counters:
    """Everything the runtime counts, kept in one place."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = defaultdict(int)
        self.flops = 0
        self.cycles = 0
        self.kernels: list[dict] = []

    def add_kernel(self, name: str, ops, works, pairs: Mapping[str, int], cost, sram_bytes) -> None:
        flops = sum(w.total for w in works)
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
