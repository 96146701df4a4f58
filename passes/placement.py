"""Placement (memory planning): a tier and an offset for every buffer.

- Values inside kernels live in SRAM (the tiling pass sized them).
- Model inputs, weights and kernel-boundary activations go to HBM; buffers whose
  lifetimes (in kernel steps) do not overlap share addresses — a static
  first-fit plan, largest buffers first, no allocation at run time.
- When HBM cannot hold the plan, buffers move to DDR, those with the smallest
  bandwidth need first (the SN40L paper's rule): need = bytes the schedule moves
  to or from the buffer per byte it occupies (ties: larger buffers first).
- A model that fits in neither is one CapacityError naming tier, bytes needed and
  bytes available.
- Reshapes outside kernels are views: they share their source's storage; so does a
  kernel result written in place into the input it updates (a KV-cache append).

Offsets are written into the IR as discardable attributes: ``offset`` on
``df.weight``, ``offsets`` on ``df.kernel`` (one per result) and ``arg_offsets``
on the function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import DenseArrayBase, ModuleOp, i64
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from coec.backend.plan import inplace_results, kernel_layout, read_plan
from coec.backend.target import Target, load_target
from coec.ir import ops as df
from coec.ir.errors import CapacityError
from coec.ir.types import TensorType

ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _retype(v: SSAValue, tier: str | None) -> SSAValue:
    t = v.type
    assert isinstance(t, TensorType)
    if t.tier_name == tier:
        return v
    return Rewriter.replace_value_with_new_type(v, t.with_tier(tier))


@dataclass
class Buffer:
    """One off-chip buffer: its size, lifetime in kernel steps and traffic."""

    value: SSAValue
    order: int  # program order, for deterministic ties
    nbytes: int
    first: int  # kernel index that writes it (-1: resident before the first kernel)
    last: int  # last kernel index that reads it (len(kernels): a model output)
    traffic: int = 0
    tier: str = "hbm"
    offset: int = 0

    @property
    def need(self) -> float:
        """Bandwidth need: bytes moved per byte held."""
        return self.traffic / self.nbytes if self.nbytes else 0.0


def first_fit(buffers: list[Buffer]) -> int:
    """Assign offsets (largest first, lowest free address); returns the peak address."""
    n = len(buffers)
    starts = np.zeros(n, dtype=np.int64)  # placed buffers' [start, end) and lifetimes
    ends = np.zeros(n, dtype=np.int64)
    firsts = np.zeros(n, dtype=np.int64)
    lasts = np.zeros(n, dtype=np.int64)
    peak = 0
    for i, b in enumerate(sorted(buffers, key=lambda b: (-b.nbytes, b.order))):
        alive = (lasts[:i] >= b.first) & (firsts[:i] <= b.last)
        order = np.argsort(starts[:i][alive], kind="stable")
        offset = 0
        for start, end in zip(starts[:i][alive][order], ends[:i][alive][order], strict=True):
            if offset + b.nbytes <= start:
                break
            offset = max(offset, _align(int(end)))
        b.offset = offset
        starts[i], ends[i], firsts[i], lasts[i] = offset, offset + b.nbytes, b.first, b.last
        peak = max(peak, offset + b.nbytes)
    return peak


def _collect(fn: func.FuncOp) -> list[Buffer]:
    """Every off-chip buffer of ``fn`` with its lifetime and traffic; views -> their source."""
    block = fn.body.block
    kernels = [op for op in block.ops if isinstance(op, df.KernelOp)]
    end = len(kernels)
    buffers: dict[SSAValue, Buffer] = {}
    root: dict[SSAValue, SSAValue] = {}
    order = 0

    def add(v: SSAValue, first: int, last: int) -> None:
        nonlocal order
        buffers[v] = Buffer(v, order, df.tensor_type(v).nbytes, first, last)
        order += 1

    for arg in block.args:
        add(arg, -1, end)
    kernel_index = {k: i for i, k in enumerate(kernels)}
    for op in block.ops:
        if isinstance(op, df.WeightOp):
            add(op.result, -1, end)
        elif isinstance(op, df.KernelOp):
            inplace = inplace_results(op)
            for i, r in enumerate(op.outputs):
                if i in inplace:  # written in place: a view of the input it updates
                    dest = op.inputs[inplace[i]]
                    root[r] = root.get(dest, dest)
                else:
                    add(r, kernel_index[op], kernel_index[op])
        elif isinstance(op, df.ReshapeOp):
            root[op.result] = root.get(op.input, op.input)

    def base(v: SSAValue) -> SSAValue:
        return root.get(v, v)

    for k in kernels:
        i = kernel_index[k]
        plan = read_plan(k)
        lay = kernel_layout(k, plan)
        streamed = {arg: plan.ntiles(plan.streams[op].phase) for op, arg in lay.b_streams.items()}
        for outer, arg in zip(k.inputs, k.block.args, strict=True):
            b = buffers[base(outer)]
            b.last = max(b.last, i)
            b.traffic += df.tensor_type(outer).nbytes * streamed.get(arg, 1)
        for r in k.outputs:
            b = buffers[base(r)]
            b.last = max(b.last, i)
            b.traffic += df.tensor_type(r).nbytes
    for v in block.last_op.operands:
        buffers[base(v)].last = end
    return list(buffers.values()), root


def plan_memory(fn: func.FuncOp, target: Target) -> tuple[list[Buffer], dict]:
    """Tiers and offsets for ``fn``'s buffers (HBM first, DDR for the least-needed), and
    the views: value -> the value whose storage it shares."""
    buffers, views = _collect(fn)
    hbm_cap = target.memory["hbm"].capacity_bytes
    ddr_cap = target.memory["ddr"].capacity_bytes
    spill_order = sorted(buffers, key=lambda b: (b.need, -b.nbytes, b.order))
    # live bytes per kernel step: a lower bound on any plan's peak, cheap to update
    steps = max((b.last for b in buffers), default=0) + 2
    live = np.zeros(steps, dtype=np.int64)
    for b in buffers:
        live[b.first + 1 : b.last + 2] += b.nbytes
    in_hbm, spilled = list(buffers), []

    def spill() -> None:
        victim = spill_order.pop(0)
        victim.tier = "ddr"
        in_hbm.remove(victim)
        spilled.append(victim)
        live[victim.first + 1 : victim.last + 2] -= victim.nbytes

    while spill_order and live.max() > hbm_cap:
        spill()
    while first_fit(in_hbm) > hbm_cap and spill_order:  # offsets stay from the last fit
        spill()
    ddr_peak = first_fit(spilled)
    if ddr_peak > ddr_cap:
        raise CapacityError(
            "ddr", ddr_peak, ddr_cap, f"what does not fit in HBM ({hbm_cap:,} bytes)"
        )
    return buffers, views


@dataclass(frozen=True)
class PlacePass(ModulePass):
    """Assign tiers (in the types) and offsets (as attributes) to every buffer.

    Requires: tiled IR. Guarantees: every tensor type has a tier; off-chip buffers
    alive at the same kernel step never overlap in address; each tier's plan fits.
    """

    name = "place"
    requires = "tiled"
    target: str | Target = "sn40l"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        self.apply_target(op, load_target(self.target))

    @staticmethod
    def apply_target(module: ModuleOp, target: Target) -> None:
        for fn in module.ops:
            if isinstance(fn, func.FuncOp):
                _place_function(fn, target)


def _place_function(fn: func.FuncOp, target: Target) -> None:
    buffers, views = plan_memory(fn, target)
    where = {b.value: b for b in buffers}
    where.update({v: where[r] for v, r in views.items()})
    block = fn.body.block
    arg_offsets = []
    for arg in list(block.args):
        b = where[arg]
        _retype(arg, b.tier)
        arg_offsets.append(b.offset)
    fn.attributes["arg_offsets"] = DenseArrayBase.from_list(i64, arg_offsets)
    for op in list(block.ops):
        if isinstance(op, df.WeightOp):
            b = where[op.result]
            op.attributes["offset"] = DenseArrayBase.from_list(i64, [b.offset])
            _retype(op.result, b.tier)
        elif isinstance(op, df.KernelOp):
            for arg in list(op.block.args):
                _retype(arg, "sram")
            for inner in op.compute_ops():
                for r in list(inner.results):
                    _retype(r, "sram")
            offsets = []
            for r in list(op.outputs):
                b = where[r]
                offsets.append(b.offset)
                _retype(r, b.tier)
            op.attributes["offsets"] = DenseArrayBase.from_list(i64, offsets)
        elif isinstance(op, df.ReshapeOp):
            _retype(op.result, op.input.type.tier_name)
        elif isinstance(op, df.ConstantOp):
            _retype(op.result, "sram")
    ret = block.last_op
    fn.function_type = func.FunctionType.from_lists(
        [a.type for a in block.args], [v.type for v in ret.operands]
    )
