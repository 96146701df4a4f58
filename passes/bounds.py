"""Lower bounds on what a kernel costs, cheap enough to ask of every set the partition
search might cost (``coec.passes.search`` prunes with them; the answer stays exact).

A kernel's modeled cycles are ``launch + max(compute, hbm, ddr, p2p) + fill``
(``coec.backend.cost``). Without choosing tiles, each term has a floor:

- launch: what the target's launch mode charges at least (a queued launch: the gap);
- hbm: every input read once and every output written once, after the tier's latency,
  at its achievable rate — leaving out what may move less: an embedding table (read by
  rows), an update's dest when nothing in the kernel reads the update (its rows are
  written in place), an update's result, and what only reshapes read or write (a
  reshape alone is a view, no kernel);
- compute: the FLOPs on every PCU at full rate; with the kernel's stream plan, phase by
  phase (``phase_bound``);
- p2p: what the collectives send, at the link bandwidth, plus a ring's latency each;
- fill: ``fill_cycles_per_stage`` per op that is not a reshape.

Without a plan the bound of a union of kernels is at most their bounds added (one
launch, bytes within the parts' bytes, FLOPs and fill additive), less what each term
rounds off: so the bound of the units left, less two cycles a unit, bounds any
partition of them (the search's ``rest``).

The bounds are worked out from per-step sums and per-value bit masks made once per
function, so asking one costs a pass over the function's values, not a walk of its IR.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from coec.backend.cost import collective_bytes, collective_steps, launch_cycles, op_work
from coec.backend.plan import KernelPlan
from coec.backend.target import Target
from coec.ir import ops as df


def op_full_work(op: df.DfOp):
    """The op's work on its whole shapes (once per op)."""

    def work():
        return op_work(
            op.name.removeprefix("df."),
            op.props(),
            [df.tensor_type(v).shape_tuple for v in op.operands],
            df.tensor_type(op.results[0]).shape_tuple,
        )

    return op.memo("full_work", work)


@dataclass(frozen=True)
class _Value:
    """A value the steps read or write, as masks of the steps that touch it."""

    nbytes: int
    producer: int  # the step making it (a bit), 0 when made outside the steps
    #: (reader step bit, condition mask): read whole by that step when the condition is
    #: 0, or when the kernel also holds a step of the condition (an update's readers)
    readers: tuple[tuple[int, int], ...]
    users: int  # every step that uses it
    external: bool  # used outside the steps (a later op, the return)
    written: bool  # its producer writes it out when it leaves the kernel


