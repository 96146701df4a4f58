"""The ``coec`` command line.

Every coec error becomes one line on stderr and a non-zero exit code (set
``COEC_TRACEBACK=1`` to see the Python traceback instead).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console

from coec.backend.target import FUSION_POLICIES, LAUNCH_MODES
from coec.ir.errors import CoecError, ConfigError


def _dump_stages() -> tuple[str, ...]:
    """--dump-ir's stage names: the pipeline's (``frontend``, ``after-<pass>``...)."""
    from coec.pipeline import stage_names

    return stage_names()


def _console() -> Console:
    # Off a terminal rich assumes 80 columns; a report piped to a file should not be cut.
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _show(parts) -> None:
    """Print what the report code rendered (rich tables and lines), in order."""
    console = _console()
    for part in parts:
        console.print(part)


def _echo_json(data) -> None:
    import json

    click.echo(json.dumps(data, indent=1))


def _given(ctx: click.Context, *names: str) -> list[str]:
    """Of the parameters ``names``, those the user gave (on the command line or by env)."""
    return [
        n
        for n in names
        if ctx.get_parameter_source(n)
        not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
    ]


def _flag(ctx: click.Context, name: str) -> str:
    """A parameter's option as the user knows it (its long form)."""
    param = next(p for p in ctx.command.params if p.name == name)
    return max(param.opts, key=len)


def _refuse(ctx: click.Context, names: tuple[str, ...], why: str) -> None:
    """An option given where it does not apply is a one-line ConfigError, not ignored."""
    given = _given(ctx, *names)
    if given:
        raise ConfigError(f"{_flag(ctx, given[0])} {why}")


def _fusion_option(what: str = "Fusion policy."):
    """``--fusion``, the same choice on every command; None: ``Options`` picks the target's best."""
    return click.option(
        "--fusion",
        type=click.Choice(FUSION_POLICIES),
        default=None,
        help=what + " Default: the best the target runs (dataflow on an RDU, epilogue on a GPU).",
    )


