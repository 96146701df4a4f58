"""The ``coec`` command line: every failure is one ``coec: error: ...`` line and a non-zero exit.

Most cases call ``coec.cli.main(argv)`` in-process; one runs the real ``python -m coec.cli``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
from torch import nn

import coec
from coec.cli import main

ROOT = Path(__file__).resolve().parent.parent
MLP = str(ROOT / "examples" / "mlp.py")
SN40L = (resources.files("coec.backend") / "targets" / "sn40l.toml").read_text()
TIERS = {"sram", "hbm", "ddr"}

UNSUPPORTED_MODEL = """\
import torch
from torch import nn


class M(nn.Module):
    def forward(self, x):
        y = x * 2
        return torch.sort(y, 0).values


def model():
    return M()


def example_inputs():
    return (torch.randn(4, 8),)
"""


@pytest.fixture(autouse=True)
def _no_traceback_env(monkeypatch):
    monkeypatch.delenv("COEC_TRACEBACK", raising=False)


def call(argv: list[str]) -> int:
    """Run the CLI in-process; its exit code (0 when it returns normally)."""
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        return 0 if e.code is None else e.code
    return 0


def run_ok(argv: list[str], capsys) -> str:
    code = call(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    return out


def one_error(argv: list[str], capsys, *needles: str, code: int | None = None) -> str:
    """Run a failing command; check the exit code and the single stderr line; return it."""
    exit_code = call(argv)
    out, err = capsys.readouterr()
    assert exit_code != 0
    if code is not None:
        assert exit_code == code, err
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("coec: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def line_of(source: str, text: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


@pytest.fixture(scope="module")
def mlp_saved(tmp_path_factory) -> tuple[dict, Path]:
    """``coec compile examples/mlp.py --run --json -o DIR/s.json``: its report and schedule path."""
    schedule = tmp_path_factory.mktemp("mlp") / "s.json"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = call(["compile", MLP, "--run", "--json", "-o", schedule])
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue()), schedule


# -- model file errors --------------------------------------------------------------------


def test_missing_model_file(tmp_path, capsys):
    path = tmp_path / "nope.py"
    one_error(["compile", path], capsys, "nope.py", "no such", code=coec.ConfigError.exit_code)


def test_model_file_with_syntax_error(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("import torch\n\n\ndef model(:\n    return None\n")
    one_error(["compile", path], capsys, "broken.py:4", "syntax error", code=2)


def test_model_file_without_model_function(tmp_path, capsys):
    path = tmp_path / "nomodel.py"
    path.write_text("import torch\n\n\ndef example_inputs():\n    return (torch.randn(2),)\n")
    one_error(["compile", path], capsys, "nomodel.py", "model()", code=2)


def test_model_file_raising_at_import(tmp_path, capsys):
    path = tmp_path / "raises.py"
    path.write_text("import torch\n\nx = 1\nraise RuntimeError('boom')\n")
    one_error(["compile", path], capsys, "raises.py:4", "boom", code=2)


def test_unsupported_op_names_op_and_user_line(tmp_path, capsys):
    path = tmp_path / "model.py"
    path.write_text(UNSUPPORTED_MODEL)
    lineno = line_of(UNSUPPORTED_MODEL, "torch.sort")
    one_error(
        ["compile", path],
        capsys,
        "sort",
        f"model.py:{lineno}",
        code=coec.UnsupportedOpError.exit_code,
    )


def test_failed_compile_leaves_existing_output_untouched(tmp_path, capsys):
    model = tmp_path / "model.py"
    model.write_text(UNSUPPORTED_MODEL)
    out = tmp_path / "out.json"
    out.write_text("precious\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    one_error(["compile", model, "-o", out], capsys, "sort")
    assert out.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no sidecars, no temp files


def test_outputs_get_the_mode_open_would_give_and_replaced_files_keep_theirs(tmp_path):
    from coec.backend.schedule import write_files_atomic

    umask = os.umask(0o022)
    try:
        kept = tmp_path / "kept.json"
        kept.write_text("old")
        kept.chmod(0o640)
        write_files_atomic({tmp_path / "new.json": "{}", kept: "{}"})
    finally:
        os.umask(umask)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644
    assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_text() == "{}"


def test_save_with_constants_sharing_memory(tmp_path):
    """Exported constants that are views of one tensor (HF's RoPE tables) still save."""

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("t", torch.arange(8.0), persistent=False)

        def forward(self, x):  # two folded constants, views of one buffer
            return x * self.t.unsqueeze(0) + torch.tanh(x) * self.t.unsqueeze(0)

    x = torch.randn(4, 8)
    cm = coec.compile(Shared(), (x,))
    cm.save(tmp_path / "s.json", (x,))
    from safetensors.torch import load_file

    saved = sorted(t.tolist() for t in load_file(tmp_path / "s.weights.safetensors").values())
    assert saved == [[list(range(8))], [list(range(8))]]


def test_run_and_count_only_exclude_each_other(capsys):
    one_error(["compile", MLP, "--run", "--count-only"], capsys, "--run", "--count-only", code=2)


def test_unknown_dump_ir_stage(capsys):
    one_error(["compile", MLP, "--dump-ir=bogus"], capsys, "bogus", code=2)


# -- target file errors -------------------------------------------------------------------


def _edit(old: str, new: str) -> str:
    assert old in SN40L, f"test edit {old!r} no longer matches sn40l.toml"
    return SN40L.replace(old, new, 1)


BAD_TARGETS = {
    "not toml": ("this is [[ not toml\n", ["not valid TOML"]),
    "missing key": (
        _edit("bandwidth_GBps = { value = 1800", "# bandwidth removed = { value = 1800"),
        ["memory.hbm", "bandwidth_GBps"],
    ),
    "unknown key": (_edit("[compute]\n", "[compute]\nfrobs = 3\n"), ["compute", "frobs"]),
    "negative number": (
        _edit("bandwidth_GBps = { value = 200", "bandwidth_GBps = { value = -200"),
        ["memory.ddr", "bandwidth_GBps", "-200"],
    ),
    "bad launch mode": (_edit('mode = "software"', 'mode = "turbo"'), ["mode", "turbo"]),
}


@pytest.mark.parametrize("case", sorted(BAD_TARGETS))
def test_malformed_target_file(tmp_path, capsys, case):
    text, needles = BAD_TARGETS[case]
    target = tmp_path / "bad.toml"
    target.write_text(text)
    one_error(["compile", MLP, "--target", target], capsys, "bad.toml", *needles, code=2)


def test_missing_target_file(tmp_path, capsys):
    one_error(["compile", MLP, "--target", tmp_path / "gone.toml"], capsys, "gone.toml", code=2)


def test_unknown_target_name(capsys):
    one_error(["compile", MLP, "--target", "sn99"], capsys, "sn99", "sn40l", code=2)


# -- schedule file errors -----------------------------------------------------------------


def test_run_schedule_not_json(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text("{ not json")
    one_error(["run", path], capsys, "s.json", "not valid JSON", code=6)


def test_run_schedule_wrong_format(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"format": "something/else", "kernels": []}))
    one_error(["run", path], capsys, "s.json", "something/else", code=6)


