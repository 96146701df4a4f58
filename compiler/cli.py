"""The ``coec`` command line.

Every coec error becomes one line on stderr and a non-zero exit code (set
``COEC_TRACEBACK=1`` to see the Python traceback instead).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from coec.ir.errors import CoecError, ConfigError


def _dump_stages() -> tuple[str, ...]:
    """--dump-ir's stage names: the pipeline's (``frontend``, ``after-<pass>``...)."""
    from coec.pipeline import stage_names

    return stage_names()


def _console() -> Console:
    # Off a terminal rich assumes 80 columns; a report piped to a file should not be cut.
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _fail(message: str, code: int) -> None:
    click.echo(f"coec: error: {message}", err=True)
    sys.exit(code)


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _progress_bar(quiet: bool):
    """A rich progress bar on stderr: shown only on a terminal and without --quiet."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    show = not quiet and _stderr_is_terminal()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True, force_terminal=show or None),
        disable=not show,
        transient=True,
    )


def _write_trace(path: Path, report: dict, schedule: dict) -> None:
    from coec.report.trace import write_trace

    target = schedule["target"]
    write_trace(path, report, target["sockets"], target["name"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="coec")
def cli() -> None:
    """coec — compile PyTorch models for a modeled SN40L-style RDU and run them."""


@cli.command("compile")
@click.argument("model_file", metavar="MODEL.py|MODEL.onnx|IR.mlir", required=False)
@click.option(
    "--zoo", metavar="NAME", help="Compile a zoo model by name instead of MODEL.py (see coec zoo)."
)
@click.option(
    "--phase",
    type=click.Choice(["prefill", "decode"]),
    default="prefill",
    show_default=True,
    help="Zoo models: prompt prefill or one decode step.",
)
@click.option(
    "--seq",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Zoo models: prompt length, or KV-cache length in decode.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Zoo models: sequences per batch.",
)
@click.option(
    "--layers",
    type=click.IntRange(min=1),
    default=None,
    help="Zoo models: override the number of decoder layers.",
)
@click.option("--entry", metavar="NAME", help="Function returning (module, example_inputs).")
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
@click.option(
    "--fusion", default="none", show_default=True, help="Fusion policy: none, epilogue or dataflow."
)
@click.option(
    "--sockets",
    type=click.IntRange(min=1),
    default=None,
    help="Sockets to shard over (tensor parallelism; zoo models). Default: the target's.",
)
@click.option(
    "--dtype",
    type=click.Choice(["bf16", "fp32"]),
    default="bf16",
    show_default=True,
    help="Storage dtype bytes are counted in.",
)
@click.option(
    "--launch",
    type=click.Choice(["software", "hardware"]),
    default=None,
    help="Kernel launch orchestration (default: the target's).",
)
@click.option(
    "--max-tile",
    type=click.IntRange(min=1),
    default=None,
    help="Cap tile sizes (default: chosen by modeled cost).",
)
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
    "--emulate-bf16", is_flag=True, help="Round every stored value through bf16 when running."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--dump-ir",
    "dump_ir",
    is_flag=False,
    flag_value="after-place",
    default=None,
    metavar="[STAGE]",
    help="Print the df IR at STAGE: frontend, after-fuse, after-tile, after-place (default), or all.",
)
@click.option("--all-kernels", is_flag=True, help="List every kernel in the report table.")
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a Chrome/Perfetto trace of the schedule here (ui.perfetto.dev).",
)
@click.option("--quiet", is_flag=True, help="No progress bar (zoo models show one on a terminal).")
def compile_cmd(
    model_file,
    zoo,
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
    any stage) runs the rest of the pipeline and compiles count-only.
    """
    from coec.commands import compile_model_file

    if execute and count_only:
        raise ConfigError("--run and --count-only exclude each other")
    points: tuple[str, ...] = ()
    if dump_ir:
        stages = _dump_stages()
        if dump_ir == "all":
            points = stages
        elif dump_ir in stages:
            points = (dump_ir,)
        else:
            raise ConfigError(f"--dump-ir {dump_ir!r}: choose from {', '.join(stages)} or all")
    if (model_file is None) == (zoo is None):
        raise ConfigError("give either MODEL.py (or MODEL.onnx) or --zoo NAME")
    from coec.pipeline import Options

    options = Options(target, fusion, dtype, launch, max_tile, sockets)
    if zoo:
        from coec.commands import compile_zoo_model

        with _progress_bar(quiet) as bar:
            task = bar.add_task(f"compiling {zoo}", total=None)
            result = compile_zoo_model(
                zoo,
                options,
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
        model_file = f"{zoo} {phase} batch {batch} seq {seq}"
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
        )
    if trace_file:
        _write_trace(trace_file, result.report, result.model.schedule)
    console = _console()
    for point in points:
        if len(points) > 1:
            click.echo(f"// ----- df IR {point} -----")
        click.echo(result.dumps[point], nl=False)
    if as_json:
        from coec.report.text import report_json

        click.echo(report_json(result.report), nl=False)
    elif not points:
        from coec.report.text import print_report

        header = f"{model_file}  target {result.target_name}  fusion {fusion}  dtype {dtype}  " + (
            "executed" if execute else "count-only"
        )
        print_report(result.report, header, console, max_rows=10**9 if all_kernels else 20)
        if output:
            console.print(f"schedule written to {output}")
        if trace_file:
            console.print(f"trace written to {trace_file} (open it in ui.perfetto.dev)")


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
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a Chrome/Perfetto trace of the schedule here (ui.perfetto.dev).",
)
def run_cmd(schedule_file, inputs, count_only, emulate_bf16, as_json, trace_file):
    """Execute a saved schedule on the NumPy runtime."""
    from coec.commands import run_schedule_file

    report, outputs = run_schedule_file(
        schedule_file, inputs, count_only=count_only, emulate_bf16=emulate_bf16
    )
    if trace_file:
        from coec.backend.schedule import load as load_schedule

        _write_trace(trace_file, report, load_schedule(schedule_file))
    if as_json:
        from coec.report.text import report_json

        click.echo(report_json(report), nl=False)
        return
    from coec.report.text import print_report

    console = _console()
    print_report(
        report, f"{schedule_file}  " + ("count-only" if count_only else "executed"), console
    )
    for name, arr in outputs.items():
        console.print(
            f"output {name}: shape {tuple(arr.shape)}  mean {float(arr.mean()):.6g}  max|x| {float(abs(arr).max()):.6g}"
        )
    if trace_file:
        console.print(f"trace written to {trace_file} (open it in ui.perfetto.dev)")


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
    from coec.backend.schedule import load as load_schedule
    from coec.backend.target import Target
    from coec.commands import run_schedule_file
    from coec.report.plots import summary, write_plots

    report, _ = run_schedule_file(schedule_file, count_only=not execute)
    schedule = load_schedule(schedule_file)
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
@click.option("--no-sweep", is_flag=True, help="Skip the launch-overhead sweep.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_fusion_cmd(out, models, layers, batch, no_sweep, quiet):
    """The SN40L paper's fusion experiment (Table III set): unfused vs fused vs fused+HO."""
    from coec.backend.target import load_target
    from coec.bench.fusion import (
        CONFIGS,
        SWEEP_US,
        TABLE_III,
        assumptions,
        bench_fusion,
        launch_sweep,
        write_outputs,
    )

    benches = TABLE_III
    if models:
        wanted = models.split(",")
        unknown = sorted(set(wanted) - {b.name for b in TABLE_III})
        if unknown:
            raise ConfigError(
                f"unknown benchmark {unknown[0]!r}; known: {', '.join(dict.fromkeys(b.name for b in TABLE_III))}"
            )
        benches = tuple(b for b in TABLE_III if b.name in wanted)
    console = _console()
    # the launch sweep runs on the first LLM decode benchmark, when there is one
    first = None if no_sweep else next((b for b in benches if b.phase == "decode"), None)
    steps = len(benches) * len(CONFIGS) + (2 * len(SWEEP_US) if first else 0)
    with _progress_bar(quiet) as bar:
        task = bar.add_task("compiling", total=steps)

        def step(what: str) -> None:
            bar.update(task, advance=1, description=what)

        rows = bench_fusion(benches, batch, layers, step)
        sweep = launch_sweep(first, layers=layers, progress=step) if first else []
    table = Table(title="SN40L fusion benchmark (modeled, count-only)")
    for col in (
        "model",
        "phase",
        "seq",
        "sockets",
        "config",
        "kernels",
        "time",
        "speedup",
        "launches÷",
        "HBM GB",
        "HBM BW used",
    ):
        table.add_column(col, justify="left" if col in ("model", "phase", "config") else "right")
    for r in rows:
        table.add_row(
            r["model"],
            r["phase"],
            str(r["seq"]),
            str(r["sockets"]),
            r["config"],
            f"{r['kernels']:,}",
            f"{r['seconds'] * 1e3:.3f} ms",
            f"{r['speedup']:.2f}x",
            f"{r['launch_ratio']:.1f}",
            f"{r['hbm_bytes'] / 1e9:.2f}",
            f"{r['hbm_bw_fraction']:.0%}",
        )
    console.print(table)
    if sweep:
        console.print(
            "launch-overhead sweep ("
            + f"{first.name} {first.phase}): "
            + ", ".join(f"{s['software_launch_us']:g} µs → {s['speedup']:.2f}x" for s in sweep)
        )
    console.print("assumptions:")
    for line in assumptions(load_target("sn40l-node")):
        console.print(f"  - {line}")
    for path in write_outputs(rows, sweep, out):
        console.print(f"wrote {path}")