class Bounds:
    """Lower bounds on one kernel of any set of ``steps`` (lists of ops), by bit mask."""

    def __init__(self, steps: Sequence[Sequence[df.DfOp]], target: Target) -> None:
        self.target = target
        c = target.compute
        step_of = {op: k for k, step in enumerate(steps) for op in step}
        self.views = 0  # steps of reshapes alone
        self.pcu_cycles: list[float] = []
        self.fills: list[int] = []
        self.sent: list[int] = []
        self.rings: list[int] = []
        self.stages: list[list[tuple[df.DfOp, float]]] = []
        for k, step in enumerate(steps):
            if all(isinstance(op, df.ReshapeOp) for op in step):
                self.views |= 1 << k
            stages = []
            for op in step:
                w = op_full_work(op)
                if w.total:
                    cycles = (
                        w.matmul / c.matmul_flop_per_cycle_per_pcu
                        + w.vector / c.vector_flop_per_cycle_per_pcu
                    )
                    stages.append((op, cycles))
            self.stages.append(stages)
            self.pcu_cycles.append(sum(cycles for _, cycles in stages))
            self.fills.append(sum(not isinstance(op, df.ReshapeOp) for op in step))
            sent = rings = 0
            for op in step:
                if isinstance(op, df.AllReduceOp | df.AllGatherOp) and target.sockets > 1:
                    kind, t = op.name.removeprefix("df."), df.tensor_type(op.results[0])
                    # less a byte per row: each tile's share rounds down to whole bytes
                    rows = max(t.shape_tuple, default=1)
                    sent += max(0, collective_bytes(kind, t.nbytes, target.sockets) - rows)
                    rings += collective_steps(kind, target.sockets)
            self.sent.append(sent)
            self.rings.append(rings)
        self.values = self._values(steps, step_of)
        # the values each step makes or reads, so a set's bytes walk only its own
        self.touching: list[list[int]] = [[] for _ in steps]
        for i, v in enumerate(self.values):
            mask = v.producer
            for bit, _ in v.readers:
                mask |= bit
            for k in _units(mask):
                self.touching[k].append(i)

    @staticmethod
    def _values(steps, step_of) -> list[_Value]:
        seen, values = set(), []
        for step in steps:
            for op in step:
                for v in [*op.operands, op.results[0]]:
                    if v in seen or isinstance(v.owner, df.ConstantOp):
                        continue
                    seen.add(v)
                    made = step_of.get(v.owner)
                    readers, users, external = [], 0, False
                    for use in v.uses:
                        k = step_of.get(use.operation)
                        if k is None:
                            external = True
                            continue
                        users |= 1 << k
                        reader = use.operation
                        if isinstance(reader, df.ReshapeOp) or (
                            isinstance(reader, df.GatherOp) and use.index == 0
                        ):
                            continue
                        condition = 0
                        if isinstance(reader, df.UpdateOp) and use.index == 0:
                            condition = sum(
                                1 << step_of[u.operation]
                                for u in reader.results[0].uses
                                if u.operation in step_of
                            )
                            if not condition:
                                continue
                        readers.append((1 << k, condition))
                    values.append(
                        _Value(
                            df.tensor_type(v).nbytes,
                            0 if made is None else 1 << made,
                            tuple(readers),
                            users,
                            external,
                            not isinstance(v.owner, df.UpdateOp | df.ReshapeOp),
                        )
                    )
        return values

    def moved(self, mask: int) -> int:
        """Bytes a kernel of ``mask``'s steps reads and writes at least."""
        total = 0
        touched = {i for k in _units(mask) for i in self.touching[k]}
        for v in (self.values[i] for i in sorted(touched)):
            if v.producer & mask:
                if v.written and (v.external or v.users & ~mask):
                    total += v.nbytes
            elif any(bit & mask and (not cond or cond & mask) for bit, cond in v.readers):
                total += v.nbytes
        return total

    def kernel(self, mask: int, plan: KernelPlan | None = None, hbm: bool = True) -> int:
        """A lower bound on the cycles of one kernel of ``mask``'s steps; with its stream
        ``plan``, compute is bounded phase by phase (tighter, no longer additive); without
        ``hbm``, the bytes are not walked (cheaper, looser: a first sieve)."""
        if mask & ~self.views == 0:
            return 0  # views alone: no kernel
        t, c = self.target, self.target.compute
        units = _units(mask)
        tier = t.memory["hbm"]
        moved = self.moved(mask) if hbm else 0
        hbm_cycles = (
            int(tier.latency_s * c.clock_hz + moved * c.clock_hz / tier.achievable_Bps)
            if moved
            else 0
        )
        if plan is None:  # every PCU busy at its full rate: no kernel computes faster
            compute = int(sum(self.pcu_cycles[k] for k in units) / c.pcus)
        else:
            compute = phase_bound(
                [(plan.streams[op].phase, w) for k in units for op, w in self.stages[k]], c.pcus
            )
        net = t.network
        p2p = int(sum(self.sent[k] for k in units) * c.clock_hz / net.p2p_bandwidth_Bps)
        p2p += round(sum(self.rings[k] for k in units) * net.p2p_latency_s * c.clock_hz)
        fill = sum(self.fills[k] for k in units) * t.launch.fill_cycles_per_stage
        return launch_cycles(t, 10**18) + max(hbm_cycles, compute, p2p) + fill

    def partition(self, mask: int) -> int:
        """A lower bound on any partition of ``mask``'s steps into kernels."""
        return max(0, self.kernel(mask) - 2 * mask.bit_count())


def mask_of(units: Iterable[int]) -> int:
    return sum(1 << k for k in units)


def _units(mask: int) -> list[int]:
    return [k for k in range(mask.bit_length()) if mask >> k & 1]


def kernel_bound(ops: Sequence[df.DfOp], target: Target, plan: KernelPlan | None = None) -> int:
    """A lower bound on ``kernel_cycles(ops)`` (``Bounds.kernel`` of the ops as one set)."""
    return Bounds([[op] for op in ops], target).kernel((1 << len(ops)) - 1, plan)


def phase_bound(stages: Sequence[tuple[int, float]], pcus: int) -> int:
    """A lower bound on a kernel's compute cycles from its stages' (phase, PCU-cycles at
    full rate). Stages hold their PCUs for the whole kernel and its phases run one after
    another (``kernel_cost``), so a phase whose stages do C_ph of the kernel's C
    PCU-cycles has at most 2·n_ph + (P − n)·C_ph/C of the P PCUs (``allocate_pcus``: one
    each, a share in proportion, one more for the largest remainders) and takes at least
    C_ph over that. The bound grows with C_ph and C, so PCU-cycles at full rate (no idle
    lanes, no waves) keep it below the kernel's compute."""
    n, total = len(stages), sum(w for _, w in stages)
    by_phase: dict[int, list[float]] = {}
    for p, w in stages:
        by_phase.setdefault(p, []).append(w)
    if total == 0:
        return 0
    if n >= pcus:  # one PCU each
        return int(sum(max(ws) for ws in by_phase.values()))
    bound = 0.0
    for ws in by_phase.values():
        work = sum(ws)
        bound += work * total / (2 * len(ws) * total + (pcus - n) * work)
    return int(bound)