def test_run_schedule_not_an_object(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text("[1, 2, 3]")
    one_error(["run", path], capsys, "s.json", code=coec.ScheduleFormatError.exit_code)


def test_run_missing_schedule(tmp_path, capsys):
    one_error(["run", tmp_path / "absent.json"], capsys, "absent.json", code=6)


def test_run_schedule_with_unknown_buffer(tmp_path, capsys, mlp_saved):
    _, saved = mlp_saved
    schedule = json.loads(saved.read_text())
    kernel = schedule["kernels"][0]
    kernel["loads"][0]["buffer"] = "no_such_buffer"
    path = tmp_path / "s.json"
    path.write_text(json.dumps(schedule))
    one_error(["run", path], capsys, "s.json", "no_such_buffer", kernel["name"], code=6)


def test_run_schedule_without_its_weights(tmp_path, capsys, mlp_saved):
    _, saved = mlp_saved
    path = tmp_path / "s.json"
    path.write_text(saved.read_text())  # the .weights/.inputs sidecars are not copied
    one_error(["run", path], capsys, "s.weights.safetensors", code=2)


# -- the real process ---------------------------------------------------------------------


def test_console_script_exit_code_and_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COEC_TRACEBACK"}
    proc = subprocess.run(
        [sys.executable, "-m", "coec.cli", "compile", str(tmp_path / "missing.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode != 0
    assert proc.returncode == coec.ConfigError.exit_code
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("coec: error: ")
    assert "missing.py" in lines[0]
    assert proc.stdout == ""


# -- successful runs ----------------------------------------------------------------------


def test_compile_run_json_report(mlp_saved):
    report, _ = mlp_saved
    for key in ("kernels", "flops", "cycles", "seconds", "bytes", "peak_bytes", "max_abs_err"):
        assert key in report
    assert report["kernels"] > 0 and report["flops"] > 0
    assert report["cycles"] > 0 and report["seconds"] > 0
    assert report["bytes"] and all(
        re.fullmatch(r"(sram|hbm|ddr)->(sram|hbm|ddr)", pair) for pair in report["bytes"]
    )
    assert report["bytes"]["hbm->sram"] > 0
    assert set(report["peak_bytes"]) == TIERS
    # bf16 storage is only counted; NumPy computes in fp32 without --emulate-bf16
    assert 0 <= report["max_abs_err"] < 1e-3


def test_saved_schedule_runs_with_the_same_counts(mlp_saved, capsys):
    report, schedule = mlp_saved
    assert schedule.is_file()
    assert schedule.with_suffix(".weights.safetensors").is_file()
    assert schedule.with_suffix(".inputs.safetensors").is_file()
    ran = json.loads(run_ok(["run", schedule, "--json"], capsys))
    for key in ("kernels", "bytes", "flops", "cycles", "peak_bytes"):
        assert ran[key] == report[key], key
    counted = json.loads(run_ok(["run", schedule, "--count-only", "--json"], capsys))
    for key in ("bytes", "flops", "cycles"):
        assert counted[key] == report[key], key


def test_dump_ir_after_placement(capsys):
    out = run_ok(["compile", MLP, "--dump-ir"], capsys)
    assert "df.kernel" in out
    assert "!df.tensor<" in out
    assert re.search(r"!df\.tensor<[^>]*, hbm>", out)


def test_dump_ir_frontend(capsys):
    out = run_ok(["compile", MLP, "--dump-ir=frontend"], capsys)
    assert "!df.tensor<" in out
    assert "df.kernel" not in out


def test_tiny_hbm_spills_to_ddr(tmp_path, capsys):
    target = tmp_path / "tiny_hbm.toml"
    target.write_text(
        _edit(
            'capacity_GiB = { value = 64, source = "arXiv:2405.07518 Table II" }',
            'capacity_GiB = { value = 0.00001, source = "test" }',
        )
    )
    report = json.loads(run_ok(["compile", MLP, "--target", target, "--json"], capsys))
    assert report["bytes"].get("ddr->sram", 0) > 0
    assert report["peak_bytes"]["ddr"] > 0
    assert report["peak_bytes"]["hbm"] <= int(0.00001 * 2**30)


def test_targets_command(capsys):
    out = run_ok(["targets"], capsys)
    names = [line.split(":")[0] for line in out.splitlines()]
    assert names == sorted(names) and {"sn40l", "sn40l-node", "dgx-a100", "dgx-h100"} <= set(names)


# -- regressions: bugs found by review, fixed -------------------------------------------


def _corrupt(schedule: dict, case: str) -> None:
    first_buffer = next(iter(schedule["buffers"].values()))
    load = schedule["kernels"][0]["loads"][0]
    if case == "kernels not a list":
        schedule["kernels"] = 5
    elif case == "buffer without shape":
        del first_buffer["shape"]
    elif case == "buffer of unknown dtype":
        first_buffer["dtype"] = "int3"
    elif case == "target without compute":
        del schedule["target"]["compute"]
    elif case == "DMA box outside its buffer":
        load["box"] = [[0, 999]] + load["box"][1:]
    elif case == "DMA from an unknown tier":
        load["src"] = "flash"


@pytest.mark.parametrize(
    "case",
    [
        "kernels not a list",
        "buffer without shape",
        "buffer of unknown dtype",
        "target without compute",
        "DMA box outside its buffer",
        "DMA from an unknown tier",
    ],
)
def test_run_corrupt_schedule_is_a_format_error(tmp_path, capsys, mlp_saved, case):
    _, saved = mlp_saved
    schedule = json.loads(saved.read_text())
    _corrupt(schedule, case)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(schedule))
    for suffix in (".weights.safetensors", ".inputs.safetensors"):
        path.with_suffix(suffix).write_bytes(saved.with_suffix(suffix).read_bytes())
    one_error(["run", path], capsys, "s.json", code=coec.ScheduleFormatError.exit_code)


def test_output_under_a_regular_file_is_a_config_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    one_error(["compile", MLP, "-o", tmp_path / "afile" / "s.json"], capsys, "afile", code=2)


def test_an_infinite_mask_saves_as_strict_json_and_runs_from_disk(tmp_path):
    """``masked_fill(mask == 0, float('-inf'))`` (nanoGPT's causal mask): the schedule is
    strict JSON (``"-inf"``, not ``-Infinity``) and the saved schedule computes the same."""
    from coec.commands import run_schedule_file

    class Masked(nn.Module):
        def forward(self, x):
            mask = torch.ones(4, 4).tril()
            return torch.softmax(x.masked_fill(mask == 0, float("-inf")), -1)

    x = torch.randn(2, 4, 4)
    cm = coec.compile(Masked(), (x,), dtype="fp32")
    cm.save(tmp_path / "s.json", (x,))

    def refuse(name):
        raise AssertionError(f"{name} in the schedule")

    json.loads((tmp_path / "s.json").read_text(), parse_constant=refuse)
    outputs = run_schedule_file(tmp_path / "s.json", None).outputs
    (out,) = outputs.values()
    torch.testing.assert_close(torch.from_numpy(out), Masked()(x))


# -- a consistent CLI ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["compile", MLP],
        ["coe", "compile", str(ROOT / "examples" / "coe.toml")],
        ["coe", "serve", str(ROOT / "examples" / "coe.toml"), "--synthetic", "2"],
        ["coe", "router-cost"],
    ],
)
def test_fusion_is_a_choice_everywhere(capsys, argv):
    one_error([*argv, "--fusion", "fused"], capsys, "--fusion", "'fused'", "dataflow", code=2)


def test_fusion_choices_are_the_fusion_passes_policies():
    from coec.cli import FUSION_POLICIES
    from coec.passes.fusion import POLICIES

    assert FUSION_POLICIES == POLICIES


def test_default_fusion_is_the_best_the_target_runs():
    from coec.dynamo import _options
    from coec.pipeline import Options

    assert Options().normalized().fusion == "dataflow"
    assert Options(target="sn40l-node").normalized().fusion == "dataflow"
    assert Options(target="dgx-h100").normalized().fusion == "epilogue"
    assert Options(target="dgx-a100", fusion="none").normalized().fusion == "none"
    assert _options({})[0].fusion == "dataflow"  # the torch.compile backend's default
    assert _options({"target": "dgx-h100"})[0].fusion == "epilogue"
    model, x = nn.Linear(8, 4).eval(), torch.randn(2, 8)
    assert coec.compile(model, (x,)).schedule["options"]["fusion"] == "dataflow"


@pytest.mark.parametrize(("target", "fusion"), [("sn40l", "dataflow"), ("dgx-h100", "epilogue")])
def test_cli_default_fusion_per_target_kind(capsys, target, fusion):
    argv = ["compile", MLP, "--target", target, "--sockets", "1"]
    report = json.loads(run_ok([*argv, "--json"], capsys))
    assert report["fusion"] == fusion and report["target"] == target
    assert f"fusion {fusion} " in run_ok(argv, capsys).splitlines()[0]


def test_fusion_none_is_the_baseline_asked_for(capsys):
    fused = json.loads(run_ok(["compile", MLP, "--json"], capsys))
    unfused = json.loads(run_ok(["compile", MLP, "--fusion", "none", "--json"], capsys))
    assert unfused["fusion"] == "none" and unfused["kernels"] == 5 > fused["kernels"]


def test_trace_writes_a_trace_and_requests_are_read_with_requests(tmp_path, capsys):
    coe_toml = str(ROOT / "examples" / "coe.toml")
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"prompt": "hi"}\n')
    one_error(["coe", "serve", coe_toml, "--trace", requests], capsys, "--trace", code=2)
    help_text = run_ok(["coe", "serve", "--help"], capsys)
    assert "--requests FILE" in help_text and "--trace" not in help_text
    # --skew and --seed draw synthetic requests: not with a request file
    argv = ["coe", "serve", coe_toml, "--requests", requests]
    one_error([*argv, "--skew", "1.2"], capsys, "--skew", "--requests", code=2)
    one_error([*argv, "--synthetic", "3"], capsys, "--requests", "--synthetic", code=2)
    for command in (["compile"], ["run"]):
        assert "Perfetto" in run_ok([*command, "--help"], capsys)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        ([MLP, "--phase", "prefill"], "--phase"),  # given, even at its default value
        ([MLP, "--seq", "64"], "--seq"),
        ([MLP, "--batch", "2"], "--batch"),
        ([MLP, "--layers", "1"], "--layers"),
        (["m.onnx", "--entry", "f"], "--entry"),
        (["--zoo", "tiny-llama", "--entry", "f"], "--entry"),
        ([MLP, "--inputs", "x.npz"], "--inputs"),
        (["--zoo", "tiny-llama", "--inputs", "x.npz"], "--inputs"),
        (["--zoo", "tiny-llama", "--dump-ir"], "--dump-ir"),
        (["--zoo", "tiny-llama", "--run", "--emulate-bf16"], "--emulate-bf16"),
        ([MLP, "--emulate-bf16"], "--emulate-bf16"),
        ([MLP, "--json", "--all-kernels"], "--all-kernels"),
        ([MLP, "--dump-ir", "--all-kernels"], "--all-kernels"),
    ],
)
def test_an_option_that_does_not_apply_is_an_error(capsys, argv, option):
    one_error(["compile", *argv], capsys, option, code=coec.ConfigError.exit_code)


