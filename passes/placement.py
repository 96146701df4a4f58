"""Placement: give every buffer a memory tier and an offset.

Simple policy (the spine's): values inside kernels live in SRAM; model inputs,
weights and kernel results live in HBM, bumped one after another; once HBM is
full the rest spills to DDR. A model that fits in neither is one CapacityError.
Reshapes outside kernels are views: they share their source's tier and storage.

Offsets are written into the IR as discardable attributes: ``offset`` on
``df.weight``, ``offsets`` on ``df.kernel`` (one per result) and ``arg_offsets``
on the function.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import DenseArrayBase, ModuleOp, i64
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

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


class _Bump:
    """HBM first, DDR when HBM is full; offsets aligned to 64 bytes."""

    def __init__(self, target: Target):
        self.cap = {t: target.memory[t].capacity_bytes for t in ("hbm", "ddr")}
        self.top = {"hbm": 0, "ddr": 0}
        self.spilled = 0

    def place(self, nbytes: int) -> tuple[str, int]:
        for tier in ("hbm", "ddr"):
            if self.top[tier] + nbytes <= self.cap[tier]:
                offset = self.top[tier]
                self.top[tier] = _align(offset + nbytes)
                return tier, offset
            self.spilled += nbytes
        needed = self.top["hbm"] + self.top["ddr"] + nbytes
        raise CapacityError(
            "hbm+ddr", needed, self.cap["hbm"] + self.cap["ddr"], "the model's buffers"
        )


@dataclass(frozen=True)
class PlacePass(ModulePass):
    """Assign tiers (in the types) and offsets (as attributes) to every buffer.

    Requires: fused IR (kernels formed). Guarantees: every tensor type has a tier.
    """

    name = "place"
    target: str = "sn40l"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        self.apply_target(op, load_target(self.target))

    @staticmethod
    def apply_target(module: ModuleOp, target: Target) -> None:
        for fn in module.ops:
            if isinstance(fn, func.FuncOp):
                _place_function(fn, target)


def _place_function(fn: func.FuncOp, target: Target) -> None:
    bump = _Bump(target)
    block = fn.body.block
    arg_offsets = []
    for arg in list(block.args):
        tier, offset = bump.place(arg.type.nbytes)
        _retype(arg, tier)
        arg_offsets.append(offset)
    fn.attributes["arg_offsets"] = DenseArrayBase.from_list(i64, arg_offsets)
    for op in list(block.ops):
        if isinstance(op, df.WeightOp):
            tier, offset = bump.place(op.out_type.nbytes)
            _retype(op.result, tier)
            op.attributes["offset"] = DenseArrayBase.from_list(i64, [offset])
        elif isinstance(op, df.KernelOp):
            for arg in list(op.block.args):
                _retype(arg, "sram")
            for inner in op.compute_ops():
                for r in list(inner.results):
                    _retype(r, "sram")
            offsets = []
            for r in list(op.outputs):
                tier, offset = bump.place(r.type.nbytes)
                _retype(r, tier)
                offsets.append(offset)
            op.attributes["offsets"] = DenseArrayBase.from_list(i64, offsets)
        elif isinstance(op, df.ReshapeOp):
            _retype(op.result, op.input.type.tier_name)
        elif isinstance(op, df.ConstantOp):
            _retype(op.result, "sram")
    ret = block.last_op
    fn.function_type = func.FunctionType.from_lists(
        [a.type for a in block.args], [v.type for v in ret.operands]
    )
