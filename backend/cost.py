"""The cost model: FLOPs per op and cycles per kernel. The one place both sides use.

The backend estimates a schedule with it from the IR's shapes; the runtime
counts with it from what it actually executed. A test asserts they agree.

Per kernel (DESIGN.md §7), in whole cycles of the target clock::

    cycles = launch + max(compute, hbm, ddr, p2p) + fill

- compute: the slowest pipeline stage; each op with work is a stage, and stages
  get PCUs in proportion to their work (a one-op kernel gets the whole chip);
- hbm / ddr: bytes that cross the tier over its bandwidth (SRAM is not a limit);
- p2p: collective bytes over the link bandwidth;
- fill: one tile's latency through the pipeline, ``fill_cycles_per_stage`` per op;
- launch: software- or hardware-orchestrated, a target setting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coec.backend.target import Target

# Vector FLOPs per output element of an elementwise kind (default 1).
ELEMENTWISE_FLOPS = {"gelu": 8, "gelu_tanh": 8, "silu": 4, "sigmoid": 3, "cast": 0}
SOFTMAX_FLOPS = 5  # max, subtract, exp, sum, divide
LAYERNORM_FLOPS = 8  # mean, centre, square, mean, rsqrt, scale, weight, bias
RMSNORM_FLOPS = 5  # square, mean, rsqrt, scale, weight


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


@dataclass(frozen=True)
class Work:
    """An op's FLOPs, split by the PCU mode that runs them."""

    matmul: int = 0
    vector: int = 0

    @property
    def total(self) -> int:
        return self.matmul + self.vector


def op_work(op: str, attrs: Mapping, in_shapes: Sequence[Sequence[int]], out_shape) -> Work:
    """FLOPs of one df op (``op`` is its name without the ``df.`` prefix)."""
    out = _numel(out_shape)
    if op == "matmul":
        k = in_shapes[0][-1]
        return Work(matmul=2 * out * k)
    if op == "attention":
        q, k, v = in_shapes[:3]
        scores = _numel(q[:-1]) * k[-2]  # batch*heads*L*S
        return Work(
            matmul=2 * scores * q[-1] + 2 * scores * v[-1], vector=(SOFTMAX_FLOPS + 1) * scores
        )
    if op == "elementwise":
        return Work(vector=ELEMENTWISE_FLOPS.get(attrs.get("kind", ""), 1) * out)
    if op == "reduce":
        return Work(vector=_numel(in_shapes[0]))
    if op == "softmax":
        return Work(vector=SOFTMAX_FLOPS * out)
    if op == "layernorm":
        return Work(vector=LAYERNORM_FLOPS * out)
    if op == "rmsnorm":
        return Work(vector=RMSNORM_FLOPS * out)
    return Work()  # movement: address generation and DMA, no arithmetic


@dataclass(frozen=True)
class KernelCost:
    cycles: int
    seconds: float
    launch_cycles: int
    compute_cycles: int
    hbm_cycles: int
    ddr_cycles: int
    p2p_cycles: int
    fill_cycles: int
    stage_pcus: tuple[int, ...]
    bound: str

    def to_json(self) -> dict:
        return {
            "cycles": self.cycles,
            "seconds": self.seconds,
            "bound": self.bound,
            "launch_cycles": self.launch_cycles,
            "compute_cycles": self.compute_cycles,
            "hbm_cycles": self.hbm_cycles,
            "ddr_cycles": self.ddr_cycles,
            "p2p_cycles": self.p2p_cycles,
            "fill_cycles": self.fill_cycles,
            "stage_pcus": list(self.stage_pcus),
        }


def allocate_pcus(stage_work: Sequence[float], pcus: int) -> list[int]:
    """PCUs per stage in proportion to its work (PCU-cycles), at least one each."""
    total = sum(stage_work)
    if not stage_work:
        return []
    if total == 0:
        return [1] * len(stage_work)
    return [max(1, int(pcus * w / total)) for w in stage_work]


def _cycles_for_bytes(nbytes: int, bandwidth_Bps: float, clock_hz: float) -> int:
    if nbytes == 0:
        return 0
    return math.ceil(nbytes * clock_hz / bandwidth_Bps)


def tier_bytes(bytes_by_pair: Mapping[str, int], tier: str) -> int:
    """Bytes of every transfer that reads or writes ``tier`` ('hbm->sram' counts for hbm)."""
    return sum(n for pair, n in bytes_by_pair.items() if tier in pair.split("->"))


def kernel_cost(
    target: Target,
    works: Sequence[Work],
    bytes_by_pair: Mapping[str, int],
    n_ops: int,
    p2p_bytes: int = 0,
) -> KernelCost:
    """Cycles of one kernel from its ops' work and the bytes its DMAs move."""
    c = target.compute
    clock = c.clock_hz
    stage_work = [
        w.matmul / c.matmul_flop_per_cycle_per_pcu + w.vector / c.vector_flop_per_cycle_per_pcu
        for w in works
        if w.total
    ]
    pcus = allocate_pcus(stage_work, c.pcus)
    compute = max((math.ceil(w / p) for w, p in zip(stage_work, pcus, strict=True)), default=0)
    hbm = _cycles_for_bytes(
        tier_bytes(bytes_by_pair, "hbm"), target.memory["hbm"].bandwidth_Bps, clock
    )
    ddr = _cycles_for_bytes(
        tier_bytes(bytes_by_pair, "ddr"), target.memory["ddr"].bandwidth_Bps, clock
    )
    ring = (target.sockets - 1) / target.sockets if target.sockets > 1 else 0.0
    p2p = _cycles_for_bytes(int(p2p_bytes * ring), target.network.p2p_bandwidth_Bps, clock)
    launch = round(target.launch.seconds * clock)
    fill = max(n_ops, 1) * target.launch.fill_cycles_per_stage
    parts = {"compute": compute, "hbm": hbm, "ddr": ddr, "p2p": p2p}
    body = max(parts.values())
    bound = max(parts, key=lambda k: parts[k]) if body else "launch"
    if launch > body:
        bound = "launch"
    cycles = launch + body + fill
    return KernelCost(
        cycles=cycles,
        seconds=cycles / clock,
        launch_cycles=launch,
        compute_cycles=compute,
        hbm_cycles=hbm,
        ddr_cycles=ddr,
        p2p_cycles=p2p,
        fill_cycles=fill,
        stage_pcus=tuple(pcus),
        bound=bound,
    )