def test_run_options_that_need_data_are_errors_when_count_only(capsys, mlp_saved):
    _, saved = mlp_saved
    one_error(["run", saved, "--count-only", "--emulate-bf16"], capsys, "--emulate-bf16", code=2)
    one_error(["run", saved, "--count-only", "--inputs", "x.npz"], capsys, "--inputs", code=2)


def test_json_and_dump_ir_exclude_each_other(capsys):
    one_error(["compile", MLP, "--json", "--dump-ir"], capsys, "--dump-ir", "--json", code=2)


#: the report keys (and the metadata) of ``coec compile --json`` and ``coec run --json``
REPORT_KEYS = {"kernels", "flops", "cycles", "seconds", "bytes", "peak_bytes", "per_kernel"}
ABOUT_KEYS = {"format", "model", "target", "sockets", "fusion", "launch", "dtype", "executed"}


def test_json_report_says_what_it_describes(mlp_saved, capsys):
    report, saved = mlp_saved
    assert ABOUT_KEYS | REPORT_KEYS | {"max_abs_err", "per_socket", "per_node"} <= set(report)
    assert report["format"] == "coec.report/1" and report["model"] == MLP
    assert (report["target"], report["sockets"], report["fusion"]) == ("sn40l", 1, "dataflow")
    assert (report["launch"], report["dtype"], report["executed"]) == ("software", "bf16", True)
    assert set(report["per_socket"]) | set(report["per_node"]) == (
        REPORT_KEYS | {"max_abs_err", "max_rel_err"}
    )
    assert "per_kernel" in report["per_socket"] and "seconds" in report["per_node"]
    # a saved schedule describes itself the same way
    ran = json.loads(run_ok(["run", saved, "--count-only", "--json"], capsys))
    assert ran["format"] == "coec.report/1" and ran["model"] == str(saved)
    assert {k: ran[k] for k in ("target", "fusion", "launch", "sockets")} == {
        k: report[k] for k in ("target", "fusion", "launch", "sockets")
    }
    assert ran["executed"] is False and "max_abs_err" not in ran["per_node"]


