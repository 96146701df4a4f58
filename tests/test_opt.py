"""``coec opt``: pass pipelines on df IR text, filecheck style; canonicalize's rewrites."""

from __future__ import annotations

import pytest
from conftest import EXAMPLES

from coec.cli import main
from coec.commands import compile_model_file
from coec.ir import parse_module, print_module
from coec.ir.errors import ConfigError
from coec.opt import parse_passes, run_opt

T = "!df.tensor<{}xf32>"
VIEWS = f"""builtin.module {{
  func.func @main(%x: {T.format("4x6")}) -> {T.format("4x6")} {{
    %a = df.reshape %x : {T.format("4x6")} -> {T.format("24")}
    %b = df.reshape %a : {T.format("24")} -> {T.format("2x12")}
    %c = df.reshape %b : {T.format("2x12")} -> {T.format("4x6")}
    %p = df.permute %c {{perm = array<i64: 1, 0>}} : {T.format("4x6")} -> {T.format("6x4")}
    %q = df.permute %p {{perm = array<i64: 1, 0>}} : {T.format("6x4")} -> {T.format("4x6")}
    %dead = df.elementwise %q, %q {{kind = "add"}} : {T.format("4x6")}, {T.format("4x6")} -> {T.format("4x6")}
    %y = df.elementwise %q {{kind = "relu"}} : {T.format("4x6")} -> {T.format("4x6")}
    func.return %y : {T.format("4x6")}
  }}
}}
"""


def _ops(text: str) -> list[str]:
    return [line.split("=", 1)[1].split()[0] for line in text.splitlines() if " = df." in line]


def test_canonicalize_folds_views_and_drops_dead_ops():
    out = run_opt(VIEWS, "canonicalize")
    # reshape chain -> identity reshape -> gone; permute pair -> identity -> gone; dead add gone
    assert _ops(out) == ["df.elementwise"]
    assert "df.elementwise %x" in out  # relu now reads the input directly


def test_canonicalize_keeps_a_real_reshape():
    text = VIEWS.replace(
        f"-> {T.format('4x6')}\n    %p", f"-> {T.format('3x8')}\n    %p", 1
    )  # %c is now 3x8: the chain folds to one reshape that must stay
    text = text.replace(
        f"%p = df.permute %c {{perm = array<i64: 1, 0>}} : {T.format('4x6')} -> {T.format('6x4')}",
        f"%p = df.permute %c {{perm = array<i64: 1, 0>}} : {T.format('3x8')} -> {T.format('8x3')}",
    )
    text = text.replace(
        f"%q = df.permute %p {{perm = array<i64: 1, 0>}} : {T.format('6x4')} -> {T.format('4x6')}",
        f"%q = df.reshape %p : {T.format('8x3')} -> {T.format('4x6')}",
    )
    parse_module(text)  # the hand-edited input is valid
    out = run_opt(text, "canonicalize")
    assert _ops(out).count("df.reshape") == 2  # x->3x8 (folded chain) and the permute's 8x3->4x6
    assert _ops(out).count("df.permute") == 1


@pytest.mark.parametrize("fusion", ["none", "dataflow"])
@pytest.mark.parametrize("name", ["mlp", "gpt_block", "llama_block", "tiny_llama_lm"])
def test_opt_pipeline_equals_compile(name, fusion):
    r = compile_model_file(
        EXAMPLES / f"{name}.py", fusion=fusion, dump_points=("frontend", "after-place")
    )
    out = run_opt(r.dumps["frontend"], f"fuse{{policy={fusion}}},tile,place")
    assert out == r.dumps["after-place"]
    assert print_module(parse_module(out)) == out  # and it round-trips


def test_fuse_snippet_makes_one_kernel():
    out = run_opt(VIEWS, "canonicalize,fuse{policy=dataflow}")
    assert out.count("df.kernel") == 1 and "df.yield" in out
    assert len(out.splitlines()) < len(VIEWS.splitlines()) + 4


def test_pipeline_options_and_default_target():
    fuse, tile, place = parse_passes("fuse{policy=dataflow},tile{max-tile=16},place", "sn40l-16")
    assert (fuse.policy, fuse.target, tile.max_tile, place.target) == (
        "dataflow",
        "sn40l-16",
        16,
        "sn40l-16",
    )
    (named,) = parse_passes("fuse{target=sn40l-node}", "sn40l-16")
    assert named.target == "sn40l-node"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope", "Unrecognized passes"),
        ("fuse{polcy=x}", "polcy"),
        ("fuse{policy=", "Unknown argument value"),
        ("tile{max-tile=x}", "Incompatible types"),
    ],
)
def test_bad_pipelines_are_one_config_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_passes(spec)


def test_cli_opt_reads_a_file_and_writes_atomically(tmp_path, capsys):
    src = tmp_path / "m.mlir"
    src.write_text(VIEWS)
    out = tmp_path / "out.mlir"
    main(["opt", str(src), "-p", "canonicalize", "-o", str(out)])
    assert out.read_text() == run_opt(VIEWS, "canonicalize")
    assert src.read_text() == VIEWS  # the input is untouched


def test_cli_opt_bad_ir_names_the_line(tmp_path, capsys):
    src = tmp_path / "bad.mlir"
    src.write_text("builtin.module {\n  df.nonsense\n}\n")
    with pytest.raises(SystemExit) as e:
        main(["opt", str(src), "-p", "canonicalize"])
    assert e.value.code == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{src}:3:1" in err and "df.nonsense" in err


def test_an_unterminated_string_in_ir_text_is_an_error_not_a_hang(tmp_path, capsys):
    """xDSL's string-literal pattern backtracked exponentially on a stray quote (a Python
    file given as IR never finished parsing); coec.ir patches it to a linear one."""
    src = tmp_path / "model.py"
    src.write_text('"""Two-layer MLP: Linear(64->128) -> ReLU -> Linear(128->32) on a batch.\n')
    with pytest.raises(SystemExit) as e:
        main(["opt", str(src), "-p", "place"])
    assert e.value.code == 4
    err = capsys.readouterr().err.strip()
    assert err == f"coec: error: {src}:1:3: End of file reached before closing string literal."


def test_string_literals_still_parse():
    text = VIEWS.replace('{kind = "relu"}', '{kind = "relu", note = "a \\"quoted\\" \\41 x"}')
    assert "note" in run_opt(text, "")
