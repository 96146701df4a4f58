"""Which stage of the pipeline a df module is at, and the check each pass makes of it.

The stages, in order: ``frontend`` (no kernels), ``fused`` (kernels without tiles),
``tiled`` (every kernel has its plan), ``placed`` (every buffer has a tier and an
offset). A pass names the stage it needs as ``requires``; :func:`check_stage` refuses
to run it on any other, so a hand-written pipeline in the wrong order is one clear
error instead of an internal failure halfway through.
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from coec.ir import ops as df
from coec.ir.errors import ConfigError

STAGES = ("frontend", "fused", "tiled", "placed")
#: the pass that takes a module from each stage to the next
NEXT_PASS = {"frontend": "fuse", "fused": "tile", "tiled": "place"}


def ir_stage(module: ModuleOp) -> str | None:
    """The module's stage, or ``None`` for one with nothing to compute (any pass may run)."""
    fns = [op for op in module.ops if isinstance(op, func.FuncOp)]
    if fns and all("arg_offsets" in fn.attributes for fn in fns):
        return "placed"
    kernels = [op for op in module.walk() if isinstance(op, df.KernelOp)]
    if kernels:
        return "tiled" if all("extents" in k.attributes for k in kernels) else "fused"
    computes = [
        op
        for fn in fns
        for op in fn.body.block.ops
        if isinstance(op, df.DfOp)
        and not isinstance(op, df.WeightOp | df.ConstantOp | df.ReshapeOp)
    ]
    return "frontend" if computes else None


def check_stage(module: ModuleOp, p: ModulePass) -> None:
    """Refuse to run ``p`` on a module that is not at the stage it requires."""
    needs = getattr(p, "requires", None)
    stage = ir_stage(module)
    if needs is None or stage is None or stage == needs:
        return
    have, want = STAGES.index(stage), STAGES.index(needs)
    if have < want:
        missing = ",".join(NEXT_PASS[s] for s in STAGES[have:want])
        fix = f"run '{missing}' before '{p.name}'"
    else:
        fix = f"'{p.name}' has already run on it"
    raise ConfigError(f"pass '{p.name}' needs {needs} IR but this IR is {stage}: {fix}")
