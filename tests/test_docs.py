"""The docs stay true: the CLI reference is generated from the CLI, the tutorial's commands
run and print what it shows, and the target and schedule references name every key the code
reads or writes, with examples checked against what coec really does."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import tomllib

import pytest
from conftest import ROOT, load_example


def test_cli_reference_is_current():
    gen = runpy.run_path(str(ROOT / "docs" / "gen_cli_reference.py"))
    assert (ROOT / "docs" / "cli.md").read_text() == gen["reference"](), (
        "docs/cli.md is out of date: run python docs/gen_cli_reference.py"
    )


# -- the tutorial runs as written ---------------------------------------------------------
def _blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", markdown, flags=re.S | re.M)


def _pattern(expected: str) -> re.Pattern:
    """An expected output line: whitespace-insensitive, ``...`` matches anything."""
    parts = [re.escape(p) for p in " ".join(expected.split()).split("...")]
    return re.compile(".*".join(parts))


def _console_steps(body: str) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif line.strip():
            steps[-1][1].append(line)
    return steps


def _check_output(command: str, expected: list[str], output: str) -> None:
    """Each expected line matches a whole output line, in order (``...`` alone skips lines)."""
    lines = [" ".join(line.split()) for line in output.splitlines()]
    at = 0
    for want in expected:
        if want.strip() == "...":
            continue
        pattern = _pattern(want)
        while at < len(lines) and not pattern.fullmatch(lines[at]):
            at += 1
        assert at < len(lines), f"`{command}`: no line matches {want!r} (in order) in:\n{output}"
        at += 1


def _cli(argv: list[str]) -> int:
    """``coec ARGS`` in-process: its exit code."""
    from coec.cli import main

    assert argv[0] == "coec", argv
    try:
        main(argv[1:])
    except SystemExit as e:
        return e.code or 0
    return 0


def test_tutorial_runs_as_written(tmp_path, monkeypatch, capsys):

    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    markdown = (ROOT / "docs" / "tutorial.md").read_text()
    namespace: dict = {}
    ran = 0
    for language, body in _blocks(markdown):
        if language == "console":
            for command, expected in _console_steps(body):
                argv = shlex.split(command)
                assert argv[0] == "coec", command
                code = _cli(argv)
                out, err = capsys.readouterr()
                assert code == 0, f"`{command}` failed: {err}"
                _check_output(command, expected, out)
                ran += 1
        elif language == "python" and "def model()" not in body:
            exec(compile(body, "docs/tutorial.md", "exec"), namespace)
            ran += 1
    assert ran >= 10
    assert (tmp_path / "out" / "plots" / "roofline.png").read_bytes()[:4] == b"\x89PNG"


def test_tutorial_shows_the_example_as_it_is():
    """The model-file excerpt in the tutorial is a verbatim slice of examples/hf_llama.py."""
    markdown = (ROOT / "docs" / "tutorial.md").read_text()
    excerpt = next(b for lang, b in _blocks(markdown) if lang == "python" and "def model()" in b)
    assert excerpt.strip() in (ROOT / "examples" / "hf_llama.py").read_text()


# -- the target-file reference ------------------------------------------------------------
def _keys(table: dict, prefix: str = "") -> set[str]:
    """Every key path of a target file, ``{value, source}`` tables counted as their key."""
    keys = set()
    for k, v in table.items():
        if isinstance(v, dict) and not set(v) <= {"value", "source"}:
            has_leaves = any(not isinstance(x, dict) or "value" in x for x in v.values())
            keys |= ({f"{prefix}{k}"} if has_leaves else set()) | _keys(v, f"{prefix}{k}.")
        else:
            keys.add(f"{prefix}{k}")
    return keys


def test_target_reference_describes_every_shipped_key():
    page = (ROOT / "docs" / "targets.md").read_text()
    documented = set(re.findall(r"`([A-Za-z0-9_]+)`", page)) | set(
        re.findall(r"\[([a-z.]+)\]", page)
    )
    for path in sorted((ROOT / "backend" / "targets").glob("*.toml")):
        for key in _keys(tomllib.loads(path.read_text())):
            leaf = key.rsplit(".", 1)[-1]
            assert leaf in documented or key in documented, f"{path.name}: {key} not in targets.md"


def test_target_reference_example_compiles_and_its_error_is_real(tmp_path, monkeypatch, capsys):
    from coec.commands import compile_zoo_model

    page = (ROOT / "docs" / "targets.md").read_text()
    example = next(b for lang, b in _blocks(page) if lang == "toml" and "format =" in b)
    (tmp_path / "sn40l-fast-hbm.toml").write_text(example)
    monkeypatch.chdir(tmp_path)
    command = next(b for lang, b in _blocks(page) if lang == "bash" and "fast-hbm" in b)
    assert _cli(shlex.split(command)) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "target sn40l-fast-hbm" in out

    # doubling HBM bandwidth must help a decode, which streams its weights from HBM
    kw = dict(phase="decode", seq=4096, layers=2, fusion="dataflow", launch="hardware")
    fast = compile_zoo_model("llama2-7b", target="sn40l-fast-hbm.toml", **kw).report
    base = compile_zoo_model("llama2-7b", target="sn40l", **kw).report
    assert fast["bytes"] == base["bytes"] and fast["cycles"] < 0.8 * base["cycles"]

    # the error shown on the page is what a misspelt key gives
    console = next(b for lang, b in _blocks(page) if lang == "console")
    (command, [shown]) = _console_steps(console)[0]
    (tmp_path / "chip.toml").write_text(
        example.replace("bandwidth_GBps = { value = 3600", "bandwidth_GBs = { value = 3600")
    )
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    assert _cli(shlex.split(command)) == 2
    assert capsys.readouterr().err.strip() == shown


# -- the schedule-format reference --------------------------------------------------------
#: schedule fields whose keys are names (buffers, values, tier pairs...), not format keys
_NAME_MAPS = {"buffers", "values", "constants", "attrs", "bytes", "peak_bytes", "memory"}


def _schedule_keys(node, parent: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if parent not in _NAME_MAPS:
                keys.add(k)
            keys |= _schedule_keys(v, k if parent not in _NAME_MAPS else "")
    elif isinstance(node, list):
        for v in node:
            keys |= _schedule_keys(v, parent)
    return keys


@pytest.fixture(scope="module")
def mlp_schedule(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlp") / "mlp.json"
    mlp = str(ROOT / "examples" / "mlp.py")
    assert _cli(["coec", "compile", mlp, "--fusion", "none", "-o", str(path)]) == 0
    return path


def test_schedule_reference_names_every_key_the_backend_writes(mlp_schedule):
    import coec
    from coec.commands import compile_zoo_model

    page = (ROOT / "docs" / "schedule.md").read_text()
    documented = set(re.findall(r"`([A-Za-z0-9_]+)`", page))
    llama, inputs = load_example("llama_block")
    schedules = {
        "mlp": json.loads(mlp_schedule.read_text()),
        "llama_block dataflow": coec.compile(llama, inputs, fusion="dataflow").schedule,
        "tiny-llama on 2 sockets": compile_zoo_model(
            "tiny-llama", phase="decode", seq=32, sockets=2, fusion="dataflow"
        ).model.schedule,
        "tiny-llama lm": coec.compile(*load_example("tiny_llama_lm"), fusion="epilogue").schedule,
    }
    for what, schedule in schedules.items():
        missing = _schedule_keys(schedule) - documented
        assert not missing, f"{what}: keys {sorted(missing)} are not in docs/schedule.md"


def test_schedule_reference_example_is_what_the_backend_writes(mlp_schedule):
    page = (ROOT / "docs" / "schedule.md").read_text()
    kernel, buffer = [json.loads(b) for lang, b in _blocks(page) if lang == "json"]
    schedule = json.loads(mlp_schedule.read_text())
    assert kernel == schedule["kernels"][0]
    assert buffer == schedule["buffers"][kernel["stores"][0]["buffer"]]


def test_schedule_reference_error_is_what_the_runtime_says(
    mlp_schedule, tmp_path, monkeypatch, capsys
):
    page = (ROOT / "docs" / "schedule.md").read_text()
    console = next(b for lang, b in _blocks(page) if lang == "console")
    (command, [shown]) = _console_steps(console)[0]
    schedule = json.loads(mlp_schedule.read_text())
    schedule["kernels"][0]["loads"][0]["box"][0] = [0, 9]
    (tmp_path / "broken.json").write_text(json.dumps(schedule))
    monkeypatch.chdir(tmp_path)
    assert _cli(shlex.split(command)) == 6
    assert capsys.readouterr().err.strip() == shown
