"""What the CLI commands do, as plain functions (testable without a shell)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from coec.api import CompiledModel, flatten_outputs, to_numpy
from coec.backend.schedule import read_schedule, write_files_atomic
from coec.frontend.export import eval_mode
from coec.frontend.model_file import load_model_file
from coec.ir.errors import ConfigError, ExecutionError
from coec.outputs import check_bound, check_outputs, inputs_path, schedule_files, weights_path
from coec.pipeline import Options, compile_onnx_model, compile_program
from coec.runtime.executor import Executor


@dataclass
class CompileResult:
    report: dict
    dumps: dict[str, str]
    target_name: str
    model: CompiledModel


def compare(
    outputs: list[np.ndarray], reference: list[torch.Tensor] | list[np.ndarray]
) -> tuple[float, float]:
    """max |out - ref| over all outputs, absolute and relative to each output's scale.

    NaN or infinity where the reference is finite is an ExecutionError (it would otherwise
    vanish from the maximum); non-finite values in the same places on both sides are equal.
    """
    if len(outputs) != len(reference):
        raise ExecutionError(f"{len(outputs)} outputs, the reference gives {len(reference)}")
    abs_err, rel_err = 0.0, 0.0
    for i, (out, ref) in enumerate(zip(outputs, reference, strict=True)):
        ref_np = to_numpy(ref).astype(np.float64)
        out_np = np.asarray(out, dtype=np.float64)
        if out_np.shape != ref_np.shape:
            raise ExecutionError(f"output {i}: shape {out_np.shape}, the reference {ref_np.shape}")
        same = (np.isnan(out_np) & np.isnan(ref_np)) | (out_np == ref_np)  # inf == inf too
        bad = ~np.isfinite(out_np) & ~same
        if bad.any():
            where = tuple(int(k) for k in np.argwhere(bad)[0])
            raise ExecutionError(
                f"output {i} is {out_np[where]} at {where} where the reference is "
                f"{ref_np[where]} ({int(bad.sum())} such elements)"
            )
        finite = np.isfinite(ref_np) & np.isfinite(out_np)
        with np.errstate(invalid="ignore"):  # inf - inf where both are inf: masked out
            diff = float(np.max(np.abs(out_np - ref_np), initial=0.0, where=finite))
        scale = float(np.max(np.abs(ref_np), initial=0.0, where=np.isfinite(ref_np))) or 1.0
        abs_err, rel_err = max(abs_err, diff), max(rel_err, diff / scale)
    return abs_err, rel_err


def compile_model_file(
    path: str | Path,
    options: Options | None = None,
    *,
    entry: str | None = None,
    execute: bool = False,
    emulate_bf16: bool = False,
    output: Path | None = None,
    dump_points: tuple[str, ...] = (),
    inputs: Path | None = None,
    trace: Path | None = None,
    **overrides,
) -> CompileResult:
    """Compile MODEL.py, a model.onnx or df IR text (``.mlir``), dispatched on the suffix.

    ``options`` (or ``Options()``) with ``overrides`` (``Options`` fields) applied.
    """
    options = Options.of(options, **overrides)
    suffix = Path(path).suffix.lower()
    if suffix in (".onnx", ".mlir") and entry:
        raise ConfigError(f"--entry names a function of a MODEL.py, not of a {suffix} file")
    if suffix == ".onnx":
        return compile_onnx_file(
            path,
            options,
            inputs=inputs,
            execute=execute,
            emulate_bf16=emulate_bf16,
            output=output,
            dump_points=dump_points,
            trace=trace,
        )
    if inputs is not None:
        raise ConfigError("--inputs is for ONNX models; a MODEL.py defines example_inputs()")
    if suffix == ".mlir":
        if dump_points:
            raise ConfigError("--dump-ir on df IR text: run coec opt on it instead")
        return compile_ir_file(path, options, execute=execute, output=output, trace=trace)
    _check_outputs(output, trace, options, path)
    module, inputs = load_model_file(path, entry)
    compiled = compile_program(module, inputs, options, dump_points)
    cm = CompiledModel(compiled, emulate_bf16=emulate_bf16)
    report = dict(cm.report)
    if execute:
        outs, report = cm.executor.run([to_numpy(x) for x in inputs])
        outs = outs[len(compiled.program.mutated_inputs) :]  # new values of inputs written
        with torch.no_grad(), eval_mode(module):  # as compiled: in eval mode; on copies, as
            # the model may write its inputs in place and they are saved below
            reference = flatten_outputs(module(*(_copy(x) for x in inputs)))
        report["max_abs_err"], report["max_rel_err"] = compare(outs, reference)
    write_outputs(cm, report, output, inputs, trace)
    return CompileResult(report, compiled.dumps, compiled.target.name, cm)


def _copy(x):
    return x.clone() if isinstance(x, torch.Tensor) else x


def compile_onnx_file(
    path: str | Path,
    options: Options | None = None,
    *,
    inputs: Path | None = None,
    execute: bool = False,
    emulate_bf16: bool = False,
    output: Path | None = None,
    dump_points: tuple[str, ...] = (),
    trace: Path | None = None,
    **overrides,
) -> CompileResult:
    """Compile a model.onnx; with ``execute``, compare with onnxruntime on the same data.

    The data: ``inputs`` (.npz / .safetensors keyed by input name, which also fixes
    symbolic dims) or random data of the inputs' shapes from a fixed seed.
    """
    from coec.frontend.onnx_model import check_inputs, load_onnx, random_inputs, run_onnxruntime

    options = Options.of(options, **overrides)
    _check_outputs(output, trace, options, path, inputs)
    model, source = load_onnx(path)
    if inputs is not None:
        feeds = check_inputs(model, _read_tensors(Path(inputs)), str(inputs))
    else:  # count-only needs shapes, not data: none is invented for a count-only save
        feeds = random_inputs(model, data=execute)
    shapes = {k: v.shape for k, v in feeds.items()}
    compiled = compile_onnx_model(model, options, dump_points, shapes, source)
    cm = CompiledModel(compiled, emulate_bf16=emulate_bf16)
    report = dict(cm.report)
    ordered = [feeds[n] for n in compiled.program.input_names]
    if execute:
        outs, report = cm.executor.run(ordered)
        report["max_abs_err"], report["max_rel_err"] = compare(outs, run_onnxruntime(model, feeds))
        report["reference"] = "onnxruntime"
    data = None
    if output is not None and (execute or inputs is not None):  # real data: saved beside it
        data = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in ordered)
    write_outputs(cm, report, output, data, trace)
    return CompileResult(report, compiled.dumps, compiled.target.name, cm)


def compile_ir_file(
    path: str | Path,
    options: Options | None = None,
    *,
    execute: bool = False,
    output: Path | None = None,
    trace: Path | None = None,
    **overrides,
) -> CompileResult:
    """Compile df IR text (e.g. ``coec opt`` output) at any stage into a schedule, count-only."""
    from coec.opt import compile_ir

    if execute:
        raise ConfigError(f"{path}: df IR text carries no weights; it compiles count-only")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    options = Options.of(options, **overrides)
    _check_outputs(output, trace, options, path)
    compiled = compile_ir(path.read_text(), options, str(path))
    cm = CompiledModel(compiled)
    report = dict(cm.report)
    write_outputs(cm, report, output, None, trace, with_weights=False)
    return CompileResult(report, {}, compiled.target.name, cm)


def compile_zoo_model(
    name: str,
    options: Options | None = None,
    *,
    phase: str = "prefill",
    seq: int = 128,
    batch: int = 1,
    layers: int | None = None,
    execute: bool = False,
    output: Path | None = None,
    progress=None,
    trace: Path | None = None,
    **overrides,
) -> CompileResult:
    """Compile a zoo model by name; on the meta device (count-only) unless ``execute``.

    ``progress(done, total, what)`` (see ``coec.regional.Progress``) follows the
    steps: building the model, compiling it part by part and layer by layer,
    counting, and with ``execute`` running PyTorch and the runtime.
    """
    from coec.models.zoo import ZOO, instantiate
    from coec.regional import compile_zoo, shard_inputs, zoo_steps
    from coec.runtime.node import run_node_reports

    options = Options.of(options, **overrides)
    _check_outputs(output, trace, options)
    arch = ZOO.get(name)
    # before the model exists its layer count is the zoo's (or --layers)
    extra = 2 + (2 if execute else 0)  # build, count (+ reference, execute)
    total = extra + 5 + (layers or (arch.layers if arch else 1))

    def step(done: int, what: str) -> None:
        if progress:
            progress(done, total, what)

    device = "cpu" if execute else "meta"
    step(0, f"building {name}")
    inst = instantiate(name, phase, seq, batch, layers, device=device)
    total = extra + zoo_steps(inst)
    compiled = compile_zoo(inst, options, lambda done, _, what: step(1 + done, f"{name}: {what}"))
    done = 1 + zoo_steps(inst)
    step(done, f"{name}: counting")
    cm = CompiledModel(compiled)
    report = dict(cm.report)
    socket_reports = None  # one count, every socket's (SPMD), unless each socket ran
    inputs = (inst.ids, *inst.caches)
    if execute:
        step(done + 1, f"{name}: running PyTorch")
        with torch.no_grad():
            reference = flatten_outputs(inst.model(*inputs))
        step(done + 2, f"{name}: running the schedule")
        sockets = compiled.target.sockets
        if sockets == 1:
            outs, report = cm.executor.run([to_numpy(x) for x in inputs])
        else:  # every socket's shard; logits are whole on each, K/V split by head
            weights = [
                {k: to_numpy(v) for k, v in w.items()} for w in compiled.program.socket_weights
            ]
            feeds = [[to_numpy(x) for x in shard_inputs(inst, s, sockets)] for s in range(sockets)]
            per_socket, socket_reports = run_node_reports(compiled.schedule, weights, feeds)
            report = socket_reports[0]
            outs, reference = [per_socket[0][0]], reference[:1]
        report["max_abs_err"], report["max_rel_err"] = compare(outs, reference)
    step(total, f"{name}: done")
    write_outputs(cm, report, output, inputs if execute else None, trace, socket_reports)
    target = compiled.target
    name = target.name if target.sockets == 1 else f"{target.name} ({target.sockets} sockets)"
    return CompileResult(report, {}, name, cm)


def compile_hf_model(
    path: str | Path,
    options: Options | None = None,
    *,
    phase: str = "prefill",
    seq: int = 128,
    batch: int = 1,
    layers: int | None = None,
    execute: bool = False,
    output: Path | None = None,
    progress=None,
    trace: Path | None = None,
    **overrides,
) -> CompileResult:
    """Compile a transformers model from its config.json (or a model folder holding one):
    transformers' own class, built on the meta device (count-only) unless ``execute``
    (random weights, seed 0; the outputs and updated caches are compared with
    transformers'), each kind of layer compiled once (``coec.regional.compile_hf``)."""
    from coec.models.hf_config import HFModel, read_config, truncate
    from coec.regional import compile_hf, hf_steps

    options = Options.of(options, **overrides)
    _check_outputs(output, trace, options)
    config = read_config(path)
    if layers is not None:
        truncate(config, layers)
    device = "cpu" if execute else "meta"

    def step(done: int, total: int, what: str) -> None:
        if progress:
            progress(done, total, what)

    name = Path(path).stem if Path(path).is_file() else Path(path).name
    step(0, 1, f"building {name}")
    torch.manual_seed(0)
    hf = HFModel.of(config, name, device)
    total = 1 + hf_steps(hf) + 1 + (2 if execute else 0)
    compiled, whole, inputs = compile_hf(
        hf, phase, seq, batch, options, device, lambda d, _, what: step(1 + d, total, what)
    )
    done = 1 + hf_steps(hf)
    step(done, total, f"{name}: counting")
    cm = CompiledModel(compiled)
    report = dict(cm.report)
    if execute:
        step(done + 1, total, f"{name}: running transformers")
        copies = [x.clone() for x in inputs]
        with torch.no_grad():
            reference = flatten_outputs(whole(*copies))
        step(done + 2, total, f"{name}: running the schedule")
        names, mutated = compiled.program.input_names, compiled.program.mutated_inputs
        sockets = compiled.target.sockets
        if sockets == 1:
            outs, report = cm.executor.run([to_numpy(x) for x in inputs])
        else:  # every socket its shard of each input; the caches joined from their parts
            outs, report = _run_sockets(compiled, inputs)
        # the model's outputs, then each cache as the step left it (written in place)
        reference += [copies[names.index(m)] for m in mutated]
        outs = [*outs[len(mutated) :], *outs[: len(mutated)]]
        report["max_abs_err"], report["max_rel_err"] = compare(outs, reference)
    step(total, total, f"{name}: done")
    write_outputs(cm, report, output, inputs if execute else None, trace, None)
    return CompileResult(report, {}, compiled.target.name, cm)


def compile_hf_config(
    config,
    options: Options | None = None,
    *,
    phase: str = "prefill",
    seq: int = 128,
    batch: int = 1,
    layers: int | None = None,
    execute: bool = False,
    **overrides,
) -> CompiledModel:
    """Compile a transformers model from its config: a config.json path, a model folder
    holding one, or the name of a config coec ships (``coec.models.hf_config``).

    transformers' own class is built on the meta device (count-only: ``report`` holds the
    figures) unless ``execute`` (random weights, seed 0, run and compared with
    transformers: ``report["max_abs_err"]``); each kind of layer is compiled once.
    ``options`` / ``overrides`` as :func:`compile` (``target``, ``sockets``, ``fusion``...).
    """
    result = compile_hf_model(
        config,
        options,
        phase=phase,
        seq=seq,
        batch=batch,
        layers=layers,
        execute=execute,
        **overrides,
    )
    result.model.report = result.report
    return result.model


def _run_sockets(compiled, inputs) -> tuple[list[np.ndarray], dict]:
    """Run a sharded schedule on every socket: each input cut to the socket's shape (the
    function's argument types say how), the outputs whole, the inputs written in place
    joined from the sockets' parts."""
    from coec.passes.sharding import join_parts, layout_between, slice_for
    from coec.runtime.node import run_node_reports

    fn, sockets = compiled.program.func, compiled.target.sockets
    layouts = [
        layout_between(tuple(x.shape), a.type.shape_tuple)
        for x, a in zip(inputs, fn.body.block.args, strict=True)
    ]
    feeds = [
        [
            np.ascontiguousarray(slice_for(to_numpy(x), lay, s, sockets))
            for x, lay in zip(inputs, layouts, strict=True)
        ]
        for s in range(sockets)
    ]
    weights = [{k: to_numpy(v) for k, v in w.items()} for w in compiled.program.socket_weights]
    per_socket, reports = run_node_reports(compiled.schedule, weights, feeds)
    names, mutated = compiled.program.input_names, compiled.program.mutated_inputs
    outs = [
        join_parts([o[i] for o in per_socket], layouts[names.index(m)])
        for i, m in enumerate(mutated)
    ]
    return outs + per_socket[0][len(mutated) :], reports[0]


def write_outputs(
    cm: CompiledModel,
    report: dict,
    output: Path | None,
    inputs: tuple | None,
    trace: Path | None,
    socket_reports: list[dict] | None = None,
    with_weights: bool = True,
) -> None:
    """Write a compile's schedule (with its weights and ``inputs``) and trace as one
    transaction; an earlier save's weights or inputs that no longer apply are removed.
    ``socket_reports`` (each socket's, when each ran) give the trace's processes."""
    from coec.report.trace import schedule_trace

    files: dict[Path, bytes | str] = {}
    stale: list[Path] = []
    if output is not None:
        if with_weights:
            files, stale = cm.files(output, inputs)
        else:  # text IR names its weights but holds none: the schedule alone
            files = {Path(output): cm.schedule_json()}
            stale = schedule_files(output)[1:]
    if trace is not None:
        files[Path(trace)] = schedule_trace(report, cm.schedule, socket_reports)
    if files:
        write_files_atomic(files, remove=stale)


def _check_outputs(output: Path | None, trace: Path | None, options: Options, *inputs) -> None:
    """Before any work: no file a compile writes may be one it reads (model, data, target)."""
    t = options.target
    target = Path(t) if isinstance(t, str | Path) and str(t).endswith(".toml") else None
    check_outputs([*schedule_files(output), trace], [*inputs, target])


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        from safetensors.torch import load_file

        return {k: to_numpy(v) for k, v in load_file(str(path)).items()}
    except Exception as e:
        raise ConfigError(f"{path}: cannot read tensors ({type(e).__name__}: {e})") from e


@dataclass
class RunResult:
    report: dict
    outputs: dict[str, np.ndarray]
    schedule: dict  # the schedule file's JSON, as read


def run_schedule_file(
    path: Path, inputs: Path | None = None, *, count_only: bool = False, emulate_bf16: bool = False
) -> RunResult:
    """Run a saved schedule (read and checked once) on its weights and inputs, or count-only."""
    text, data, schedule = read_schedule(path)
    if count_only:
        _, report = Executor(schedule, count_only=True).run()
        return RunResult(report, {}, data)
    sockets = schedule.target.sockets
    if sockets > 1:  # one executor has one socket's weights and no peers to all-reduce with
        raise ConfigError(
            f"{path}: a schedule for {sockets} sockets runs from a file count-only "
            "(--count-only); compile it with --run to execute it on every socket"
        )
    siblings = [weights_path(path)] + ([inputs_path(path)] if inputs is None else [])
    for sibling in siblings:
        if sibling.is_file():  # a missing one is named by _read_tensors below
            check_bound(sibling, text, path)
    weights = _read_tensors(weights_path(path))
    if inputs is None and not inputs_path(path).is_file():
        raise ConfigError(
            f"{path}: no inputs saved beside it (compiled count-only): give --inputs FILE, "
            "or run it --count-only"
        )
    feeds = _read_tensors(inputs or inputs_path(path))
    missing = [n for n in schedule.inputs if n not in feeds]
    if missing:
        raise ConfigError(f"input {missing[0]!r} is not in {inputs or inputs_path(path)}")
    executor = Executor(schedule, weights, emulate_bf16=emulate_bf16)
    outs, report = executor.run([feeds[n] for n in schedule.inputs])
    return RunResult(report, dict(zip(schedule.outputs, outs, strict=True)), data)


def explain_model(
    model_file: str | Path | None,
    zoo: str | None,
    options: Options,
    *,
    phase: str = "prefill",
    seq: int = 128,
    batch: int = 1,
    entry: str | None = None,
) -> tuple[list, float]:
    """``coec explain``: each part's dataflow partition and why its boundaries are there,
    and the target's clock (for the times)."""
    from coec.explain import explain_program
    from coec.frontend.export import export_module
    from coec.frontend.lower import lower_program

    options = options.normalized()
    target = options.resolve_target()
    if zoo is not None:
        from coec.models.zoo import instantiate
        from coec.regional import zoo_parts

        inst = instantiate(zoo, phase, seq, batch, device="meta")
        parts = [
            (name, lower_program(export_module(module.eval(), inputs), options.dtype))
            for name, module, inputs in zoo_parts(inst, target.sockets)
        ]
    else:
        path = Path(model_file)
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        if path.suffix == ".onnx":
            from coec.frontend.onnx_import import import_onnx
            from coec.frontend.onnx_model import load_onnx, random_inputs

            model, source = load_onnx(path)
            shapes = {k: v.shape for k, v in random_inputs(model, data=False).items()}
            parts = [(path.name, import_onnx(model, options.dtype, shapes, source))]
        else:
            from coec.frontend.model_file import load_model_file

            module, inputs = load_model_file(path, entry)
            parts = [(path.name, lower_program(export_module(module, inputs), options.dtype))]
    explained = [
        explain_program(program, target, name, options.search_limit) for name, program in parts
    ]
    return explained, target.compute.clock_hz