def test_json_report_of_a_sharded_zoo_model(capsys):
    argv = ["compile", "--zoo", "tiny-llama", "--phase", "decode", "--seq", "32", "--sockets", "2"]
    report = json.loads(run_ok([*argv, "--launch", "hardware", "--json"], capsys))
    assert (report["model"], report["sockets"], report["launch"]) == ("tiny-llama", 2, "hardware")
    assert (report["phase"], report["seq"], report["batch"]) == ("decode", 32, 1)
    assert report["bytes"]["sram->p2p"] > 0 and "bytes" in report["per_socket"]


def test_zoo_and_targets_take_json(capsys):
    from coec.models.zoo import ZOO

    zoo = json.loads(run_ok(["zoo", "--json"], capsys))
    assert [m["name"] for m in zoo] == list(ZOO)
    assert all(m["params"] == ZOO[m["name"]].params() for m in zoo)
    targets = {t["name"]: t for t in json.loads(run_ok(["targets", "--json"], capsys))}
    assert {"sn40l", "sn40l-node", "dgx-a100", "dgx-h100"} <= set(targets)
    assert targets["dgx-h100"]["fusion_policies"] == ["none", "epilogue"]
    assert targets["sn40l-node"]["sockets"] == 8


@pytest.mark.parametrize("argv", [[], ["coe"], ["bench"]])
def test_a_bare_command_prints_its_usage(capsys, argv):
    out = run_ok(argv, capsys)
    assert out.startswith(f"Usage: coec {' '.join(argv)}".rstrip() + " [OPTIONS] COMMAND")
    assert "Commands:" in out


def test_the_cli_prints_what_the_report_code_renders():
    source = (ROOT / "compiler" / "cli.py").read_text()
    assert "rich.table" not in source and "Table(" not in source


def test_coe_compile_json_says_what_it_describes(capsys):
    argv = ["coe", "compile", str(ROOT / "examples" / "coe.toml"), "--target", "sn40l", "--json"]
    out = json.loads(run_ok(argv, capsys))
    assert out["format"] == "coec.coe-placement/1" and out["coe"] == "tiny-coe"
    assert (out["target"], out["sockets"], out["fusion"]) == ("sn40l", 1, "dataflow")
    assert out["placement"]["node"] == "sn40l" and out["experts"] == 5
