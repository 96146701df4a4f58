"""``coec opt``: run a pass pipeline on df IR text, the mlir-opt / xdsl-opt habit.

    coec compile model.py --dump-ir=frontend > m.mlir
    coec opt m.mlir -p 'canonicalize,fuse{policy=dataflow},tile{max-tile=16},place'

The pipeline syntax is xDSL's (``name{option=value ...}``, comma-separated); the
IR is verified after every pass. Passes that take a ``target`` get ``--target``
unless the pipeline names one.
"""

from __future__ import annotations

import dataclasses

from xdsl.passes import ModulePass, PassPipeline, parse_pipeline
from xdsl.utils.exceptions import ArgSpecParseError

from coec.ir import make_context, parse_module, print_module, verify
from coec.ir.errors import ConfigError
from coec.passes.canonicalize import CanonicalizePass
from coec.passes.fusion import FusePass
from coec.passes.placement import PlacePass
from coec.passes.tiling import TilePass

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
    passes = parse_passes(spec, target) if spec.strip() else []
    module = parse_module(text, source)
    ctx = make_context()
    for p in passes:
        p.apply(ctx, module)
        verify(module)
    return print_module(module)
