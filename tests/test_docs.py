"""The docs stay true: the CLI reference is regenerated from the CLI and must match."""

from __future__ import annotations

import re
import runpy
import shlex

from conftest import ROOT


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


def test_tutorial_runs_as_written(tmp_path, monkeypatch, capsys):
    from coec.cli import main

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
                try:
                    main(argv[1:])
                    code = 0
                except SystemExit as e:
                    code = e.code or 0
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
