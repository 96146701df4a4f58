"""``coec opt``: run a pass pipeline on df IR text, the mlir-opt / xdsl-opt habit.

    coec compile model.py --dump-ir=frontend > m.mlir
    coec opt m.mlir -p 'canonicalize,fuse{policy=dataflow},tile{max-tile=16},place'

The pipeline syntax is xDSL's (``name{option=value ...}``, comma-separated); the
IR is verified after every pass, and each pass first checks the IR is at the stage
it needs (``passes.stage``), so ``-p place`` on frontend IR is one clear error.
Passes that take a ``target`` get ``--target`` unless the pipeline names one.
Placed IR becomes an executable schedule with :func:`schedule_of` (``coec opt
--emit schedule``, or ``coec compile placed.mlir``).
"""

from __future__ import annotations

import dataclasses

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline, parse_pipeline
from xdsl.utils.exceptions import ArgSpecParseError

from coec.frontend.common import Program
from coec.ir import parse_module, print_module, verify
from coec.ir.errors import ConfigError
from coec.passes.canonicalize import CanonicalizePass
from coec.passes.fusion import FusePass
from coec.passes.placement import PlacePass
from coec.passes.stage import NEXT_PASS, ir_stage
from coec.passes.tiling import TilePass
from coec.pipeline import Compiled, Options, Pipeline, run_passes

#: the passes ``coec opt`` knows, by their pipeline names
PASSES: dict[str, type[ModulePass]] = {
    p.name: p for p in (CanonicalizePass, FusePass, TilePass, PlacePass)
}


def parse_passes(spec: str, target: str = "sn40l") -> list[ModulePass]:
    """The passes of a pipeline spec; one ConfigError for an unknown pass or option."""
    try:
        specs = list(parse_pipeline(spec))
        passes = list(
            PassPipeline.parse_spec(
                {name: (lambda p=p: p) for name, p in PASSES.items()}, spec
            ).passes
        )
    except (Exception, ArgSpecParseError) as e:  # xDSL's parse error is a BaseException
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        message = (lines[-1] if isinstance(e, ArgSpecParseError) else lines[0]) if lines else ""
        raise ConfigError(f"pass pipeline {spec!r}: {message} (passes: {', '.join(PASSES)})") from e
    out = []
    for p, s in zip(passes, specs, strict=True):
        given = {k.replace("-", "_") for k in s.parameters}
        if "target" in {f.name for f in dataclasses.fields(p)} and "target" not in given:
            p = dataclasses.replace(p, target=target)
        out.append(p)
    return out


def run_opt(text: str, spec: str, target: str = "sn40l", source: str = "<ir>") -> str:
    """Parse ``text``, run the pipeline ``spec`` on it, return the printed result."""
    return print_module(run_opt_module(text, spec, target, source))


def run_opt_module(text: str, spec: str, target: str = "sn40l", source: str = "<ir>") -> ModuleOp:
    """Parse ``text`` and run the pipeline ``spec`` on it; returns the module."""
    passes = parse_passes(spec, target) if spec.strip() else []
    module = parse_module(text, source)
    verify(module)
    run_passes(module, passes)
    return module


def compile_ir(text: str, options: Options, source: str = "<ir>") -> Compiled:
    """df IR text at any stage -> the rest of the pipeline -> an executable schedule.

    ``options``' passes run from the stage the IR is at (frontend IR is fused, tiled and
    placed; placed IR is only emitted), so ``coec opt`` output becomes a schedule and the
    text IR round-trips. Text carries no weights: the result runs count-only.
    """
    pipeline = Pipeline(options)
    module = parse_module(text, source)
    stage = ir_stage(module)
    if stage == "placed":
        verify(module)
    else:  # verifies the module first
        pipeline.run(module, start=NEXT_PASS[stage] if stage else pipeline.passes[0].name)
    fn = next(op for op in module.ops if isinstance(op, func.FuncOp))
    names = [a.name_hint or f"arg{i}" for i, a in enumerate(fn.body.block.args)]
    program = Program(module, {}, names, pipeline.options.dtype, source=source)
    return Compiled(program, pipeline.target, pipeline.emit(module))
