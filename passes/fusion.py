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
import math
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass

from coec.backend.cost import (
    pmus_for,
)
from coec.backend.plan import KernelPlan, plan_streams
from coec.backend.target import FUSION_POLICIES, Target, load_target
from coec.ir import ops as df
from coec.ir.errors import ConfigError
from coec.passes.bounds import Bounds, mask_of
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
#: so a compile is deterministic. The zoo's decoder layers are searched over every
#: partition within it (at most ~1,900 costed, 0.1–4 s here); ``--search-limit`` moves it
SEARCH_LIMIT = 2000
#: functions of more steps keep the greedy partition: the search is sized for what
#: regional compilation hands it (a decoder layer: ~30 steps); a whole CNN of hundreds of
#: tiny ops has a lattice of cut points the bounds cannot prune (its pipeline fill, which
#: no bound sees without tiles, dominates) and kernels of hundreds of ops to cost
SEARCH_MAX_STEPS = 160


@dataclass
class Searched:
    """What the partition search did for one function (for ``coec explain`` and benches)."""

    greedy_cycles: int
    cycles: int
    method: str  # how far the search is exact, or why the greedy partition stands
    asked: int  # kernels costed
    #: a lower bound on every partition's cycles: ``cycles`` itself when the search was
    #: exact over every partition, else the bound of the function as one kernel
    lower_cycles: int = 0

    @property
    def proven(self) -> bool:
        """Whether the partition is the cheapest of every valid one (on the cost model)."""
        return self.lower_cycles == self.cycles

    @property
    def gap(self) -> float:
        """How far above the lower bound the partition may be: 0 when proven optimal."""
        return self.cycles / self.lower_cycles - 1 if self.lower_cycles else math.inf


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


def partition_searched(
    ops: Sequence[df.DfOp], target: Target, limit: int = SEARCH_LIMIT
) -> tuple[list[list[df.DfOp]], Searched]:
    """The cheapest partition the search finds within ``limit`` (``search_partition``),
    never worse than the greedy one, which stands when the search gives up."""
    greedy = partition_dataflow(ops, target)
    greedy_cycles = sum(kernel_cycles(g, target) for g in greedy)
    steps = _steps(ops)
    if limit <= 0 or len(steps) < 2:
        lower = greedy_cycles if len(steps) < 2 else 0
        return greedy, Searched(greedy_cycles, greedy_cycles, "greedy (no search)", 0, lower)
    if len(steps) > SEARCH_MAX_STEPS:
        method = f"greedy (no search: {len(steps)} steps, more than {SEARCH_MAX_STEPS})"
        return greedy, Searched(greedy_cycles, greedy_cycles, method, 0, 0)

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

    bounds = Bounds(steps, target)

    def sieve(units) -> int:  # the bound without its bytes: cheap
        return bounds.kernel(mask_of(units), hbm=False)

    def bound(units) -> int:
        return bounds.kernel(mask_of(units))

    def phase_bound(units) -> int:  # tighter, and it needs the plan
        return bounds.kernel(mask_of(units), plan(units))

    def rest(units) -> int:
        return bounds.partition(mask_of(units))

    found = search_partition(
        step_graph(steps),
        fits,
        cost,
        limit,
        (sieve, bound, phase_bound),
        incumbent=greedy_cycles,
        rest=rest,
    )
    exact = found.complete and found.method == "every partition"
    lower = found.cycles if exact else rest(tuple(range(len(steps))))
    if not found.complete or not found.groups:
        method = (
            f"greedy (as good as the search over {found.method})"
            if found.complete
            else f"greedy (search: {found.method})"
        )
        return greedy, Searched(greedy_cycles, greedy_cycles, method, found.asked, lower)
    groups = [flat(units) for units in found.groups]
    groups = [g for g in groups if not views(g)]
    log.debug("dataflow search: %d -> %d cycles", greedy_cycles, found.cycles)
    return groups, Searched(greedy_cycles, found.cycles, found.method, found.asked, lower)


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
