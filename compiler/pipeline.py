"""The compile pipeline: one ``Options`` value, one ordered list of xDSL passes.

    frontend (torch.export or ONNX import -> df IR) -> fuse -> tile -> place -> emit schedule

``Pipeline(options)`` builds the passes from the options (``passes``), names its dump
points after them (``stages``: ``frontend``, ``after-fuse``, ...) and runs them,
verifying the IR after every pass. ``coec.compile``, zoo (regional) compilation, the
``torch.compile`` backend and ``coec opt`` all run passes through it. Each pass states
the IR stage it needs and the one it leaves (``passes.stage``), so a pipeline written
by hand (``coec opt -p``) in an illegal order is refused before it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import TYPE_CHECKING

from coec.backend.target import FUSION_POLICIES, Target, load_target
from coec.frontend.common import Program
from coec.ir.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from xdsl.dialects.builtin import ModuleOp
    from xdsl.passes import ModulePass

DTYPE_ALIASES = {"bf16": "bf16", "bfloat16": "bf16", "fp32": "f32", "f32": "f32", "float32": "f32"}
POLICIES = FUSION_POLICIES


@dataclass(frozen=True)
class Options:
    """Every option of a compile: the one value the API, the CLI and the drivers pass on.

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
    #: dataflow fusion: kernels the partition search may cost per function (None: the
    #: default, SEARCH_LIMIT; 0: the greedy partition alone)
    search_limit: int | None = None

    @classmethod
    def of(cls, options: Options | None = None, **overrides) -> Options:
        """``options`` (or the defaults) with ``overrides``; an unknown name is a ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"unknown compile option {unknown[0]!r}; options: {', '.join(sorted(known))}"
            )
        return replace(options or cls(), **overrides)

    @staticmethod
    def best_fusion(target: str | Target) -> str:
        """The strongest policy ``target`` runs (POLICIES order: none < epilogue < dataflow)."""
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
        if self.search_limit is not None and self.search_limit < 0:
            raise ConfigError(f"search limit {self.search_limit}: must be at least 0")
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

    def schedule_meta(self, target: Target) -> dict:
        """What the schedule records of these options."""
        return {"fusion": self.fusion, "dtype": self.dtype, "launch": target.launch.mode}


@dataclass
class Compiled:
    program: Program
    target: Target
    schedule: dict  # the schedule as JSON data (Schedule.to_json())
    dumps: dict[str, str] = field(default_factory=dict)


#: ``dump(stage, module)``: called at each stage with the module as it then is (a dump that
#: prints only the stages it wants costs nothing at the others)
Dump = Callable[[str, "ModuleOp"], None]


class Pipeline:
    """The passes one ``Options`` value asks for, in order, on its resolved target."""

    def __init__(self, options: Options):
        self.options = options.normalized()
        self.target = self.options.resolve_target()

    @cached_property
    def passes(self) -> tuple[ModulePass, ...]:
        from coec.passes.fusion import SEARCH_LIMIT, FusePass
        from coec.passes.placement import PlacePass
        from coec.passes.tiling import TilePass

        limit = self.options.search_limit
        return (
            FusePass(
                policy=self.options.fusion,
                target=self.target,
                search_limit=SEARCH_LIMIT if limit is None else limit,
            ),
            TilePass(target=self.target, max_tile=self.options.max_tile or 0),
            PlacePass(target=self.target),
        )

    @property
    def stages(self) -> tuple[str, ...]:
        """The dump points: the frontend's IR, then the IR after each pass."""
        return ("frontend", *(f"after-{p.name}" for p in self.passes))

    def run(
        self,
        module: ModuleOp,
        dump: Dump | None = None,
        until: str | None = None,
        start: str | None = None,
    ) -> None:
        """Run the passes on ``module`` in place, verifying the IR after each.

        ``start`` / ``until`` name the first / last pass to run (``until="tile"``: the
        per-function passes regional compilation runs on each part; ``start="place"``:
        the rest). The module's stage must be what the first pass needs.
        """
        from coec.ir import verify

        names = [p.name for p in self.passes]
        first = names.index(start) if start else 0
        last = names.index(until) + 1 if until else len(names)
        verify(module)
        if dump and first == 0:
            dump("frontend", module)
        run_passes(module, self.passes[first:last], dump)

    def emit(self, module: ModuleOp, meta: dict | None = None) -> dict:
        """The schedule of placed ``module``, as JSON data."""
        from coec.backend.emit import emit_schedule

        meta = {**self.options.schedule_meta(self.target), **(meta or {})}
        return emit_schedule(module, self.target, meta).to_json()

    def compile(self, program: Program, dump_points: Sequence[str] = ()) -> Compiled:
        """Run every pass on ``program`` (in place) and emit its schedule."""
        unknown = [p for p in dump_points if p not in self.stages]
        if unknown:
            raise ConfigError(f"IR stage {unknown[0]!r}: choose from {', '.join(self.stages)}")
        from coec.ir import print_module

        dumps: dict[str, str] = {}

        def dump(stage: str, module: ModuleOp) -> None:
            if stage in dump_points:
                dumps[stage] = print_module(module)

        self.run(program.module, dump)
        return Compiled(program, self.target, self.emit(program.module), dumps)


def run_passes(module: ModuleOp, passes: Sequence[ModulePass], dump: Dump | None = None) -> None:
    """Apply ``passes`` in order, each after checking the IR is at the stage it needs."""
    from coec.ir import make_context, verify
    from coec.passes.stage import check_stage

    ctx = make_context()
    for p in passes:
        check_stage(module, p)
        p.apply(ctx, module)
        verify(module)
        if dump:
            dump(f"after-{p.name}", module)


def stage_names() -> tuple[str, ...]:
    """The dump points of every pipeline (the same passes whatever the options)."""
    return Pipeline(Options()).stages


def compile_lowered(
    program: Program, options: Options, dump_points: Sequence[str] = (), copy: bool = True
) -> Compiled:
    """Run the pipeline and emit the schedule for a lowered program (unchanged if ``copy``)."""
    if copy:
        program = replace(program, module=program.module.clone())
    return Pipeline(options).compile(program, dump_points)


def compile_program(
    module: torch.nn.Module,
    example_inputs: tuple,
    options: Options,
    dump_points: Sequence[str] = (),
) -> Compiled:
    """torch.export, lower to df IR, run the passes, emit the schedule."""
    from coec.frontend.export import export_module
    from coec.frontend.lower import lower_program

    options = _one_socket(options.normalized())
    program = lower_program(export_module(module, example_inputs), options.dtype)
    return compile_lowered(program, options, dump_points, copy=False)


def compile_onnx_model(
    model,
    options: Options,
    dump_points: Sequence[str] = (),
    input_shapes: dict | None = None,
    source: str = "<onnx>",
    constants: dict | None = None,
) -> Compiled:
    """Import an ONNX ``ModelProto`` into df IR, run the passes, emit the schedule."""
    from coec.frontend.onnx_import import import_onnx

    options = _one_socket(options.normalized())
    program = import_onnx(model, options.dtype, input_shapes, source, constants)
    return compile_lowered(program, options, dump_points, copy=False)


def _one_socket(options: Options) -> Options:
    if options.resolve_target().sockets > 1:
        raise ConfigError(
            "tensor parallelism over several sockets is built for zoo models (--zoo NAME); "
            "compile a model file for one socket (--target sn40l, or --sockets 1)"
        )
    return options
