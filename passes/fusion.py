"""Fusion: partition the graph's compute ops into kernels.

Policies:

- ``none``: every op its own kernel — the SN40L paper's *unfused* baseline
  (reshapes stay outside kernels: they are views and move no data);
- ``epilogue``: GPU-style, as Inductor/XLA do — pointwise and movement ops fuse
  with their producer (epilogues) and into a following reduction (prologues); a
  GEMM or attention starts a kernel and takes epilogues only;
- ``dataflow``: SN40L streaming — groups of ops become one pipelined kernel when the
  chip holds them (PCUs for the stages, PMUs and SRAM for the buffers at the smallest
  tiles). A greedy pass in program order gives a first partition; the partition search
  (``coec.passes.search``) then finds the cheapest one, exactly, within a count of
  kernels it may cost, and keeps the greedy one when it finds nothing better.

Legality (``can_fuse``, a chain of early returns that says why not) is kept apart
from profitability (``fusion_score``, bytes saved first, then launches).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from coec.backend.cost import (
    collective_bytes,
    collective_steps,
    launch_cycles,
    op_work,
    pmus_for,
)
from coec.backend.plan import KernelPlan, plan_streams
from coec.backend.target import FUSION_POLICIES, Target, load_target
from coec.ir import ops as df
from coec.ir.errors import ConfigError
from coec.passes.outline import outline, restore_order
from coec.passes.search import search_partition
from coec.passes.tiling import Boundary, choose_tiles, min_sram_bytes

log = logging.getLogger(__name__)

POLICIES = FUSION_POLICIES

#: ops that never become kernels of their own: sources
_SOURCES = (df.WeightOp, df.ConstantOp)
GEMM = (df.MatmulOp, df.AttentionOp)
REDUCTION = (df.ReduceOp, df.SoftmaxOp, df.LayerNormOp, df.RMSNormOp)


def compute_ops(fn: func.FuncOp) -> list[df.DfOp]:
    return [
        op
        for op in fn.body.block.ops
        if isinstance(op, df.DfOp) and not isinstance(op, (*_SOURCES, df.KernelOp))
    ]


def dataflow_graph(ops: Sequence[df.DfOp]) -> nx.DiGraph:
    """Producer -> consumer edges between compute ops, weighted by the bytes that flow."""
    graph = nx.DiGraph()
    members = set(ops)
    for i, op in enumerate(ops):
        graph.add_node(op, order=i)
    for op in ops:
        for v in op.operands:
            if v.owner in members:
                graph.add_edge(v.owner, op, bytes=df.tensor_type(v).nbytes)
    return graph


# -- none ------------------------------------------------------------------------------------
def partition_none(ops: Sequence[df.DfOp]) -> list[list[df.DfOp]]:
    return [[op] for op in ops if not isinstance(op, df.ReshapeOp)]


# -- epilogue ------------------------------------------------------------------------------
def _kind(op: df.DfOp) -> str:
    if isinstance(op, GEMM):
        return "gemm"
    if isinstance(op, REDUCTION):
        return "reduction"
    return "pointwise"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    why: str = ""
    #: the resource that refused it ("sram", "pcus", "pmus") and how much was needed / there
    resource: str = ""
    need: int = 0
    have: int = 0


def can_fuse_epilogue(group: Sequence[df.DfOp], op: df.DfOp) -> Verdict:
    """May ``op`` join ``group`` (one of its producers' kernel) as a GPU would fuse it?"""
    kind = _kind(op)
    kinds = {_kind(o) for o in group}
    if kind == "gemm":
        return Verdict(False, "a GEMM takes no prologue: it starts its own kernel")
    if kind == "reduction" and kinds != {"pointwise"}:
        return Verdict(False, "a reduction fuses only pointwise prologues")
    return Verdict(True)


def fusion_score(group: Sequence[df.DfOp], op: df.DfOp) -> tuple[int, int]:
    """(bytes no longer moved through HBM, launches saved) if ``op`` joins ``group``."""
    members = set(group)
    saved = 0
    for v in op.operands:
        if v.owner in members:
            saved += df.tensor_type(v).nbytes  # the read
            if all(u.operation in members or u.operation is op for u in v.uses):
                saved += df.tensor_type(v).nbytes  # and the write
    return saved, 1


def partition_epilogue(ops: Sequence[df.DfOp]) -> list[list[df.DfOp]]:
    graph = dataflow_graph(ops)
    group_of: dict[df.DfOp, int] = {}
    groups: list[list[df.DfOp]] = []
    deps = nx.DiGraph()  # group -> group edges, to keep every merge convex
    for op in ops:
        producers = sorted({group_of[p] for p in graph.predecessors(op)})
        best, best_score = None, None
        for g in producers:
            verdict = can_fuse_epilogue(groups[g], op)
            if not verdict.ok:
                log.debug("epilogue: %s not into group %d: %s", op.name, g, verdict.why)
                continue
            if any(h != g and nx.has_path(deps, g, h) for h in producers):
                log.debug("epilogue: %s not into group %d: not convex", op.name, g)
                continue
            score = fusion_score(groups[g], op)
            if best_score is None or score > best_score:
                best, best_score = g, score
        if best is None:
            best = len(groups)
            groups.append([])
            deps.add_node(best)
        groups[best].append(op)
        group_of[op] = best
        for g in producers:
            if g != best:
                deps.add_edge(g, best)
    return [g for g in groups if not all(isinstance(o, df.ReshapeOp) for o in g)]


# -- dataflow ----------------------------------------------------------------------------
def group_boundary(ops: Sequence[df.DfOp]) -> Boundary:
    """A candidate group's inputs and the values it would hand back (used outside it)."""
    members = set(ops)
    inputs: list[SSAValue] = []
    for op in ops:
        for v in op.operands:
            if (
                v.owner not in members
                and not isinstance(v.owner, df.ConstantOp)
                and v not in inputs
            ):
                inputs.append(v)
    outputs = [
        (op.results[0], op.results[0])
        for op in ops
        if any(u.operation not in members for u in op.results[0].uses)
    ]
    return inputs, outputs


def can_fuse_dataflow(
    ops: Sequence[df.DfOp], target: Target, plan: KernelPlan | None = None
) -> Verdict:
    """May ``ops`` run as one streaming kernel? PCUs for the stages, SRAM/PMUs at minimal
    tiles. ``plan``: their stream plan, when the caller has it."""
    c = target.compute
    stages = sum(1 for o in ops if not isinstance(o, (df.ReshapeOp, df.PermuteOp, df.SliceOp)))
    if stages > c.pcus:
        return Verdict(False, f"{stages} stages exceed {c.pcus} PCUs", "pcus", stages, c.pcus)
    need = min_sram_bytes(*group_boundary(ops), plan or plan_streams(list(ops)))
    cap = target.memory["sram"].capacity_bytes
    if need > cap:
        return Verdict(False, f"needs {need:,} bytes of SRAM, {cap:,} available", "sram", need, cap)
    pmus = pmus_for(need, cap, c.pmus)
    if pmus > c.pmus:
        return Verdict(False, f"needs more than {c.pmus} PMUs", "pmus", pmus, c.pmus)
    return Verdict(True)


def kernel_cycles(ops: Sequence[df.DfOp], target: Target, plan: KernelPlan | None = None) -> int:
    """Modeled cycles of ``ops`` as one kernel at its best tiles (``plan``: their stream
    plan, when the caller has it; its tiles are chosen in place)."""
    _, cycles = choose_tiles(group_boundary(ops), plan or plan_streams(list(ops)), target)
    return cycles


#: ops that only move or view data: no work of their own, so fusing them is judged together
#: with the next op that has work (each judged alone, a long chain of them re-plans the
#: growing kernel once per op, quadratic in the model's size)
_MOVEMENT = (df.ReshapeOp, df.PermuteOp, df.SliceOp, df.ConcatOp, df.BroadcastOp, df.UpdateOp)


def _steps(ops: Sequence[df.DfOp]) -> list[list[df.DfOp]]:
    """Ops in program order, each movement op glued to the op after it."""
    steps: list[list[df.DfOp]] = []
    for op in ops:
        if steps and isinstance(steps[-1][-1], _MOVEMENT):
            steps[-1].append(op)
        else:
            steps.append([op])
    return steps


def partition_dataflow(ops: Sequence[df.DfOp], target: Target) -> list[list[df.DfOp]]:
    """Greedy in program order: an op (with the movement ops just before it) joins the
    running kernel if it fits and fusing it is modeled faster than starting a new kernel
    with it (weights forced to stream by a crowded SRAM can make a split cheaper)."""
    groups: list[list[df.DfOp]] = []
    current: list[df.DfOp] = []
    current_cycles = 0
    for step in _steps(ops):
        alone = None
        if current:
            candidate = [*current, *step]
            verdict = can_fuse_dataflow(candidate, target)
            if verdict.ok:
                fused = kernel_cycles(candidate, target)
                alone = kernel_cycles(step, target)
                if fused <= current_cycles + alone:
                    current, current_cycles = candidate, fused
                    continue
                verdict = Verdict(
                    False, f"fused {fused:,} cycles > {current_cycles + alone:,} apart"
                )
            log.debug("dataflow: kernel boundary before %s: %s", step[0].name, verdict.why)
            groups.append(current)
        current = list(step)
        current_cycles = alone if alone is not None else kernel_cycles(step, target)
    if current:
        groups.append(current)
    groups = merge_neighbours(groups, target)
    return [g for g in groups if not all(isinstance(o, df.ReshapeOp) for o in g)]


def merge_neighbours(groups: list[list[df.DfOp]], target: Target) -> list[list[df.DfOp]]:
    """Undo the greedy pass's myopic cuts: merge adjacent kernels while the merge fits and
    the cost model says one kernel beats two (the greedy pass judged each op only against
    a kernel of its own)."""
    cycles: dict[int, int] = {}

    def cost(i: int) -> int:
        key = id(groups[i])
        if key not in cycles:
            cycles[key] = kernel_cycles(groups[i], target)
        return cycles[key]

    i = 0
    while i + 1 < len(groups):
        merged = groups[i] + groups[i + 1]
        if can_fuse_dataflow(merged, target).ok:
            merged_cycles = kernel_cycles(merged, target)
            if merged_cycles < cost(i) + cost(i + 1):
                groups[i : i + 2] = [merged]
                cycles[id(merged)] = merged_cycles
                i = max(i - 1, 0)
                continue
        i += 1
    return groups


#: kernels (unit sets) the partition search may cost per function: a count, not a clock,
#: so a compile is deterministic. The default searches small graphs exactly and keeps
#: compiles quick; a decoder layer's exact search needs ~3,000 (tens of seconds):
#: ``--search-limit`` raises it
SEARCH_LIMIT = 300


@dataclass
class Searched:
    """What the partition search did for one function (for ``coec explain`` and benches)."""

    greedy_cycles: int
    cycles: int
    method: str  # how far the search is exact, or why the greedy partition stands
    asked: int  # kernels costed


def step_graph(steps: Sequence[Sequence[df.DfOp]]) -> nx.DiGraph:
    """Step -> step edges where a step reads a value another produces (nodes: indices)."""
    index = {op: k for k, step in enumerate(steps) for op in step}
    graph = nx.DiGraph()
    graph.add_nodes_from(range(len(steps)))
    for k, step in enumerate(steps):
        for op in step:
            for v in op.operands:
                if v.owner in index and index[v.owner] != k:
                    graph.add_edge(index[v.owner], k)
    return graph


def kernel_bound(ops: Sequence[df.DfOp], target: Target, plan: KernelPlan | None = None) -> int:
    """A lower bound on ``kernel_cycles(ops)``, cheap: the launch the kernel pays at
    least; its body, at least its HBM bytes at the achievable rate after the tier's
    latency, and at least its FLOPs on every PCU at full rate; and each op's fill.
    With the kernel's stream ``plan`` the compute is bounded phase by phase
    (``phase_bound``): tighter, but then not at most its parts' bounds added.

    The HBM bytes are at least every input read once and every output written once,
    leaving out what may move less: an embedding table (read by rows), an update's dest
    when nothing in the kernel reads the update (its rows are written in place) and an
    update's result. A kernel's boundary is within the union of its parts' boundaries,
    so the bound of a union is at most its parts' bounds added (what the search's bound
    of the rest rests on)."""
    inputs, outputs = group_boundary(ops)
    members = set(ops)

    def read_whole(use) -> bool:
        op = use.operation
        if isinstance(op, df.GatherOp) and use.index == 0:
            return False
        if isinstance(op, df.UpdateOp) and use.index == 0:
            return any(u.operation in members for u in op.results[0].uses)
        return op in members

    def moves_whole(v: SSAValue) -> bool:
        return any(read_whole(u) for u in v.uses)

    moved = sum(df.tensor_type(v).nbytes for v in inputs if moves_whole(v))
    moved += sum(
        df.tensor_type(v).nbytes for v, _ in outputs if not isinstance(v.owner, df.UpdateOp)
    )
    hbm = target.memory["hbm"]
    c = target.compute
    hbm_cycles = (
        int(hbm.latency_s * c.clock_hz + moved * c.clock_hz / hbm.achievable_Bps) if moved else 0
    )
    work = [
        op_work(
            op.name.removeprefix("df."),
            op.props(),
            [df.tensor_type(v).shape_tuple for v in op.operands],
            df.tensor_type(op.results[0]).shape_tuple,
        )
        for op in ops
    ]
    pcu_cycles = [
        w.matmul / c.matmul_flop_per_cycle_per_pcu + w.vector / c.vector_flop_per_cycle_per_pcu
        for w in work
    ]
    if plan is None:  # every PCU busy at its full rate: no kernel computes faster
        compute = int(sum(pcu_cycles) / c.pcus)
    else:
        phases = [plan.streams[op].phase for op in ops]
        compute = phase_bound(
            [(p, w) for p, w, full in zip(phases, pcu_cycles, work, strict=True) if full.total],
            c.pcus,
        )
    fill = len(ops) * target.launch.fill_cycles_per_stage
    return launch_cycles(target, 10**18) + max(hbm_cycles, compute, p2p_bound(ops, target)) + fill


def p2p_bound(ops: Sequence[df.DfOp], target: Target) -> int:
    """A lower bound on the cycles the kernel's collectives take: what each sends whole
    (less a byte per row, for the whole bytes each tile rounds to) at the link bandwidth,
    and the link latency per ring step of one tile each."""
    n, net, clock = target.sockets, target.network, target.compute.clock_hz
    if n < 2:
        return 0
    sent = steps = 0
    for op in ops:
        if isinstance(op, df.AllReduceOp | df.AllGatherOp):
            kind, t = op.name.removeprefix("df."), df.tensor_type(op.results[0])
            sent += max(0, collective_bytes(kind, t.nbytes, n) - max(t.shape_tuple, default=1))
            steps += collective_steps(kind, n)
    return int(sent * clock / net.p2p_bandwidth_Bps) + round(steps * net.p2p_latency_s * clock)


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


def partition_searched(
    ops: Sequence[df.DfOp], target: Target, limit: int = SEARCH_LIMIT
) -> tuple[list[list[df.DfOp]], Searched]:
    """The cheapest partition the search finds within ``limit`` (``search_partition``),
    never worse than the greedy one, which stands when the search gives up."""
    greedy = partition_dataflow(ops, target)
    greedy_cycles = sum(kernel_cycles(g, target) for g in greedy)
    steps = _steps(ops)
    if limit <= 0 or len(steps) < 2:
        return greedy, Searched(greedy_cycles, greedy_cycles, "greedy (no search)", 0)

    def flat(units) -> list[df.DfOp]:
        return [op for k in units for op in steps[k]]

    def views(group) -> bool:  # reshapes alone stay outside kernels and move nothing
        return all(isinstance(o, df.ReshapeOp) for o in group)

    plans: dict = {}  # units -> stream plan, made once for fits and cost

    def plan(units) -> KernelPlan:
        if units not in plans:
            plans[units] = plan_streams(flat(units))
        return plans[units]

    def fits(units) -> bool:
        return can_fuse_dataflow(flat(units), target, plan(units)).ok

    def cost(units) -> int:
        group = flat(units)
        return 0 if views(group) else kernel_cycles(group, target, plans.pop(units, None))

    def bound(units) -> int:
        group = flat(units)
        return 0 if views(group) else kernel_bound(group, target)

    def phase_bound(units) -> int:  # tighter, and it needs the plan
        group = flat(units)
        return 0 if views(group) else kernel_bound(group, target, plan(units))

    def rest(units) -> int:
        # any partition of the units pays at least each kernel's bound, and their sum is
        # at least the bound of all as one kernel, less what each part's terms round off
        return max(0, bound(units) - 2 * len(units))

    found = search_partition(
        step_graph(steps),
        fits,
        cost,
        limit,
        (bound, phase_bound),
        incumbent=greedy_cycles,
        rest=rest,
    )
    if found is None or not found.complete or found.cycles >= greedy_cycles:
        why = f"greedy (search: {found.method})" if found and not found.complete else ""
        method = why or (
            f"greedy (as good as the search over {found.method})" if found else "greedy"
        )
        asked = found.asked if found else 0
        return greedy, Searched(greedy_cycles, greedy_cycles, method, asked)
    groups = [flat(units) for units in found.groups]
    groups = [g for g in groups if not all(isinstance(o, df.ReshapeOp) for o in g)]
    log.debug("dataflow search: %d -> %d cycles", greedy_cycles, found.cycles)
    return groups, Searched(greedy_cycles, found.cycles, found.method, found.asked)


@dataclass(frozen=True)
class FusePass(ModulePass):
    """Wrap compute ops into ``df.kernel`` regions according to ``policy``.

    Requires: a verified df function with no kernels yet.
    Guarantees: every compute op but standalone reshapes sits inside exactly one
    kernel; kernels are named ``k0, k1, ...`` in program order.
    """

    name = "fuse"
    requires = "frontend"
    policy: str = "none"
    target: str | Target = "sn40l"
    search_limit: int = SEARCH_LIMIT  # dataflow: kernels the partition search may cost

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        self.apply_target(op, load_target(self.target), self.policy, self.search_limit)

    @staticmethod
    def apply_target(
        module: ModuleOp, target: Target, policy: str, search_limit: int = SEARCH_LIMIT
    ) -> None:
        if policy not in POLICIES:
            raise ConfigError(
                f"fusion policy {policy!r} is not available; choose from {', '.join(POLICIES)}"
            )
        for fn in module.ops:
            if not isinstance(fn, func.FuncOp):
                continue
            ops = compute_ops(fn)
            if policy == "none":
                groups = partition_none(ops)
            elif policy == "epilogue":
                groups = partition_epilogue(ops)
            else:
                groups, _ = partition_searched(ops, target, search_limit)
            for group in groups:
                outline(group, "k")
            restore_order(fn.body.block)
            kernels = [k for k in fn.body.block.ops if isinstance(k, df.KernelOp)]
            for i, kernel in enumerate(kernels):  # named in final program order
                kernel.sym_name = StringAttr(f"k{i}")
