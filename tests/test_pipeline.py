"""One pipeline: passes built from one ``Options``, stage checks, text IR -> schedule."""

from __future__ import annotations

import pytest
import torch
from conftest import EXAMPLES, load_example

import coec
from coec.backend.plan import read_plan
from coec.cli import main
from coec.commands import compile_model_file
from coec.ir import ops as df
from coec.ir import parse_module
from coec.ir.errors import ConfigError, VerifyError
from coec.opt import run_opt, run_opt_module
from coec.pipeline import Options, Pipeline, stage_names


def test_the_pipeline_is_its_passes_in_order():
    p = Pipeline(Options(fusion="dataflow", max_tile=8, target="sn40l-node", sockets=2))
    assert [x.name for x in p.passes] == ["fuse", "tile", "place"]
    fuse, tile, place = p.passes
    assert fuse.policy == "dataflow" and tile.max_tile == 8
    assert fuse.target is p.target and p.target.sockets == 2  # one resolved target for all
    assert p.stages == stage_names() == ("frontend", "after-fuse", "after-tile", "after-place")


def test_options_reject_unknown_names():
    with pytest.raises(ConfigError, match="unknown compile option 'fusoin'"):
        Options.of(fusoin="dataflow")
    module, inputs = load_example("mlp")
    with pytest.raises(ConfigError, match="unknown compile option"):
        coec.compile(module, inputs, max_tiles=4)
    assert Options.of(Options(fusion="epilogue"), dtype="fp32") == Options(
        fusion="epilogue", dtype="fp32"
    )


def test_compile_takes_an_options_value():
    module, inputs = load_example("mlp")
    a = coec.compile(module, inputs, Options(fusion="dataflow", max_tile=16))
    b = coec.compile(module, inputs, fusion="dataflow", max_tile=16)
    assert a.schedule_json() == b.schedule_json()


@pytest.fixture(scope="module")
def mlp_ir():
    r = compile_model_file(
        EXAMPLES / "mlp.py", fusion="dataflow", dump_points=stage_names(), output=None
    )
    return r


@pytest.mark.parametrize(
    "stage, spec, message",
    [
        (
            "frontend",
            "place",
            "pass 'place' needs tiled IR but this IR is frontend: run 'fuse,tile'",
        ),
        ("frontend", "tile", "pass 'tile' needs fused IR but this IR is frontend: run 'fuse'"),
        ("after-fuse", "fuse", "'fuse' has already run on it"),
        ("after-place", "tile", "pass 'tile' needs fused IR but this IR is placed"),
    ],
)
def test_an_illegal_pass_order_is_one_config_error(mlp_ir, stage, spec, message):
    with pytest.raises(ConfigError, match=message):
        run_opt(mlp_ir.dumps[stage], spec)


def test_cli_opt_refuses_an_illegal_order_in_one_line(tmp_path, capsys, mlp_ir):
    src = tmp_path / "m.mlir"
    src.write_text(mlp_ir.dumps["frontend"])
    with pytest.raises(SystemExit) as e:
        main(["opt", str(src), "-p", "place"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        "coec: error: pass 'place' needs tiled IR but this IR is frontend: "
        "run 'fuse,tile' before 'place'"
    ]


def test_an_untiled_kernel_has_no_plan(mlp_ir):
    module = run_opt_module(mlp_ir.dumps["frontend"], "fuse{policy=dataflow}")
    kernel = next(op for op in module.walk() if isinstance(op, df.KernelOp))
    with pytest.raises(VerifyError, match="kernel k0 has no tile plan"):
        read_plan(kernel)


@pytest.mark.parametrize("stage", ["frontend", "after-fuse", "after-tile", "after-place"])
def test_text_ir_at_any_stage_compiles_to_the_same_schedule(tmp_path, mlp_ir, stage):
    """The IR round-trips: coec compile IR.mlir finishes the pipeline, byte for byte."""
    src = tmp_path / f"{stage}.mlir"
    src.write_text(mlp_ir.dumps[stage])
    out = tmp_path / "s.json"
    main(["compile", str(src), "--fusion", "dataflow", "-o", str(out)])
    assert out.read_text() == mlp_ir.model.schedule_json()
    assert not out.with_suffix(".weights.safetensors").exists()  # text IR holds no weights


def test_text_ir_compiles_count_only(tmp_path, mlp_ir):
    src = tmp_path / "m.mlir"
    src.write_text(mlp_ir.dumps["after-place"])
    with pytest.raises(ConfigError, match="carries no weights"):
        compile_model_file(src, execute=True)
    r = compile_model_file(src, fusion="dataflow")
    assert r.report == mlp_ir.report


def test_opt_output_is_a_schedule_after_place(tmp_path, mlp_ir):
    """coec opt ... -p fuse,tile,place then coec compile: the same as compiling the model."""
    text = run_opt(mlp_ir.dumps["frontend"], "fuse{policy=dataflow},tile,place")
    assert parse_module(text) is not None
    src = tmp_path / "placed.mlir"
    src.write_text(text)
    r = compile_model_file(src, fusion="dataflow")
    assert r.model.schedule_json() == mlp_ir.model.schedule_json()


def test_dump_ir_stages_come_from_the_pipeline(capsys):
    main(["compile", str(EXAMPLES / "mlp.py"), "--dump-ir=all"])
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("// -----")] == [
        f"// ----- df IR {s} -----" for s in stage_names()
    ]
    with pytest.raises(SystemExit) as e:
        main(["compile", str(EXAMPLES / "mlp.py"), "--dump-ir=after-fusion"])
    assert e.value.code == 2
    assert "choose from frontend, after-fuse, after-tile, after-place" in capsys.readouterr().err


def test_dynamo_backend_runs_the_same_pipeline():
    module, inputs = load_example("mlp")
    direct = coec.compile(module, inputs, fusion="dataflow")
    compiled = torch.compile(module, backend="coec", options={"fusion": "dataflow"})
    with torch.no_grad():
        compiled(*inputs)
    assert coec.last_report()["cycles"] == direct.report["cycles"]


def test_a_negative_max_tile_is_refused(mlp_ir):
    with pytest.raises(ConfigError, match="max-tile=-5 must be at least 1"):
        run_opt(mlp_ir.dumps["after-fuse"], "tile{max-tile=-5}")


@pytest.mark.parametrize(
    "flag, message",
    [
        (["--run"], "--run runs with weights, which df IR text does not hold"),
        (["--phase", "decode"], "--phase is for zoo models and HF configs, not df IR text"),
        (["--dump-ir"], "not df IR text's"),
    ],
)
def test_cli_refuses_what_text_ir_cannot_do(tmp_path, capsys, mlp_ir, flag, message):
    src = tmp_path / "p.mlir"
    src.write_text(mlp_ir.dumps["after-place"])
    with pytest.raises(SystemExit) as e:
        main(["compile", str(src), *flag])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
