"""``coec explain``: why each kernel boundary of a dataflow partition is where it is.

For every pair of kernels that follow each other, fusing them is tried as the
partitioner would: either the chip cannot hold the two as one kernel (the stages need
more PCUs than there are, the buffers more SRAM or PMUs — named with the bytes needed
and available), or it can and the cost model says two kernels are faster (by how much,
and which term of the fused kernel grows), or fusing the pair alone would pay but the
partition as a whole is cheaper as it is (the search weighed every partition). The ops
on either side are named by the user's module path and source line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from xdsl.dialects import func

from coec.backend.cost import KernelCost
from coec.backend.plan import layout, plan_streams
from coec.backend.plan_cost import estimate
from coec.backend.target import Target
from coec.frontend.common import Program
from coec.ir import ops as df
from coec.passes.fusion import (
    can_fuse_dataflow,
    compute_ops,
    group_boundary,
    kernel_cycles,
    partition_searched,
)
from coec.passes.tiling import choose_tiles


@dataclass(frozen=True)
class Boundary:
    """One kernel boundary: the ops on each side, why it is there, what would fuse it."""

    before: str  # the last op of the kernel before (its value, module and source line)
    after: str  # the first op of the kernel after
    why: str
    change: str
    cause: str  # "pcus", "sram", "pmus", "faster apart", "partition"


@dataclass(frozen=True)
class Explanation:
    part: str
    target: str
    launch: str
    kernels: list[list[str]]  # each kernel's ops (their values)
    boundaries: list[Boundary]
    search: str  # how far the partition is exact
    cycles: int
    greedy_cycles: int  # the greedy partition's, which the search started from
    lower_cycles: int  # a lower bound on every partition (= cycles when proven optimal)
    costed: int  # kernels the search costed

    def to_json(self) -> dict:
        return asdict(self)


def _where(op: df.DfOp, origins: dict) -> str:
    name = op.results[0].name_hint or op.name
    at = origins.get(op)
    return f"{op.name.removeprefix('df.')} {name}" + (f" ({at})" if at else "")


def _mib(n: int) -> str:
    """Bytes in the unit that reads best: B, KiB or MiB."""
    if n < 2**10:
        return f"{n:,} B"
    if n < 2**20:
        return f"{n / 2**10:,.1f} KiB"
    return f"{n / 2**20:,.1f} MiB"


def _kernel(ops: list[df.DfOp], target: Target) -> KernelCost:
    """The cost of ``ops`` as one kernel at its best tiles (``kernel_cycles``, with its terms)."""
    boundary = group_boundary(ops)
    plan, _ = choose_tiles(boundary, plan_streams(list(ops)), target)
    cost, _, _ = estimate(plan, layout(*boundary, plan), target, lambda _: "hbm")
    return cost


def explain_boundary(a: list[df.DfOp], b: list[df.DfOp], target: Target, origins) -> Boundary:
    """Why kernels ``a`` and ``b`` (``b`` right after ``a``) are two, not one."""
    before, after = _where(a[-1], origins), _where(b[0], origins)
    merged = sorted(a + b, key=_order(a + b))
    verdict = can_fuse_dataflow(merged, target)
    if not verdict.ok:
        short = verdict.need - verdict.have
        if verdict.resource == "sram":
            change = (
                f"+{_mib(short)} of SRAM ({_mib(verdict.need)} needed, {_mib(verdict.have)} there)"
            )
        elif verdict.resource == "pcus":
            change = f"+{short:,} PCUs ({verdict.need:,} stages, {verdict.have:,} PCUs)"
        else:
            change = f"+{short:,} PMUs"
        return Boundary(before, after, f"one kernel {verdict.why}", change, verdict.resource)
    clock = target.compute.clock_hz
    one = _kernel(merged, target)
    fused, term = one.cycles, one.bound
    apart = kernel_cycles(a, target) + kernel_cycles(b, target)
    if fused > apart:
        return Boundary(
            before,
            after,
            f"splitting is faster by {(fused - apart) / clock * 1e6:,.2f} µs "
            f"(one kernel {fused / clock * 1e6:,.2f} µs, two {apart / clock * 1e6:,.2f} µs)",
            f"the fused kernel is {term}-bound: {fused - apart:,} fewer cycles of {term} "
            "would fuse it",
            "faster apart",
        )
    return Boundary(
        before,
        after,
        f"fusing these two alone saves {(apart - fused) / clock * 1e6:,.2f} µs, but the "
        "partition as a whole is cheaper with the cut here",
        "none: it is the cheapest partition the search found",
        "partition",
    )


def _order(ops: list[df.DfOp]):
    block = ops[0].parent_block()
    index = {op: i for i, op in enumerate(block.ops)} if block else {}
    return lambda op: index.get(op, 0)


def explain_program(
    program: Program, target: Target, part: str = "model", search_limit: int | None = None
) -> Explanation:
    """The dataflow partition of ``program``'s function, and why each boundary is there."""
    from coec.passes.fusion import SEARCH_LIMIT

    fn = next(op for op in program.module.ops if isinstance(op, func.FuncOp))
    ops = compute_ops(fn)
    limit = SEARCH_LIMIT if search_limit is None else search_limit
    groups, searched = partition_searched(ops, target, limit)
    order = _order(ops)
    groups = sorted((sorted(g, key=order) for g in groups), key=lambda g: order(g[0]))
    cuts = [
        explain_boundary(a, b, target, program.origins)
        for a, b in zip(groups, groups[1:], strict=False)
    ]
    return Explanation(
        part,
        target.name,
        target.launch.mode,
        [[op.results[0].name_hint or op.name for op in g] for g in groups],
        cuts,
        searched.method,
        searched.cycles,
        searched.greedy_cycles,
        searched.lower_cycles,
        searched.asked,
    )


def render(explanations: list[Explanation], clock_hz: float) -> list[str]:
    """The explanations as text lines."""
    lines = []

    def us(cycles: int) -> str:
        return f"{cycles / clock_hz * 1e6:,.2f} µs"

    for e in explanations:
        lines.append(
            f"{e.part}: {len(e.kernels)} kernel(s), {us(e.cycles)} on "
            f"{e.target} ({e.launch} launch); partition: {e.search}"
        )
        if e.costed:
            proof = (
                "optimal on the cost model"
                if e.lower_cycles == e.cycles
                else f"every partition takes at least {us(e.lower_cycles)}"
            )
            lines.append(
                f"  searched: {e.costed:,} kernel{'' if e.costed == 1 else 's'} costed; greedy {us(e.greedy_cycles)}; {proof}"
            )
        for i, cut in enumerate(e.boundaries):
            lines.append(f"  k{i} | k{i + 1}  after {cut.before}")
            lines.append(f"          before {cut.after}")
            lines.append(f"          why: {cut.why}")
            lines.append(f"          to fuse: {cut.change}")
        if not e.boundaries:
            lines.append("  one kernel: nothing to explain")
    return lines
