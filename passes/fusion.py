"""Fusion: partition the graph's compute ops into kernels.

Policies: ``none`` — every op its own kernel, the SN40L paper's *unfused*
baseline (reshapes stay outside kernels: they are views and move no data).
``epilogue`` and ``dataflow`` land with the fusion issue; asking for them now is
a clear error, not a silent fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from coec.ir import ops as df
from coec.ir.errors import ConfigError
from coec.passes.outline import outline

POLICIES = ("none",)

#: ops that never become kernels of their own: sources and views
_NOT_KERNELS = (df.WeightOp, df.ConstantOp, df.ReshapeOp, df.KernelOp)


def partition_none(fn: func.FuncOp) -> list[list[Operation]]:
    """One group per compute op, in program order."""
    return [
        [op]
        for op in fn.body.block.ops
        if isinstance(op, df.DfOp) and not isinstance(op, _NOT_KERNELS)
    ]


@dataclass(frozen=True)
class FusePass(ModulePass):
    """Wrap compute ops into ``df.kernel`` regions according to ``policy``.

    Requires: a verified df function with no kernels yet.
    Guarantees: every compute op sits inside exactly one kernel; kernels are named
    ``k0, k1, ...`` in program order.
    """

    name = "fuse"
    policy: str = "none"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(
                f"fusion policy {self.policy!r} is not available; choose from {', '.join(POLICIES)}"
            )
        for fn in op.ops:
            if not isinstance(fn, func.FuncOp):
                continue
            for i, group in enumerate(partition_none(fn)):
                outline(group, f"k{i}")