@bench_group.command("coe")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bench-coe"),
    show_default=True,
    help="Folder for results.csv/json and the plots.",
)
@click.option("--experts", type=click.IntRange(min=1), default=150, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench_coe_cmd(out, experts, quiet):
    """The SN40L paper's CoE experiment: many 7B experts on SN40L vs DGX A100/H100."""
    from coec.bench.coe import (
        SYSTEMS,
        assumptions,
        bench_coe,
        footprint,
        summary,
        write_outputs,
    )

    console = _console()
    with _progress_bar(quiet) as bar:
        task = bar.add_task("compiling experts and routers", total=4 * len(SYSTEMS) + len(SYSTEMS))
        rows, curve = bench_coe(experts, progress=lambda: bar.update(task, advance=1))
    table = Table(title=f"CoE serving: {experts} llama2-7b experts per node (modeled, per request)")
    for col in (
        "system",
        "batch",
        "tokens",
        "one switch",
        "router",
        "switch",
        "expert",
        "total",
        "hit rate",
        "HBM slots",
    ):
        table.add_column(col, justify="left" if col == "system" else "right")
    for r in rows:
        table.add_row(
            r["system"],
            str(r["batch"]),
            str(r["tokens"]),
            f"{r['switch_s'] * 1e3:.1f} ms",
            f"{r['router_per_request_s'] * 1e3:.2f} ms",
            f"{r['switch_per_request_s'] * 1e3:.1f} ms",
            f"{r['expert_per_request_s'] * 1e3:.1f} ms",
            f"{r['per_request_s'] * 1e3:.1f} ms",
            f"{r['hit_rate']:.0%}",
            str(r["hbm_expert_slots"]),
        )
    console.print(table)
    ratios = summary(rows)
    console.print("SN40L node against each DGX node (ratio > 1: SN40L faster):")
    for r in ratios:
        console.print(
            f"  vs {r['vs']}, batch {r['batch']}, {r['tokens']} tokens: switching "
            f"{r['switch_ratio']:.1f}x, expert-only {r['expert_speedup']:.2f}x, "
            f"overall {r['overall_speedup']:.2f}x"
        )
    for r in ratios:
        if (r["batch"], r["tokens"]) == (1, 20):
            console.print(
                f"  sensitivity: if all of a {r['vs']} node's host->GPU copies shared one PCIe "
                f"link, switching would be {r['switch_ratio_one_link']:.1f}x"
            )
    feet = {f["system"]: f for f in footprint(curve)}
    sn = feet.get("sn40l-node")
    for f in feet.values():
        console.print(
            f"  {f['experts']} experts on {f['system']}: {f['nodes_all_in_ddr']} node(s) hold them "
            f"in DDR/host memory, {f['nodes_all_in_hbm']} keep them all resident in HBM"
        )
    if sn:
        for f in feet.values():
            if f["system"] != "sn40l-node":
                console.print(
                    f"  footprint: {f['system']} nodes in HBM / SN40L nodes in DDR = "
                    f"{f['nodes_all_in_hbm']} / {sn['nodes_all_in_ddr']} = "
                    f"{f['nodes_all_in_hbm'] / sn['nodes_all_in_ddr']:.1f}x"
                )
    console.print("assumptions:")
    for a in assumptions():
        console.print(f"  - {a}")
    for path in write_outputs(out, rows, curve, ratios):
        console.print(f"wrote {path}")


@cli.group("coe")
def coe_group() -> None:
    """Composition of Experts: the two-step router, experts and serving."""


_COE_TARGET = click.option(
    "--target",
    default="sn40l-node",
    show_default=True,
    help="Node to serve on: sn40l-node, dgx-a100, dgx-h100 or a target .toml.",
)
_COE_FUSION = click.option(
    "--fusion",
    type=click.Choice(["none", "epilogue", "dataflow"]),
    help="Fusion of experts and router (default: dataflow where the target runs it, else epilogue).",
)


@coe_group.command("compile")
@click.argument("coe_file", metavar="COE.toml")
@_COE_TARGET
@_COE_FUSION
@click.option("--json", "as_json", is_flag=True, help="Print the placement as JSON.")
def coe_compile_cmd(coe_file, target, fusion, as_json):
    """Compile every expert (count-only) and the router, and place them on the node."""
    import json

    from coec.coe.commands import compile_coe, load

    coe, node, profiles, router_s, plan = compile_coe(load(coe_file), target, fusion=fusion)
    out = {
        "coe": coe.name,
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
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    console = _console()
    console.print(
        f"{coe.name}: {len(coe.experts)} experts, {len(profiles)} distinct architecture(s) "
        f"compiled once each, on {node.name} ({node.sockets} sockets, fusion {node.fusion})"
    )
    table = Table()
    for col in ("architecture", "weights GB", "prefill", "decode step"):
        table.add_column(col, justify="right")
    for zoo, p in profiles.items():
        table.add_row(
            zoo,
            f"{p.weight_bytes / 1e9:.3f}",
            f"{p.prefill_s * 1e3:.3f} ms",
            f"{p.decode_step_s * 1e6:.1f} µs",
        )
    console.print(table)
    pl = plan.to_json()
    console.print(
        f"HBM {pl['hbm_bytes'] / 1e9:.1f} GB: router {pl['router_bytes'] / 1e9:.3f} GB, "
        f"KV cache {pl['kv_cache_bytes'] / 1e9:.3f} GB, expert cache "
        f"{pl['expert_cache_bytes'] / 1e9:.1f} GB; DDR {pl['ddr_bytes'] / 1e9:.0f} GB holds "
        f"all experts ({pl['experts_in_ddr_bytes'] / 1e9:.2f} GB); switching: {pl['copy_path']}"
    )
    in_hbm = pl["nodes_all_experts_in_hbm"]
    console.print(
        f"footprint: 1 {node.name} node holds all {len(coe.experts)} experts in DDR; "
        + (
            f"keeping all of them resident in HBM (no switching) would take {in_hbm} node(s)"
            if in_hbm
            else "no number of nodes keeps them all resident in HBM"
        )
    )


@coe_group.command("serve")
@click.argument("coe_file", metavar="COE.toml")
@_COE_TARGET
@_COE_FUSION
@click.option(
    "--trace",
    type=click.Path(dir_okay=False, path_type=Path),
    help='Requests as JSON lines: {"prompt": ..., "expert"?: ...}.',
)
@click.option("--synthetic", type=click.IntRange(min=1), help="N synthetic requests instead.")
@click.option(
    "--skew",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Zipf skew of synthetic experts (0: uniform).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--batch", type=click.IntRange(min=1), help="Prompts per batch (default: coe.toml's)."
)
@click.option("--tokens", type=click.IntRange(min=1), help="Output tokens per request.")
@click.option("--policy", type=click.Choice(["lru", "lfu"]), help="Expert-cache eviction.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON report here.",
)
def coe_serve_cmd(
    coe_file, target, fusion, trace, synthetic, skew, seed, batch, tokens, policy, as_json, output
):
    """Serve requests: route each batch, switch experts into HBM, run them."""
    import json

    from coec.coe.commands import load, read_trace, serve

    if (trace is None) == (synthetic is None):
        raise ConfigError("give either --trace FILE or --synthetic N")
    report = serve(
        load(coe_file),
        target,
        trace=read_trace(trace) if trace else None,
        synthetic=synthetic,
        skew=skew,
        seed=seed,
        batch=batch,
        tokens=tokens,
        policy=policy,
        fusion=fusion,
    )
    text = json.dumps(report, indent=1) + "\n"
    if output:
        from coec.backend.schedule import write_files_atomic

        write_files_atomic({output: text})
    if as_json:
        click.echo(text, nl=False)
        return
    t = report["totals"]
    console = _console()
    table = Table(
        title=f"{report['coe']} on {target}: batch {report['batch']}, {report['tokens']} tokens, {report['policy']}"
    )
    for col in ("request", "expert", "hit", "router", "switch", "expert time", "latency"):
        table.add_column(col, justify="right")
    for r in report["requests"][:20]:
        table.add_row(
            str(r["request"]),
            r["expert"],
            "yes" if r["hit"] else "no",
            f"{r['router_s'] * 1e3:.3f} ms",
            f"{r['switch_s'] * 1e3:.3f} ms",
            f"{r['expert_s'] * 1e3:.3f} ms",
            f"{r['latency_s'] * 1e3:.3f} ms",
        )
    console.print(table)
    console.print(
        f"totals: {t['requests']} requests in {t['total_s'] * 1e3:.2f} ms "
        f"(router {t['router_s'] * 1e3:.2f}, switch {t['switch_s'] * 1e3:.2f}, "
        f"experts {t['expert_s'] * 1e3:.2f}); throughput {t['throughput_rps']:.1f} req/s; "
        f"mean latency {t['mean_latency_s'] * 1e3:.3f} ms; cache hit rate {t['hit_rate']:.0%} "
        f"({t['cache_hits']}/{t['expert_activations']})"
    )
    for a in report["assumptions"]:
        console.print(f"  - {a}")
    if output:
        console.print(f"report written to {output}")


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

    router = Router.default()
    probs = router.probabilities(router.embed(list(prompts), use_coec=use_coec))
    rows = [
        {"prompt": p, "category": router.categories[int(row.argmax())], "p": float(row.max())}
        for p, row in zip(prompts, probs, strict=True)
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for r in rows:
        click.echo(f"{r['category']:<12} {r['p']:.2f}  {r['prompt']}")


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

    result = evaluate(path)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    model = describe()
    click.echo(
        f"router: {model['model']} ({model['dim']}-d, {model['layers']} layers) "
        f"+ softmax-regression head over {len(result['categories'])} categories"
    )
    click.echo(
        f"held-out accuracy {result['accuracy']:.1%} "
        f"({round(result['accuracy'] * result['n_test'])}/{result['n_test']}; "
        f"trained on {result['n_train']})"
    )
    for category, accuracy in result["per_category"].items():
        click.echo(f"  {category:<12} {accuracy:.1%}")
    for c in result["confusions"]:
        click.echo(f"  confused: {c['category']} -> {c['predicted']} x{c['count']}")


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
@click.option(
    "--fusion",
    type=click.Choice(["none", "epilogue", "dataflow"]),
    default="dataflow",
    show_default=True,
)
@click.option("--dtype", type=click.Choice(["bf16", "fp32"]), default="bf16", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def coe_router_cost_cmd(batches, seq, target, fusion, dtype, as_json):
    """The router's modeled cost: its embedding model compiled by coec (count-only)."""
    import json

    from coec.coe.router import router_cost

    rows = [router_cost(b, seq, target=target, fusion=fusion, dtype=dtype) for b in batches]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"router encoder on {target} (fusion {fusion}, {dtype}, seq {seq})")
    for col in ("batch", "kernels", "time", "GFLOP", "HBM→SRAM MB", "SRAM→HBM MB"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["batch"]),
            str(r["kernels"]),
            f"{r['seconds'] * 1e6:.1f} µs",
            f"{r['flops'] / 1e9:.2f}",
            f"{r['bytes'].get('hbm->sram', 0) / 1e6:.2f}",
            f"{r['bytes'].get('sram->hbm', 0) / 1e6:.2f}",
        )
    _console().print(table)


@cli.command("zoo")
def zoo_cmd():
    """List the zoo's models (published hyper-parameters, no weights)."""
    from coec.models.zoo import ZOO

    for a in ZOO.values():
        click.echo(
            f"{a.name:<14} {a.params() / 1e9:7.1f} B params  layers {a.layers:>3}  hidden {a.hidden:>5}  "
            f"heads {a.heads}/{a.kv_heads} kv  ffn {a.ffn}  vocab {a.vocab}  ({a.source})"
        )


@cli.command("targets")
def targets_cmd():
    """List the built-in hardware targets."""
    from coec.backend.target import builtin_targets, load_target

    for name in builtin_targets():
        click.echo(f"{name}: {load_target(name).description}")


def _normalize(argv: list[str]) -> list[str]:
    """A bare ``--dump-ir`` means the final IR, even when a file name follows it."""
    out = []
    for i, arg in enumerate(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg == "--dump-ir" and (nxt is None or nxt not in (*_dump_stages(), "all")):
            arg = "--dump-ir=after-place"
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> None:
    argv = _normalize([str(a) for a in (sys.argv[1:] if argv is None else argv)])
    try:
        cli.main(args=argv, prog_name="coec", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
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


if __name__ == "__main__":
    main()