def _fail(message: str, code: int) -> None:
    click.echo(f"coec: error: {message}", err=True)
    sys.exit(code)


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _progress_bar(quiet: bool, *more):
    """A rich progress bar on stderr: shown only on a terminal and without --quiet
    (``more``: further columns, e.g. the time left)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    show = not quiet and _stderr_is_terminal()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        *more,
        console=Console(stderr=True, force_terminal=show or None),
        disable=not show,
        transient=True,
    )


def _write_trace(path: Path, report: dict, schedule: dict) -> None:
    from coec.backend.schedule import write_files_atomic
    from coec.report.trace import schedule_trace

    write_files_atomic({path: schedule_trace(report, schedule)})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="coec")
def cli() -> None:
    """coec — compile PyTorch models for a modeled SN40L-style RDU and run them."""


#: options compile and explain share (one definition, the same help)
_PHASE = click.option(
    "--phase",
    type=click.Choice(["prefill", "decode"]),
    default="prefill",
    show_default=True,
    help="Zoo models: prompt prefill or one decode step.",
)
_SEQ = click.option(
    "--seq",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Zoo models: prompt length, or KV-cache length in decode.",
)
_BATCH = click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Zoo models: sequences per batch.",
)
_ENTRY = click.option(
    "--entry",
    metavar="NAME",
    help="MODEL.py: a function returning (module, example_inputs) instead of model() and "
    "example_inputs().",
)
_DTYPE = click.option(
    "--dtype",
    type=click.Choice(["bf16", "fp32"]),
    default="bf16",
    show_default=True,
    help="Storage dtype bytes are counted in.",
)
_LAUNCH = click.option(
    "--launch",
    type=click.Choice(list(LAUNCH_MODES)),
    default=None,
    help="Kernel launch: software (host, serial), hardware (on-chip), async (queued, GPU "
    "streams), graph (queued, CUDA Graphs). Default: the target's.",
)
_SLO_TTFT = click.option(
    "--slo-ttft",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="p99 time-to-first-token target, s, for goodput and capacity (MLPerf Llama-2-70B "
    "server's).",
)
_SLO_TPOT = click.option(
    "--slo-tpot",
    type=click.FloatRange(min=0, min_open=True),
    default=0.2,
    show_default=True,
    help="p99 time-per-output-token target, s, for goodput and capacity (MLPerf Llama-2-70B "
    "server's).",
)
_SEARCH_LIMIT = click.option(
    "--search-limit",
    type=click.IntRange(min=0),
    default=None,
    help="Dataflow fusion: kernels the partition search may cost per function "
    "(0: the greedy partition alone; the zoo's decoder layers are searched exactly within "
    "the default). Default: 2000.",
)


@cli.command("compile")
@click.argument("model_file", metavar="MODEL.py|MODEL.onnx|IR.mlir", required=False)
@click.option(
    "--zoo", metavar="NAME", help="Compile a zoo model by name instead of MODEL.py (see coec zoo)."
)
@click.option(
    "--hf-config",
    "hf_config",
    metavar="PATH",
    type=click.Path(path_type=Path),
    help="Compile a transformers model from its config.json (or a model folder holding one; "
    "never the network), each kind of layer once.",
)
@_PHASE
@_SEQ
@_BATCH
@click.option(
    "--layers",
    type=click.IntRange(min=1),
    default=None,
    help="Zoo models and HF configs: override the number of decoder layers.",
)
@_ENTRY
@click.option(
    "--inputs",
    "inputs_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="ONNX models: input data (.npz or .safetensors, keyed by input name); default random.",
)
@click.option(
    "--target",
    default="sn40l",
    show_default=True,
    help="Built-in target name or a target .toml file.",
)
@_fusion_option("Fusion policy (none: the unfused baseline).")
@click.option(
    "--sockets",
    type=click.IntRange(min=1),
    default=None,
    help="Sockets to shard over (tensor parallelism; zoo models; a model file compiles for 1). "
    "Default: the target's.",
)
@_DTYPE
@_LAUNCH
@click.option(
    "--max-tile",
    type=click.IntRange(min=1),
    default=None,
    help="Cap tile sizes (default: chosen by modeled cost).",
)
@_SEARCH_LIMIT
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the schedule JSON here (weights and inputs beside it).",
)
@click.option(
    "--run",
    "execute",
    is_flag=True,
    help="Execute with data on the NumPy runtime; compare with PyTorch eager (onnxruntime for ONNX).",
)
@click.option(
    "--count-only",
    is_flag=True,
    help="Walk the schedule without data (the default when --run is not given).",
)
@click.option(
    "--emulate-bf16",
    is_flag=True,
    help="Round every stored value through bf16 when running (MODEL.py/.onnx with --run).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the report as JSON: what it describes (format coec.report/1), then the figures.",
)
@click.option(
    "--dump-ir",
    "dump_ir",
    is_flag=False,
    flag_value="after-place",
    default=None,
    metavar="[STAGE]",
    help="Print the df IR at STAGE: frontend, after-fuse, after-tile, after-place (default), or all.",
)
@click.option(
    "--all-kernels", is_flag=True, help="List every kernel in the report table (not with --json)."
)
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a Chrome/Perfetto trace of the schedule here (ui.perfetto.dev).",
)
@click.option("--quiet", is_flag=True, help="No progress bar (zoo models show one on a terminal).")
@click.pass_context
def compile_cmd(
    ctx,
    model_file,
    zoo,
    hf_config,
    phase,
    seq,
    batch,
    layers,
    entry,
    inputs_file,
    target,
    fusion,
    sockets,
    dtype,
    launch,
    max_tile,
    search_limit,
    output,
    execute,
    count_only,
    emulate_bf16,
    as_json,
    dump_ir,
    all_kernels,
    trace_file,
    quiet,
):
    """Compile MODEL.py, MODEL.onnx or df IR text and report its cost.

    MODEL.py defines model() and example_inputs(); a MODEL.onnx runs on random data of
    its inputs' shapes (seed 0) unless --inputs gives data; IR.mlir (coec opt output, at
    any stage) runs the rest of the pipeline and compiles count-only. An option that does
    not apply to the model given (--phase on a MODEL.py, --entry on an ONNX model) is an
    error.
    """
    from coec.commands import compile_model_file
    from coec.report.text import describe, header, render_report, report_json

    if sum(x is not None for x in (model_file, zoo, hf_config)) != 1:
        raise ConfigError("give one of MODEL.py (or MODEL.onnx), --zoo NAME or --hf-config PATH")
    _check_compile_options(ctx, model_file, zoo, hf_config)
    points = _dump_points(dump_ir)
    from coec.pipeline import Options

    options = Options(target, fusion, dtype, launch, max_tile, sockets, search_limit)
    if zoo or hf_config:  # a zoo model or an HF config: built, compiled a layer kind at a time
        from coec.commands import compile_hf_model, compile_zoo_model

        name, compile_named = (zoo, compile_zoo_model) if zoo else (hf_config, compile_hf_model)
        with _progress_bar(quiet) as bar:
            task = bar.add_task(f"compiling {name}", total=None)
            result = compile_named(
                name,
                options,
                trace=trace_file,
                phase=phase,
                seq=seq,
                batch=batch,
                layers=layers,
                execute=execute,
                output=output,
                progress=lambda done, total, what: bar.update(
                    task, completed=done, total=total, description=what
                ),
            )
        model_file = f"{name} {phase} batch {batch} seq {seq}"
    else:
        result = compile_model_file(
            model_file,
            options,
            entry=entry,
            execute=execute,
            emulate_bf16=emulate_bf16,
            output=output,
            dump_points=points,
            inputs=inputs_file,
            trace=trace_file,
        )
    schedule = result.model.schedule
    for point in points:
        if len(points) > 1:
            click.echo(f"// ----- df IR {point} -----")
        click.echo(result.dumps[point], nl=False)
    if as_json:
        about = describe(schedule, str(zoo or hf_config or model_file), execute)
        click.echo(report_json(result.report, about), nl=False)
    elif not points:
        title = header(
            model_file, result.target_name, schedule["options"]["fusion"], dtype, execute
        )
        parts = render_report(result.report, title, max_rows=10**9 if all_kernels else 20)
        if output:
            parts.append(f"schedule written to {output}")
        if trace_file:
            parts.append(f"trace written to {trace_file} (open it in ui.perfetto.dev)")
        _show(parts)


#: options of ``coec compile`` that only some kinds of model take: (options, kinds, why)
_COMPILE_ONLY_FOR = (
    (
        ("phase", "seq", "batch", "layers"),
        {"zoo", "hf"},
        "is for zoo models and HF configs, not {what}",
    ),
    (("entry",), {"py"}, "names a function of a MODEL.py, not of {what}"),
    (("inputs_file",), {"onnx"}, "gives data to ONNX models, not to {what}"),
    (("dump_ir",), {"py", "onnx"}, "dumps a MODEL.py's or .onnx's IR, not {what}'s"),
    (("execute",), {"py", "onnx", "zoo", "hf"}, "runs with weights, which {what} does not hold"),
    (("emulate_bf16",), {"py", "onnx"}, "is for MODEL.py and .onnx models, not {what}"),
)


def _check_compile_options(
    ctx: click.Context, model_file: str | None, zoo: str | None, hf_config=None
) -> None:
    """Refuse options that do not apply to this compile, rather than ignore them."""
    if zoo:
        kind, what = "zoo", "a zoo model"
    elif hf_config:
        kind, what = "hf", "an HF config"
    elif Path(model_file).suffix.lower() == ".onnx":
        kind, what = "onnx", "an ONNX model"
    elif Path(model_file).suffix.lower() == ".mlir":
        kind, what = "ir", "df IR text"
    else:
        kind, what = "py", "a MODEL.py"
    for names, kinds, why in _COMPILE_ONLY_FOR:
        if kind not in kinds:
            _refuse(ctx, names, why.format(what=what))
    p = ctx.params
    if p["execute"] and p["count_only"]:
        raise ConfigError("--run and --count-only exclude each other")
    if not p["execute"]:
        _refuse(ctx, ("emulate_bf16",), "rounds values when running: add --run")
    if p["as_json"]:
        _refuse(ctx, ("dump_ir",), "prints IR, --json a report: ask for one of them")
        _refuse(ctx, ("all_kernels",), "lists kernels in the table; --json has them all")
    if p["dump_ir"]:
        _refuse(
            ctx, ("all_kernels",), "lists kernels in the report table, not shown with --dump-ir"
        )


def _dump_points(dump_ir: str | None) -> tuple[str, ...]:
    if not dump_ir:
        return ()
    stages = _dump_stages()
    if dump_ir == "all":
        return stages
    if dump_ir in stages:
        return (dump_ir,)
    raise ConfigError(f"--dump-ir {dump_ir!r}: choose from {', '.join(stages)} or all")


@cli.command("explain")
@click.argument("model_file", metavar="MODEL.py|MODEL.onnx", required=False)
@click.option("--zoo", metavar="NAME", help="Explain a zoo model (its embedding, layer, head).")
@_PHASE
@_SEQ
@_BATCH
@_ENTRY
@click.option("--target", default="sn40l", show_default=True)
@click.option("--sockets", type=click.IntRange(min=1), default=None, help="Zoo models: sockets.")
@_LAUNCH
@_DTYPE
@_SEARCH_LIMIT
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
def explain_cmd(
    model_file, zoo, phase, seq, batch, entry, target, sockets, launch, dtype, search_limit, as_json
):
    """Why each kernel boundary of the dataflow partition is where it is.

    For every two kernels in a row: the resource that cannot hold them as one (SRAM,
    PCUs, PMUs: needed vs available), or the modeled time by which two kernels beat one,
    with what would have to change to fuse them; ops named by module path and source line.
    """
    from coec.commands import explain_model

    if (model_file is None) == (zoo is None):
        raise ConfigError("give either MODEL.py (or MODEL.onnx) or --zoo NAME")
    from coec.pipeline import Options

    options = Options(target, "dataflow", dtype, launch, None, sockets, search_limit)
    explained, clock = explain_model(
        model_file, zoo, options, phase=phase, seq=seq, batch=batch, entry=entry
    )
    if as_json:
        _echo_json({"format": "coec.explain/2", "parts": [e.to_json() for e in explained]})
        return
    from coec.explain import render

    click.echo("\n".join(render(explained, clock)))


@cli.command("sweep")
@click.argument("sweep_file", metavar="SWEEP.toml", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Results folder (default: sweep-NAME). A rerun continues an interrupted sweep.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Local worker processes (without --ray).",
)
@click.option(
    "--ray",
    "use_ray",
    is_flag=True,
    help="Run the points as Ray tasks: on a local Ray cluster, or the one --ray-address names.",
)
@click.option(
    "--ray-address",
    metavar="ADDR",
    default=None,
    help="A running Ray cluster to join (e.g. HOST:6379 from 'ray start --head'); implies --ray.",
)
@click.option(
    "--pareto",
    metavar="A,B",
    default=None,
    help="Two objectives to minimise together (figures or swept names), e.g. "
    "seconds,memory.sram.capacity_MiB; overrides the file's pareto.",
)
@click.option("--quiet", is_flag=True, help="No progress bar or progress lines.")
def sweep_cmd(sweep_file, out, jobs, use_ray, ray_address, pareto, quiet):
    """A design-space sweep: the grid of SWEEP.toml, each point compiled count-only.

    Any target key (dotted, e.g. memory.hbm.bandwidth_GBps), and model (a zoo name or a
    MODEL.py), phase, seq, batch, dtype, sockets, fusion, launch. Rows for points that do
    not fit say why. Writes results.parquet/.csv/.json, plots, and the Pareto front.
    """
    from dataclasses import replace

    from coec.report import tables
    from coec.sweep import load_sweep, pareto_front, run_sweep, write_results
    from coec.sweep.spec import check_pareto, workload

    sweep = load_sweep(sweep_file)
    if pareto is not None:
        sweep = replace(sweep, pareto=check_pareto(pareto.split(","), sweep.grid, "--pareto"))
    out = out or Path(f"sweep-{sweep.name}")
    with _sweep_progress(quiet, f"sweep {sweep.name}") as step:
        rows = run_sweep(
            sweep, out, sweep_file.parent, jobs, step, ray=use_ray, ray_address=ray_address
        )
    fits = sum(r["fits"] for r in rows)
    click.echo(f"{sweep.name}: {len(rows)} points, {fits} fit, {len(rows) - fits} do not")
    if sweep.pareto:
        front = pareto_front(rows, *sweep.pareto, workload(sweep))
        _show(tables.pareto(front, sweep.pareto, list(sweep.grid)))
    _show(tables.written(write_results(sweep, rows, out)))


@contextlib.contextmanager
def _sweep_progress(quiet: bool, title: str):
    """``step(done, total)``: a rich bar with the time left on a terminal, else a plain
    line on stderr every few seconds (points done, their rate, the time left)."""
    if quiet:
        yield lambda done, total: None
        return
    if _stderr_is_terminal():
        from rich.progress import TimeRemainingColumn

        with _progress_bar(False, TimeRemainingColumn()) as bar:
            task = None

            def step(done: int, total: int) -> None:
                nonlocal task
                if task is None:  # started at the points read back, so the rate is this run's
                    task = bar.add_task(title, total=total, completed=done)
                bar.update(task, completed=done, total=total)

            yield step
        return
    import time

    start = {"time": time.monotonic(), "done": None, "said": 0.0}

    def line(done: int, total: int) -> None:
        now = time.monotonic()
        if start["done"] is None:
            start["done"] = done
        ran, spent = done - start["done"], now - start["time"]
        if done < total and now - start["said"] < 5:
            return
        start["said"] = now
        rate = ran / spent if spent > 0 else 0.0
        left = f", about {(total - done) / rate:.0f} s left" if rate and done < total else ""
        click.echo(f"{title}: {done}/{total} points, {rate:.2f} points/s{left}", err=True)

    yield line


@cli.command("opt")
@click.argument("ir_file", metavar="IR.mlir", default="-")
@click.option(
    "-p",
    "--passes",
    "pipeline",
    default="",
    help="Pass pipeline, e.g. 'canonicalize,fuse{policy=dataflow},tile{max-tile=16},place'.",
)
@click.option(
    "--target",
    default="sn40l",
    show_default=True,
    help="Target for passes that take one, unless the pipeline names it.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the IR here (atomically) instead of stdout.",
)
def opt_cmd(ir_file, pipeline, target, output):
    """Run a pass pipeline on df IR text (coec compile --dump-ir output; '-' is stdin)."""
    from coec.opt import run_opt
    from coec.outputs import check_outputs

    check_outputs([output], [None if ir_file == "-" else ir_file])
    if ir_file == "-":
        text, source = sys.stdin.read(), "<stdin>"
    else:
        path = Path(ir_file)
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        text, source = path.read_text(), str(path)
    result = run_opt(text, pipeline, target, source)
    if output:
        from coec.backend.schedule import write_files_atomic

        write_files_atomic({output: result})
    else:
        click.echo(result, nl=False)


@cli.command("run")
@click.argument("schedule_file", metavar="SCHEDULE.json", type=click.Path(path_type=Path))
@click.option(
    "--inputs",
    type=click.Path(path_type=Path),
    help="Inputs (.safetensors or .npz); default: the inputs saved beside the schedule.",
)
@click.option("--count-only", is_flag=True, help="Walk the schedule without data.")
@click.option("--emulate-bf16", is_flag=True, help="Round every stored value through bf16.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the report as JSON (format coec.report/1, as coec compile --json).",
)
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a Chrome/Perfetto trace of the schedule here (ui.perfetto.dev).",
)
@click.pass_context
def run_cmd(ctx, schedule_file, inputs, count_only, emulate_bf16, as_json, trace_file):
    """Execute a saved schedule on the NumPy runtime."""
    from coec.commands import run_schedule_file
    from coec.outputs import check_outputs, schedule_files
    from coec.report.tables import run_outputs
    from coec.report.text import describe, render_report, report_json

    if count_only:
        _refuse(ctx, ("inputs", "emulate_bf16"), "needs data: not with --count-only")
    check_outputs([trace_file], [*schedule_files(schedule_file), inputs])
    ran = run_schedule_file(schedule_file, inputs, count_only=count_only, emulate_bf16=emulate_bf16)
    report, outputs, schedule = ran.report, ran.outputs, ran.schedule
    if trace_file:
        _write_trace(trace_file, report, schedule)
    if as_json:
        about = describe(schedule, str(schedule_file), not count_only)
        click.echo(report_json(report, about), nl=False)
        return
    title = f"{schedule_file}  " + ("count-only" if count_only else "executed")
    parts = [*render_report(report, title), *run_outputs(outputs)]
    if trace_file:
        parts.append(f"trace written to {trace_file} (open it in ui.perfetto.dev)")
    _show(parts)


@cli.command("report")
@click.argument("schedule_file", metavar="SCHEDULE.json", type=click.Path(path_type=Path))
@click.option(
    "--plot",
    "plot_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write roofline.png/.svg, tiers.png and kernels.dot (.svg/.png with Graphviz) here.",
)
@click.option(
    "--run",
    "execute",
    is_flag=True,
    help="Execute with the saved weights and inputs (default: count-only).",
)
def report_cmd(schedule_file, plot_dir, execute):
    """Summary and pictures of a saved schedule: roofline, tiers, kernel graph.

    SCHEDULE.json as written by coec compile -o; count-only unless --run.
    """
    from coec.backend.target import Target
    from coec.commands import run_schedule_file
    from coec.report.plots import summary, write_plots

    ran = run_schedule_file(schedule_file, count_only=not execute)
    report, schedule = ran.report, ran.schedule
    target = Target.from_json(schedule["target"])
    name = Path(schedule_file).stem
    if plot_dir:
        for line in write_plots(plot_dir, schedule, report, target, name):
            click.echo(line)
    for line in summary(schedule, report, target, name):
        click.echo(line)


@cli.group("bench")
def bench_group() -> None:
    """Benchmarks from the papers, modeled by coec."""


@bench_group.command("fusion")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-fusion"),
    show_default=True,
    help="Folder for results.csv/json and the plots.",
)
@click.option("--models", default=None, help="Comma-separated subset (zoo names or fftconv).")
@click.option(
    "--layers", type=click.IntRange(min=1), default=None, help="Override layer counts (quick runs)."
)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--no-sweep",
    is_flag=True,
    help="Skip the sensitivity sweeps (launch overheads, P2P latency and bandwidth, HBM "
    "efficiency and latency, pipeline fill).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_fusion_cmd(out, models, layers, batch, no_sweep, quiet):
    """The SN40L paper's fusion experiment (Table III set): unfused, fused, fused+HO.

    fused+HO twice: on the fused kernels (launch alone) and compiled for hardware launch
    (the fusion may re-split the partition when launches are cheap).
    """
    from coec.backend.target import load_target
    from coec.bench.fusion import (
        CONFIGS,
        SWEEP_US,
        SWEEPS,
        TABLE_III,
        assumption_sweeps,
        assumptions,
        bench_fusion,
        launch_sweep,
        write_outputs,
    )
    from coec.report import tables

    benches = TABLE_III
    if models:
        wanted = models.split(",")
        unknown = sorted(set(wanted) - {b.name for b in TABLE_III})
        if unknown:
            raise ConfigError(
                f"unknown benchmark {unknown[0]!r}; known: {', '.join(dict.fromkeys(b.name for b in TABLE_III))}"
            )
        benches = tuple(b for b in TABLE_III if b.name in wanted)
    # the sweeps run on the first LLM decode benchmark, when there is one
    first = None if no_sweep else next((b for b in benches if b.phase == "decode"), None)
    swept = len(SWEEP_US) + sum(len(sw.values) for sw in SWEEPS)
    steps = len(benches) * len(CONFIGS) + (2 * swept if first else 0)
    with _progress_bar(quiet) as bar:
        task = bar.add_task("compiling", total=steps)

        def step(what: str) -> None:
            bar.update(task, advance=1, description=what)

        rows = bench_fusion(benches, batch, layers, step)
        sweep = launch_sweep(first, layers=layers, progress=step) if first else []
        sweeps = assumption_sweeps(first, layers=layers, progress=step) if first else {}
    _show(tables.bench_fusion(rows, sweep, first, assumptions(load_target("sn40l-node")), sweeps))
    _show(tables.written(write_outputs(rows, sweep, out, sweeps)))


@bench_group.command("coe")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-coe"),
    show_default=True,
    help="Folder for results.csv/json and the plots.",
)
@click.option("--experts", type=click.IntRange(min=1), default=150, show_default=True)
@click.option(
    "--skew",
    type=click.FloatRange(min=0),
    default=0.8,
    show_default=True,
    help="Expert popularity: Zipf exponent over the experts, each prompt drawn alone (0: uniform).",
)
@click.option(
    "--rates",
    default=None,
    help="The load sweep's offered rates, requests/s per node, comma-separated (default: "
    "0.25 to 6).",
)
@click.option(
    "--demand",
    type=click.FloatRange(min=0, min_open=True),
    default=100.0,
    show_default=True,
    help="Capacity planning: the requests/s to serve within the SLO.",
)
@_SLO_TTFT
@_SLO_TPOT
@click.option("--no-load", is_flag=True, help="Skip the load sweep and capacity planning.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def bench_coe_cmd(ctx, out, experts, skew, rates, demand, slo_ttft, slo_tpot, no_load, quiet):
    """The SN40L paper's CoE experiment: many 7B experts on SN40L vs DGX A100/H100.

    SN40L launched by the chip (hardware), GPUs by their own stream; each prompt routed to
    its own expert; cold start and steady state apart; DGX copies under the target's PCIe
    topology and its two bounds. Then the load sweep: the experts served as requests
    arrive, latency against offered load (Poisson and bursty), and the nodes --demand
    requests/s take at the p99 SLO (load.csv/json, load_sweep.png).
    """
    import math

    from coec.bench.coe import (
        SYSTEMS,
        assumptions,
        bench_coe,
        footprint,
        summary,
        write_outputs,
    )
    from coec.report import tables

    if no_load:
        _refuse(
            ctx,
            ("rates", "demand", "slo_ttft", "slo_tpot"),
            "is for the load sweep: not with --no-load",
        )
    sweep_rates = None
    if rates is not None:
        try:
            sweep_rates = sorted({float(r) for r in rates.split(",") if r.strip()})
        except ValueError:
            raise ConfigError(f"--rates {rates!r}: comma-separated requests per second") from None
        if not sweep_rates or sweep_rates[0] <= 0 or not all(map(math.isfinite, sweep_rates)):
            raise ConfigError(f"--rates {rates!r}: positive requests per second, at least one")
    steps = 4 * len(SYSTEMS) + len(SYSTEMS) + (0 if no_load else len(SYSTEMS))
    with _progress_bar(quiet) as bar:
        task = bar.add_task("compiling and serving", total=steps)

        def advance() -> None:
            bar.update(task, advance=1)

        rows, curve = bench_coe(experts, progress=advance, skew=skew)
        if not no_load:
            from coec.bench import coe_load
            from coec.coe.slo import SLO

            slo = SLO(slo_ttft, slo_tpot)
            load, plan, compared = coe_load.bench_load(
                experts, sweep_rates or coe_load.RATES, slo, demand, skew, advance
            )
    ratios = summary(rows)
    _show(tables.bench_coe(experts, rows, ratios, footprint(curve), assumptions(skew)))
    written = write_outputs(out, rows, curve, ratios)
    if not no_load:
        _show(tables.bench_coe_load(load, plan, compared, coe_load.assumptions(experts, slo, skew)))
        written += coe_load.write_outputs(out, load, plan, slo, experts, skew, compared)
    _show(tables.written(written))


@cli.group("coe")
def coe_group() -> None:
    """Composition of Experts: the two-step router, experts and serving."""


_COE_TARGET = click.option(
    "--target",
    default="sn40l-node",
    show_default=True,
    help="Node to serve on: sn40l-node, dgx-a100, dgx-h100 or a target .toml.",
)
_COE_FUSION = _fusion_option("Fusion of experts and router.")


@coe_group.command("compile")
@click.argument("coe_file", metavar="COE.toml")
@_COE_TARGET
@_COE_FUSION
@click.option(
    "--json", "as_json", is_flag=True, help="Print the placement (the node's figures) as JSON."
)
def coe_compile_cmd(coe_file, target, fusion, as_json):
    """Compile every expert (count-only) and the router, and place them on the node."""
    from coec.coe.commands import compile_coe, load
    from coec.report.tables import coe_placement

    coe, node, profiles, router_s, plan = compile_coe(load(coe_file), target, fusion=fusion)
    if as_json:
        _echo_json(
            {
                "format": "coec.coe-placement/1",
                "coe": coe.name,
                "target": node.name,
                "sockets": node.sockets,
                "fusion": node.fusion,
                "experts": len(coe.experts),
                "architectures": {
                    zoo: {
                        "weight_bytes": p.weight_bytes,
                        "prefill_s": p.prefill_s,
                        "decode_step_s": p.decode_step_s,
                    }
                    for zoo, p in profiles.items()
                },
                "router_s_per_batch": router_s,
                "placement": plan.to_json(),
            }
        )
        return
    _show(coe_placement(coe, node, profiles, plan.to_json()))


@coe_group.command("serve")
@click.argument("coe_file", metavar="COE.toml")
@_COE_TARGET
@_COE_FUSION
@click.option(
    "--requests",
    "requests_file",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help='Requests to serve, as JSON lines: {"prompt": ..., "expert"?: ..., "t"?: arrival s, '
    '"prompt_tokens"?: ..., "output_tokens"?: ...}; with "t" on every row, a timed trace.',
)
@click.option("--synthetic", type=click.IntRange(min=1), help="N synthetic requests instead.")
@click.option(
    "--skew",
    type=click.FloatRange(min=0),
    default=None,
    help="Zipf skew of synthetic experts (default: coe.toml's [traffic] mix, else 0: uniform).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of synthetic requests, arrival times and lengths.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    help="Prompts per batch; with arrivals, the sequences decoding at once (default: coe.toml's).",
)
@click.option("--tokens", type=click.IntRange(min=1), help="Output tokens per request.")
@click.option(
    "--policy",
    type=click.Choice(["lru", "lfu", "belady"]),
    help="Expert-cache eviction (belady: the offline optimum, a bound).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Requests per second arriving (Poisson, or gamma with --cv): serve with arrival "
    "times, queues and overlap (default: coe.toml's [traffic] rate; a trace with 't' has its own).",
)
@click.option(
    "--cv",
    type=click.FloatRange(min=0, min_open=True),
    help="Arrival gaps' coefficient of variation: 1 Poisson, > 1 bursty (default: [traffic]'s, 1).",
)
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0),
    help="Seconds the router waits for its batch to fill (default: [serving]'s, 0).",
)
@click.option(
    "--prefetch",
    type=click.Choice(["none", "next"]),
    help="Copy the next queued experts in while computing, or on demand (default: next).",
)
@click.option(
    "--overlap/--no-overlap",
    default=None,
    help="Expert copies beside compute (DMA / copy engines), or holding it (default: overlap).",
)
@click.option(
    "--length-spread",
    "spread",
    type=click.FloatRange(min=0, max=1, max_open=True),
    help="Draw prompt and output lengths uniformly within +-this share of the mean.",
)
@_SLO_TTFT
@_SLO_TPOT
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    help="Leave the first N requests (the cold start) out of the metrics.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON report here.",
)
@click.pass_context
def coe_serve_cmd(
    ctx,
    coe_file,
    target,
    fusion,
    requests_file,
    synthetic,
    skew,
    seed,
    batch,
    tokens,
    policy,
    rate,
    cv,
    max_wait,
    prefetch,
    overlap,
    spread,
    slo_ttft,
    slo_tpot,
    warmup,
    as_json,
    output,
):
    """Serve requests: route them, switch experts into HBM, run them.

    The requests come from a file (--requests) or are drawn at random (--synthetic).
    With a rate (--rate, or coe.toml's [traffic]) or a trace whose rows have times ('t'),
    they arrive, queue and are served as they come (a discrete-event model: percentiles,
    goodput, HBM over time); else batch after batch.
    """
    import json

    from coec.coe.commands import load, read_requests, serve
    from coec.coe.slo import SLO
    from coec.report.tables import coe_serve

    if (requests_file is None) == (synthetic is None):
        raise ConfigError("give either --requests FILE or --synthetic N")
    coe = load(coe_file)
    rows = read_requests(requests_file) if requests_file else None
    timed = bool(rows) and "t" in rows[0]
    if requests_file is not None:
        _refuse(ctx, ("skew",), "draws synthetic requests: not with --requests")
        if rate is None and not spread:
            _refuse(
                ctx, ("seed",), "draws arrival times or lengths: give --rate or --length-spread"
            )
    if timed:
        _refuse(ctx, ("rate", "cv"), "draws arrival times: the trace has its own ('t')")
    if not (timed or rate is not None or coe.traffic.rate is not None):
        _refuse(
            ctx,
            ("cv", "max_wait", "prefetch", "overlap", "spread", "slo_ttft", "slo_tpot", "warmup"),
            "applies to a run with arrival times: give --rate R (or a trace with times)",
        )
    arrivals = dict(
        rate=rate, cv=cv, max_wait=max_wait, prefetch=prefetch, overlap=overlap, spread=spread
    )
    arrivals |= {"warmup": warmup}
    if timed or rate is not None or coe.traffic.rate is not None:
        arrivals["slo"] = SLO(slo_ttft, slo_tpot)
    report = serve(
        coe,
        target,
        requests=rows,
        synthetic=synthetic,
        skew=skew,
        seed=seed,
        batch=batch,
        tokens=tokens,
        policy=policy,
        fusion=fusion,
        **{k: v for k, v in arrivals.items() if v is not None},
    )
    text = json.dumps(report, indent=1) + "\n"
    if output:
        from coec.backend.schedule import write_files_atomic

        write_files_atomic({output: text})
    if as_json:
        click.echo(text, nl=False)
        return
    parts = coe_serve(report, target)
    if output:
        parts.append(f"report written to {output}")
    _show(parts)


@coe_group.command("route")
@click.argument("prompts", nargs=-1, required=True)
@click.option(
    "--coec", "use_coec", is_flag=True, help="Embed on coec's runtime (compiled encoder)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the categories as JSON.")
def coe_route_cmd(prompts, use_coec, as_json):
    """Classify each PROMPT into a category (step one of the router)."""
    import json

    from coec.coe.router import Router
    from coec.report.tables import route_lines

    router = Router.default()
    probs = router.probabilities(router.embed(list(prompts), use_coec=use_coec))
    rows = [
        {"prompt": p, "category": router.categories[int(row.argmax())], "p": float(row.max())}
        for p, row in zip(prompts, probs, strict=True)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for line in route_lines(rows):
        click.echo(line)


@coe_group.command("router-eval")
@click.option(
    "--prompts",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Labelled prompts (JSON lines with prompt, category, split); default: the bundled set.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as JSON.")
def coe_router_eval_cmd(path, as_json):
    """The router's held-out accuracy (fitted on the train split, scored on the test split)."""
    import json

    from coec.coe.embedding import describe
    from coec.coe.router import evaluate
    from coec.report.tables import router_eval

    result = evaluate(path)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for line in router_eval(result, describe()):
        click.echo(line)


@coe_group.command("router-cost")
@click.option(
    "--batch",
    "batches",
    type=click.IntRange(min=1),
    multiple=True,
    default=(1, 8),
    show_default=True,
    help="Prompts per router batch (repeatable).",
)
@click.option("--seq", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--target", default="sn40l", show_default=True)
@_fusion_option()
@click.option("--dtype", type=click.Choice(["bf16", "fp32"]), default="bf16", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def coe_router_cost_cmd(batches, seq, target, fusion, dtype, as_json):
    """The router's modeled cost: its embedding model compiled by coec (count-only)."""
    import json

    from coec.coe.router import router_cost
    from coec.report.tables import router_cost as render

    rows = [router_cost(b, seq, target=target, fusion=fusion, dtype=dtype) for b in batches]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _show(render(rows, target, seq, dtype))


@cli.command("zoo")
@click.option("--json", "as_json", is_flag=True, help="Print the models as JSON.")
def zoo_cmd(as_json):
    """List the zoo's models (published hyper-parameters, no weights)."""
    from coec.models.zoo import ZOO
    from coec.report.tables import zoo_lines, zoo_rows

    if as_json:
        _echo_json(zoo_rows(ZOO.values()))
        return
    for line in zoo_lines(ZOO.values()):
        click.echo(line)


@cli.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Print the targets as JSON.")
def targets_cmd(as_json):
    """List the built-in hardware targets."""
    from coec.backend.target import builtin_targets, load_target
    from coec.report.tables import target_lines, target_rows

    targets = [load_target(name) for name in builtin_targets()]
    if as_json:
        _echo_json(target_rows(targets))
        return
    for line in target_lines(targets):
        click.echo(line)


def _normalize(argv: list[str]) -> list[str]:
    """A bare ``--dump-ir`` means the final IR, even when a file name follows it."""
    out = []
    for i, arg in enumerate(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg == "--dump-ir" and (nxt is None or nxt not in (*_dump_stages(), "all")):
            arg = "--dump-ir=after-place"
        out.append(arg)
    return out


def _warn_in_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as the CLI says anything: one line on stderr, no source excerpt."""
    first = str(message).splitlines()[0] if str(message) else category.__name__
    click.echo(f"coec: warning: {first}", err=True)


def main(argv: list[str] | None = None) -> None:
    argv = _normalize([str(a) for a in (sys.argv[1:] if argv is None else argv)])
    shown = warnings.showwarning
    warnings.showwarning = _warn_in_one_line
    try:
        cli.main(args=argv, prog_name="coec", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.NoArgsIsHelpError as e:  # a bare ``coec`` (or ``coec coe``)
        click.echo(e.ctx.get_help())
        sys.exit(0)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as e:  # usage errors: one line too
        _fail(e.format_message().replace("\n", " "), e.exit_code)
    except CoecError as e:
        if os.environ.get("COEC_TRACEBACK"):
            raise
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__, e.exit_code)
    except Exception as e:  # a bug in coec, still one line unless asked
        if os.environ.get("COEC_TRACEBACK"):
            raise
        _fail(f"internal error: {type(e).__name__}: {e} (set COEC_TRACEBACK=1 for details)", 70)
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    main()
