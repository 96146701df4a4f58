"""The cost model: FLOPs per op and cycles per kernel. The one place both sides use.

The backend estimates a schedule with it from the IR's shapes; the runtime
counts with it from what it actually executed. A test asserts they agree.

Per kernel (DESIGN.md §7), in whole cycles of the target clock::

    cycles = launch + max(compute, hbm, ddr, p2p) + fill

where, by the target's launch mode,

- serial (``software``: host-launched, ``hardware``: on-chip orchestrated): launch is the
  mode's per-kernel launch cost, paid before the body;
- queued (``async``: the host enqueues kernels ahead of the device, ``graph``: a CUDA Graph
  replayed): a kernel takes ``max(body + fill, issue) + gap``, so launch is the exposed part,
  ``max(0, issue - body - fill) + gap``: a kernel shorter than the host's issue interval
  waits for the next issue, and the device idles ``gap`` between kernels.

- compute: the slowest pipeline stage; each op with work is a stage, and stages
  get PCUs in proportion to their work (a one-op kernel gets the whole chip); a
  matmul's output tiles go to its PCUs in waves, the last one partly idle
  (``wave_efficiency``);
- hbm / ddr: bytes that cross the tier, at what a stream achieves of its bandwidth:
  the tier's latency, then the bytes at ``efficiency`` of peak (SRAM is not a limit);
- p2p: bytes each socket sends to its peers (``sram->p2p``) over the link bandwidth
  (ring collectives: ``allreduce_bytes``, ``allgather_bytes``), plus the link latency per
  ring step (``collective_steps``: 2(N−1) for an all-reduce, N−1 for an all-gather);
- fill: the pipeline's fill and drain: the first piece of a tile through every stage but
  the slowest, plus ``fill_cycles_per_stage`` per op. A matmul hands its tile on a block
  of ``matmul_tile_cols`` output columns at a time (``first_chunks``), so a whole-layer
  decode kernel pays one block's trip through its stages, not the whole tile's;
- launch: serial (software, hardware) or queued (async, graph), a target setting.

A kernel is *bound* by the largest term: launch, fill, or the body's largest part.
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
    rows: int = 0  # output rows of a matmul tile: fewer than the PCU's lanes leave lanes idle
    cols: int = 0  # output columns of a matmul tile (with rows: its output tiles, in waves)

    @property
    def total(self) -> int:
        return self.matmul + self.vector


def op_work(op: str, attrs: Mapping, in_shapes: Sequence[Sequence[int]], out_shape) -> Work:
    """FLOPs of one df op (``op`` is its name without the ``df.`` prefix)."""
    out = _numel(out_shape)
    if op == "matmul":
        k = in_shapes[0][-1]
        return Work(matmul=2 * out * k, rows=math.prod(out_shape[:-1]), cols=out_shape[-1])
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
    if op == "topk":  # a comparison per input element and rank kept
        return Work(vector=_numel(in_shapes[0]) * max(1, math.ceil(math.log2(attrs["k"] + 1))))
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
    #: per stage (op with work, in the order of ``stage_pcus``): its phase, its busy cycles
    #: (every tile through it), and when it starts, in cycles after the kernel's launch: its
    #: phase's start (the phases before it: their slowest stage plus their fill) plus the
    #: first pieces of the earlier stages of its phase, at most the phase's fill of first
    #: pieces (all but the largest), so a phase's stages end within its compute and fill
    stage_phases: tuple[int, ...] = ()
    stage_cycles: tuple[int, ...] = ()
    stage_starts: tuple[int, ...] = ()

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

    def stages_json(self) -> dict:
        """The per-stage timeline (the runtime's report carries it; the schedule does not)."""
        return {
            "stage_phases": list(self.stage_phases),
            "stage_cycles": list(self.stage_cycles),
            "stage_starts": list(self.stage_starts),
        }


def allocate_pcus(stage_work: Sequence[float], pcus: int) -> list[int]:
    """PCUs per stage in proportion to its work (PCU-cycles), at least one each, ``pcus`` in all.

    Each stage first gets one PCU; the rest are shared in proportion to work, largest
    remainders first (ties to the earlier stage), so the sum is exactly ``pcus``. More
    stages than PCUs get one each: fusion keeps kernels within the array, so that only
    happens to a kernel costed on its own.
    """
    n, total = len(stage_work), sum(stage_work)
    if n == 0:
        return []
    if total == 0 or n >= pcus:
        return [1] * n
    shares = [(pcus - n) * w / total for w in stage_work]
    alloc = [1 + int(s) for s in shares]
    by_remainder = sorted(range(n), key=lambda i: (int(shares[i]) - shares[i], i))
    for i in by_remainder[: pcus - sum(alloc)]:
        alloc[i] += 1
    return alloc


def _cycles_for_bytes(nbytes: int, bandwidth_Bps: float, clock_hz: float) -> int:
    if nbytes == 0:
        return 0
    return math.ceil(nbytes * clock_hz / bandwidth_Bps)


def stream_cycles(nbytes: int, memory, clock_hz: float) -> int:
    """Cycles a kernel's ``nbytes`` to or from ``memory`` take (Hockney's model): the tier's
    latency before the first bytes, then the bytes at its achievable bandwidth."""
    if nbytes == 0:
        return 0
    return round(memory.latency_s * clock_hz) + _cycles_for_bytes(
        nbytes, memory.achievable_Bps, clock_hz
    )


def first_chunks(w: Work, tile_cols: int) -> int:
    """The pieces a stage hands its tile on in: a matmul emits its output a block of
    ``tile_cols`` columns at a time (each needs only that chunk of the weight), so the next
    stage starts after the first block, and the fill a stage adds is one block's time.
    Other ops hand on the tile whole."""
    return max(1, math.ceil(w.cols / tile_cols)) if w.matmul and w.cols else 1


def wave_efficiency(w: Work, pcus: int, tile_rows: int, tile_cols: int) -> float:
    """The share of ``pcus`` a matmul keeps busy when its output tiles are dealt to them in
    waves: ``tiles / (waves · pcus)``. Fewer tiles than PCUs are split along K (split-K)
    into as many pieces as fill the PCUs, so only the last wave's remainder idles."""
    if not w.matmul or not w.rows or not w.cols:
        return 1.0
    tiles = math.ceil(w.rows / tile_rows) * math.ceil(w.cols / tile_cols)
    units = tiles * max(1, pcus // tiles)  # split-K pieces when tiles are few
    return units / (math.ceil(units / pcus) * pcus)


def tier_bytes(bytes_by_pair: Mapping[str, int], tier: str) -> int:
    """Bytes of every transfer that reads or writes ``tier`` ('hbm->sram' counts for hbm)."""
    return sum(n for pair, n in bytes_by_pair.items() if tier in pair.split("->"))


#: one op's work in one phase: the work of each tile shape, and how many such tiles ran
TileWork = Mapping[Work, int]


def launch_cycles(target: Target, device_cycles: int) -> int:
    """The launch cycles a kernel whose body and fill take ``device_cycles`` adds.

    Serial modes pay the launch cost in full before the body. Queued modes (the host
    enqueues ahead of the device) pay what the issue interval exceeds the kernel by, plus
    the inter-kernel gap: the kernel takes ``max(device_cycles, issue) + gap``.
    """
    la, clock = target.launch, target.compute.clock_hz
    if not la.queued:
        return round(la.seconds * clock)
    issue, gap = round(la.seconds * clock), round(la.gap_s * clock)
    return max(0, issue - device_cycles) + gap


def kernel_cost(
    target: Target,
    phases: Sequence[Sequence[TileWork]],
    bytes_by_pair: Mapping[str, int],
    p2p_steps: int = 0,
) -> KernelCost:
    """Cycles of one kernel from its ops' per-tile work, phase by phase, its DMA bytes, and
    the ring steps of its collectives (each pays the link latency).

    Each op is a pipeline stage with PCUs in proportion to its work over the whole
    kernel. A phase takes as long as its slowest stage (tile by tile, so tiles too
    small for their PCUs waste cycles, and every tile costs each stage
    ``tile_cycles_per_stage`` of control) plus the pipeline fill and drain: the first
    piece of a tile (a matmul's first block of output columns, another op's whole tile)
    through the other stages, and ``fill_cycles_per_stage`` per stage.
    """
    c = target.compute
    clock = c.clock_hz

    def pcu_cycles(w: Work) -> float:
        lanes_used = min(1.0, w.rows / c.simd_lanes) if w.rows else 1.0
        return (
            w.matmul / (c.matmul_flop_per_cycle_per_pcu * lanes_used)
            + w.vector / c.vector_flop_per_cycle_per_pcu
        )

    tile_overhead = target.launch.tile_cycles_per_stage
    stages = [(p, op) for p, ops in enumerate(phases) for op in ops if any(w.total for w in op)]
    pcus = allocate_pcus(
        [sum(pcu_cycles(w) * n for w, n in op.items()) for _, op in stages], c.pcus
    )
    by_phase: list[list[tuple[TileWork, int]]] = [[] for _ in phases]
    for (p, op), n_pcus in zip(stages, pcus, strict=True):
        by_phase[p].append((op, n_pcus))
    compute = fill = 0
    stage_phases: list[int] = []
    stage_cycles: list[int] = []
    stage_starts: list[int] = []
    for p, ops in enumerate(phases):
        per_stage, first_tile = [], []
        for op, n_pcus in by_phase[p]:

            def cycles(w: Work, n_pcus: int = n_pcus) -> int:
                waves = wave_efficiency(w, n_pcus, c.matmul_tile_rows, c.matmul_tile_cols)
                return math.ceil(pcu_cycles(w) / (n_pcus * waves))

            per_stage.append(sum((cycles(w) + tile_overhead) * n for w, n in op.items()))
            first_tile.append(
                max(math.ceil(cycles(w) / first_chunks(w, c.matmul_tile_cols)) for w in op)
                + tile_overhead
            )
        # a stage starts once the first pieces of the stages before it have passed, as far
        # as the phase's fill allows (it counts all but the largest first piece), so every
        # stage ends within the phase's slowest stage plus its fill
        start, fill_cap = compute + fill, sum(first_tile) - max(first_tile, default=0)
        before = 0  # the first pieces of the stages before this one
        for busy, first in zip(per_stage, first_tile, strict=True):
            stage_phases.append(p)
            stage_cycles.append(busy)
            stage_starts.append(start + min(before, fill_cap))
            before += first
        compute += max(per_stage, default=0)
        fill += sum(first_tile) - max(first_tile, default=0)
        fill += max(len(ops), 1) * target.launch.fill_cycles_per_stage
    hbm = stream_cycles(tier_bytes(bytes_by_pair, "hbm"), target.memory["hbm"], clock)
    ddr = stream_cycles(tier_bytes(bytes_by_pair, "ddr"), target.memory["ddr"], clock)
    p2p = _cycles_for_bytes(
        tier_bytes(bytes_by_pair, "p2p"), target.network.p2p_bandwidth_Bps, clock
    ) + round(p2p_steps * target.network.p2p_latency_s * clock)
    parts = {"compute": compute, "hbm": hbm, "ddr": ddr, "p2p": p2p}
    body = max(parts.values())
    bound = max(parts, key=lambda k: parts[k]) if body else "launch"
    launch = launch_cycles(target, body + fill)
    if launch > body:
        bound = "launch"
    if fill > max(launch, body):  # a deep pipeline over few tiles: latency, not throughput
        bound = "fill"
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
        stage_phases=tuple(stage_phases),
        stage_cycles=tuple(stage_cycles),
        stage_starts=tuple(stage_starts),
    )


def buffers_per_tile(extent: int, tile: int) -> int:
    """SRAM buffers a streamed value takes: two (double-buffered: one fills while the other
    is used) when its phase has more than one tile, else one."""
    return 2 if math.ceil(extent / tile) > 1 else 1


def pmus_for(sram_bytes: int, sram_capacity: int, pmus: int) -> int:
    """PMUs a kernel's SRAM working set occupies (at least one): SRAM is split evenly."""
    return max(1, math.ceil(sram_bytes / (sram_capacity // pmus)))


def tile_shape(shape: Sequence[int], axis: int | None, size: int) -> tuple[int, ...]:
    """``shape`` with its streamed ``axis`` cut to one tile of ``size``."""
    if axis is None:
        return tuple(shape)
    out = list(shape)
    out[axis] = size
    return tuple(out)


def allreduce_bytes(nbytes: int, sockets: int) -> int:
    """Bytes one socket sends in a ring all-reduce of ``nbytes``: 2·(N−1)/N of it."""
    return 2 * (sockets - 1) * nbytes // sockets


def allgather_bytes(nbytes: int, sockets: int) -> int:
    """Bytes one socket sends in a ring all-gather whose result is ``nbytes``: its shard,
    ``nbytes``/N, to each of the N−1 others — (N−1)/N of the result."""
    return (sockets - 1) * nbytes // sockets


#: collective op name -> bytes one socket sends for a result (tile) of that many bytes
COLLECTIVE_BYTES = {"allreduce": allreduce_bytes, "allgather": allgather_bytes}
#: collective op name -> ring steps over N sockets: an all-reduce is a reduce-scatter and
#: an all-gather of N−1 steps each, an all-gather N−1 steps
COLLECTIVE_STEPS = {"allreduce": lambda n: 2 * (n - 1), "allgather": lambda n: n - 1}


def collective_bytes(op: str, nbytes: int, sockets: int) -> int:
    """What one socket sends its peers for collective ``op`` producing ``nbytes``."""
    return COLLECTIVE_BYTES[op](nbytes, sockets) if sockets > 1 else 0


def collective_steps(op: str, sockets: int) -> int:
    """Ring steps of one collective ``op`` over ``sockets``: each pays the link latency."""
    return COLLECTIVE_STEPS[op](sockets) if sockets > 1 else 0


def tile_sizes(extent: int, tile: int) -> dict[int, int]:
    """Tile size -> how many tiles of that size cover ``extent`` (full tiles, then the rest)."""
    sizes = {tile: extent // tile} if extent >= tile else {}
    if extent % tile:
        sizes[extent % tile] = 1
    return sizes or {extent: 1}
