"""The compile pipeline as an explicit ordered list of stages.

frontend (torch.export or ONNX import -> df IR) -> fuse -> place -> emit schedule.
Each stage can be dumped (``--dump-ir=after-fuse``); the IR is verified after
every pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from xdsl.dialects.builtin import ModuleOp

from coec.backend.emit import emit_schedule
from coec.backend.target import Target, load_target
from coec.frontend.export import export_module
from coec.frontend.lower import Program, lower_program
from coec.ir import print_module, verify
from coec.ir.errors import ConfigError
from coec.passes.fusion import POLICIES, FusePass
from coec.passes.placement import PlacePass
from coec.passes.tiling import TilePass

DTYPE_ALIASES = {"bf16": "bf16", "bfloat16": "bf16", "fp32": "f32", "f32": "f32", "float32": "f32"}


@dataclass(frozen=True)
class Options:
    """How to compile: the target and the choices made for it.

    ``fusion`` None is the best policy the target runs (``best_fusion``): dataflow on an
    RDU, epilogue on a GPU; ``normalized()`` resolves it, so a normalized ``Options``
    always names its policy. ``"none"`` is the unfused baseline, asked for explicitly.
    """

    target: str | Target = "sn40l"
    fusion: str | None = None  # None: the best the target runs
    dtype: str = "bf16"
    launch: str | None = None  # None: the target's own setting
    max_tile: int | None = None  # cap on tile sizes (None: the tiling pass chooses freely)
    sockets: int | None = None  # None: the target's own count

    @staticmethod
    def best_fusion(target: str | Target) -> str:
        """The most aggressive policy ``target`` runs (POLICIES order: none < epilogue < dataflow)."""
        return max(load_target(target).fusion_policies, key=POLICIES.index)

    def normalized(self) -> Options:
        if self.dtype not in DTYPE_ALIASES:
            raise ConfigError(f"dtype {self.dtype!r}: choose bf16 or fp32")
        if self.fusion is not None and self.fusion not in POLICIES:
            raise ConfigError(f"fusion policy {self.fusion!r}: choose from {', '.join(POLICIES)}")
        if self.max_tile is not None and self.max_tile < 1:
            raise ConfigError(f"max tile {self.max_tile}: must be at least 1")
        if self.sockets is not None and self.sockets < 1:
            raise ConfigError(f"sockets {self.sockets}: must be at least 1")
        fusion = self.fusion if self.fusion is not None else self.best_fusion(self.target)
        return replace(self, dtype=DTYPE_ALIASES[self.dtype], fusion=fusion)

    def resolve_target(self) -> Target:
        """The target with this compile's launch mode and socket count applied."""
        target = load_target(self.target)
        if self.fusion is not None and self.fusion not in target.fusion_policies:
            raise ConfigError(
                f"target {target.name} runs fusion {', '.join(target.fusion_policies)}, "
                f"not {self.fusion!r}"
            )
        if self.launch:
            target = target.with_launch(self.launch)
        if self.sockets:
            target = replace(target, sockets=self.sockets)
        return target


@dataclass
class Compiled:
    program: Program
    target: Target
    schedule: dict
    dumps: dict[str, str] = field(default_factory=dict)


#: the pass pipeline, in order: (dump point after it, how to run it)
PIPELINE: tuple[tuple[str, Callable[[ModuleOp, Target, Options], None]], ...] = (
    ("after-fuse", lambda m, t, o: FusePass.apply_target(m, t, o.fusion)),
    ("after-tile", lambda m, t, o: TilePass.apply_target(m, t, o.max_tile)),
    ("after-place", lambda m, t, o: PlacePass.apply_target(m, t)),
)


def run_passes(
    program: Program,
    target: Target,
    options: Options,
    dump: Callable[[str, str], None] | None = None,
) -> None:
    """Run the pipeline on ``program`` in place, verifying the IR after every pass."""
    module = program.module
    verify(module)
    if dump:
        dump("frontend", print_module(module))
    for point, run in PIPELINE:
        run(module, target, options)
        verify(module)
        if dump:
            dump(point, print_module(module))


def compile_lowered(
    program: Program, options: Options, dump_points: tuple[str, ...] = (), copy: bool = True
) -> Compiled:
    """Run the passes and emit the schedule for a lowered program (unchanged if ``copy``)."""
    options = options.normalized()
    target = options.resolve_target()
    if copy:
        program = replace(program, module=program.module.clone())
    dumps: dict[str, str] = {}

    def dump(point: str, text: str) -> None:
        if point in dump_points:
            dumps[point] = text

    run_passes(program, target, options, dump)
    schedule = emit_schedule(
        program.module,
        target,
        {"fusion": options.fusion, "dtype": options.dtype, "launch": target.launch.mode},
    )
    return Compiled(program, target, schedule, dumps)


def compile_program(
    module: torch.nn.Module,
    example_inputs: tuple,
    options: Options,
    dump_points: tuple[str, ...] = (),
) -> Compiled:
    """torch.export, lower to df IR, run the passes, emit the schedule."""
    options = _one_socket(options.normalized())
    program = lower_program(export_module(module, example_inputs), options.dtype)
    return compile_lowered(program, options, dump_points, copy=False)


def compile_onnx_model(
    model,
    options: Options,
    dump_points: tuple[str, ...] = (),
    input_shapes: dict | None = None,
    source: str = "<onnx>",
) -> Compiled:
    """Import an ONNX ``ModelProto`` into df IR, run the passes, emit the schedule."""
    from coec.frontend.onnx_import import import_onnx

    options = _one_socket(options.normalized())
    program = import_onnx(model, options.dtype, input_shapes, source)
    return compile_lowered(program, options, dump_points, copy=False)


def _one_socket(options: Options) -> Options:
    if options.resolve_target().sockets > 1:
        raise ConfigError(
            "tensor parallelism over several sockets is built for zoo models (--zoo NAME); "
            "compile a model file for one socket (--target sn40l, or --sockets 1)"
        )
    return options
