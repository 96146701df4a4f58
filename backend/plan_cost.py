"""The cost model applied to a kernel's plan in the IR (shared by tiling and emission)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from xdsl.ir import SSAValue

from coec.backend.cost import (
    KernelCost,
    Work,
    collective_bytes,
    collective_steps,
    kernel_cost,
    op_work,
    tile_shape,
    tile_sizes,
)
from coec.backend.plan import KernelPlan, Layout, tile_bytes
from coec.backend.target import Target
from coec.ir import ops as df


def phase_works(plan: KernelPlan) -> list[list[dict[Work, int]]]:
    """Per phase, per op: the work of each tile shape and how many tiles have it."""
    phases: list[list[dict[Work, int]]] = [[] for _ in plan.extents]
    for op in plan.ops:
        s = plan.streams[op]
        works: dict[Work, int] = defaultdict(int)
        for size, count in tile_sizes(plan.extents[s.phase], plan.tile(s.phase)).items():
            works[tile_work(op, s.in_axes, s.out_axis, size)] += count
        phases[s.phase].append(dict(works))
    return phases


def tile_work(op: df.DfOp, in_axes: Sequence[int | None], out_axis: int | None, size: int) -> Work:
    """The work of one tile of ``size`` along the op's stream axes (once per op and shape)."""

    def work() -> Work:
        ins = [
            tile_shape(df.tensor_type(v).shape_tuple, a, size)
            for v, a in zip(op.operands, in_axes, strict=True)
        ]
        out = tile_shape(df.tensor_type(op.results[0]).shape_tuple, out_axis, size)
        return op_work(op.name.removeprefix("df."), op.props(), ins, out)

    return op.memo(("tile_work", tuple(in_axes), out_axis, size), work)


def traffic(
    plan: KernelPlan, lay: Layout, tier_of: Callable[[SSAValue], str], sockets: int = 1
) -> dict[str, int]:
    """Bytes per tier pair the kernel's DMAs move (weights streamed once per tile), and
    what its collectives (all-reduce, all-gather) send to peer sockets."""
    pairs: dict[str, int] = defaultdict(int)
    for ld in lay.loads:
        pairs[f"{tier_of(ld.value)}->sram"] += df.tensor_type(ld.value).nbytes
    for op, arg in lay.b_streams.items():
        pairs[f"{tier_of(arg)}->sram"] += df.tensor_type(arg).nbytes * plan.ntiles(
            plan.streams[op].phase
        )
    for op, table in lay.gathers.items():  # the rows looked up, not the table
        pairs[f"{tier_of(table)}->sram"] += df.tensor_type(op.results[0]).nbytes
    for st in lay.stores:
        pairs[f"sram->{tier_of(st.result)}"] += st.nbytes
    for op in plan.ops:
        if isinstance(op, df.AllReduceOp | df.AllGatherOp) and sockets > 1:
            s = plan.streams[op]
            t = df.tensor_type(op.results[0])
            kind = op.name.removeprefix("df.")
            for size, count in tile_sizes(plan.extents[s.phase], plan.tile(s.phase)).items():
                tile = t.nbytes if s.out_axis is None else tile_bytes(t, s.out_axis, size)
                pairs["sram->p2p"] += collective_bytes(kind, tile, sockets) * count
    return dict(sorted(pairs.items()))


def ring_steps(plan: KernelPlan, sockets: int) -> int:
    """Ring steps of the kernel's collectives: each tile's collective is one ring."""
    steps = 0
    for op in plan.ops:
        if isinstance(op, df.AllReduceOp | df.AllGatherOp) and sockets > 1:
            s = plan.streams[op]
            tiles = sum(tile_sizes(plan.extents[s.phase], plan.tile(s.phase)).values())
            steps += collective_steps(op.name.removeprefix("df."), sockets) * tiles
    return steps


def estimate(
    plan: KernelPlan, lay: Layout, target: Target, tier_of: Callable[[SSAValue], str]
) -> tuple[KernelCost, dict[str, int], int]:
    """The kernel's cost, its bytes per tier pair, and its FLOPs."""
    pairs = traffic(plan, lay, tier_of, target.sockets)
    works = phase_works(plan)
    flops = sum(w.total * n for phase in works for op in phase for w, n in op.items())
    steps = ring_steps(plan, target.sockets)
    return kernel_cost(target, works, pairs, steps), pairs, flops
