"""Nothing lost, nothing hidden: outputs never overwrite inputs, are written as one
transaction, are bound to their schedule; NaN is never an error of 0; the caller's module
is left as it was; bad input to the API is one typed error."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from conftest import EXAMPLES

import coec
from coec.cli import main
from coec.commands import compare, run_schedule_file
from coec.ir.errors import ConfigError, ExecutionError
from coec.outputs import inputs_path, weights_path

MLP = EXAMPLES / "mlp.py"


def _fails(capsys, argv: list[str], code: int = 2) -> str:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_an_output_that_is_an_input_is_refused(tmp_path, capsys):
    model = tmp_path / "m.py"
    shutil.copy(MLP, model)
    before = model.read_bytes()
    assert "is an input of this command" in _fails(capsys, ["compile", model, "-o", model])
    link = tmp_path / "link.json"
    link.symlink_to(model)
    assert "is an input of this command" in _fails(capsys, ["compile", model, "-o", link])
    err = _fails(capsys, ["compile", model, "--trace", model])
    assert "refusing to overwrite" in err
    assert model.read_bytes() == before


def test_a_failed_command_leaves_earlier_outputs_untouched(tmp_path, capsys):
    out = tmp_path / "out" / "m.json"
    main(["compile", str(MLP), "-o", str(out)])
    saved = {p: p.read_bytes() for p in (out, weights_path(out), inputs_path(out))}
    (tmp_path / "adir").mkdir()
    err = _fails(
        capsys,
        ["compile", EXAMPLES / "gpt_block.py", "-o", out, "--trace", tmp_path / "adir"],
    )
    assert "is a directory" in err
    assert {p: p.read_bytes() for p in saved} == saved


def test_schedule_and_trace_are_written_together(tmp_path, capsys):
    out, trace = tmp_path / "m.json", tmp_path / "new" / "t.json"
    main(["compile", str(MLP), "-o", str(out), "--trace", str(trace)])
    assert out.is_file() and trace.is_file()


def test_a_count_only_save_removes_stale_data_files(tmp_path, capsys):
    out = tmp_path / "z.json"
    main(["compile", "--zoo", "tiny-llama", "--run", "-o", str(out)])
    assert weights_path(out).is_file() and inputs_path(out).is_file()
    main(["compile", "--zoo", "tiny-llama", "-o", str(out)])  # meta device: no data
    assert not weights_path(out).exists() and not inputs_path(out).exists()


def test_data_files_are_bound_to_their_schedule(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    main(["compile", str(MLP), "-o", str(a)])
    main(["compile", str(MLP), "--fusion", "none", "-o", str(b)])
    report = run_schedule_file(a).report  # its own data: runs
    assert report["kernels"] >= 1
    shutil.copy(weights_path(b), weights_path(a))  # another schedule's weights, same names
    with pytest.raises(ConfigError, match="written with another schedule than a.json"):
        run_schedule_file(a)
    err = _fails(capsys, ["run", a])
    assert "a.weights.safetensors: written with another schedule" in err


def test_nan_is_never_an_error_of_zero():
    with pytest.raises(ExecutionError, match=r"output 0 is nan at \(1,\) where the reference"):
        compare([np.array([1.0, np.nan])], [torch.tensor([1.0, 2.0])])
    with pytest.raises(ExecutionError, match="is inf"):
        compare([np.array([np.inf])], [torch.tensor([3.0])])
    # NaN and inf in the same places on both sides compare equal; the rest as usual
    same = compare(
        [np.array([np.nan, np.inf, 1.5])], [torch.tensor([float("nan"), float("inf"), 1.0])]
    )
    assert same == (0.5, 0.5)  # relative to the largest finite reference value, 1.0


class _Dropout(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.fc(x))


def test_a_train_mode_module_is_compiled_in_eval_mode_and_left_as_it_was():
    m = _Dropout().train()
    x = torch.randn(4, 8)
    with pytest.warns(UserWarning, match="_Dropout is in train mode: coec compiles it in eval"):
        cm = coec.compile(m, (x,))
    assert m.training and m.drop.training and m.fc.training  # the caller's modes
    with torch.no_grad():
        expected = m.eval()(x)
    torch.testing.assert_close(cm(x), expected, rtol=1e-5, atol=1e-5)


def test_a_train_mode_model_file_runs_in_eval_mode_against_its_eval_reference(tmp_path):
    src = tmp_path / "d.py"
    src.write_text(
        "import torch\n"
        "def model():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.9)).train()\n"
        "def example_inputs():\n"
        "    return (torch.randn(4, 8),)\n"
    )
    from coec.commands import compile_model_file

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file's own module: put in eval mode, no warning
        r = compile_model_file(src, execute=True)
    assert r.report["max_rel_err"] < 1e-5


def test_a_model_file_that_exits_is_one_line(tmp_path, capsys):
    src = tmp_path / "exits.py"
    src.write_text("import sys\nsys.exit(0)\n")
    err = _fails(capsys, ["compile", src])
    assert "called sys.exit(0) while loading" in err


def test_the_api_refuses_what_is_not_a_model():
    x = torch.randn(2, 2)
    with pytest.raises(ConfigError, match="compiles a torch.nn.Module, not a function"):
        coec.compile(lambda t: t * 2, (x,))
    with pytest.raises(ConfigError, match="a path or an onnx.ModelProto, not a int"):
        coec.compile_onnx(12345)


def test_coec_opt_refuses_to_overwrite_its_input(tmp_path, capsys):
    src = tmp_path / "m.mlir"
    main(["compile", str(MLP), "--dump-ir=frontend"])
    src.write_text(capsys.readouterr().out)
    assert "is an input of this command" in _fails(capsys, ["opt", src, "-p", "fuse", "-o", src])


class _TensorClampLinearVector(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x, lo, hi, v):
        return torch.clamp(x, lo, hi), self.fc(v)


@pytest.mark.parametrize("fusion", ["none", "dataflow"])
def test_clamp_with_tensor_bounds_and_linear_on_a_vector(fusion):
    """Both used to fail inside coec (an internal TypeError, an IR verification error)."""
    m = _TensorClampLinearVector().eval()
    args = (torch.randn(3, 4), -torch.rand(4) * 0.5, torch.rand(3, 1) * 0.5, torch.randn(6))
    got = coec.compile(m, args, fusion=fusion)(*args)
    with torch.no_grad():
        want = m(*args)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_a_count_only_onnx_compile_needs_no_input_data(tmp_path):
    """A ReduceSum over a 100000x100000 input: count-only builds no 37 GiB of random data."""
    import onnx
    from onnx import TensorProto, helper

    from coec.commands import compile_onnx_file

    n = 100_000
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, 1])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    r = compile_onnx_file(path)
    assert r.report["bytes"]["hbm->sram"] == n * n * 2  # the input read once, in bf16
    # saved with -o, still no data invented: the schedule and its weights, no inputs file
    out = tmp_path / "big.json"
    compile_onnx_file(path, output=out)
    assert out.is_file() and not (tmp_path / "big.inputs.safetensors").exists()


def test_running_a_count_only_save_asks_for_inputs(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    out = tmp_path / "relu.json"
    assert main(["compile", str(path), "-o", str(out)]) in (None, 0)
    err = _fails(capsys, ["run", out])
    assert "no inputs saved beside it (compiled count-only)" in err and "--inputs" in err
    np.savez(tmp_path / "x.npz", x=np.arange(6, dtype=np.float32).reshape(2, 3) - 3)
    assert main(["run", str(out), "--inputs", str(tmp_path / "x.npz")]) in (None, 0)


def test_control_flow_on_data_is_one_line_without_torchs_graph_dump(tmp_path, capsys):
    src = tmp_path / "cf.py"
    src.write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * 2 if x.sum() > 0 else x - 1\n"
        "def model():\n"
        "    return M().eval()\n"
        "def example_inputs():\n"
        "    return (torch.randn(4),)\n"
    )
    err = _fails(capsys, ["compile", src], code=3)
    assert err.startswith("coec: error: torch.export failed: Could not guard on data-dependent")


def test_cli_warnings_are_one_line(tmp_path, capsys):
    src = tmp_path / "warns.py"
    src.write_text(
        "import warnings, torch\n"
        "def model():\n"
        "    warnings.warn('careful\\nand a second line')\n"
        "    return torch.nn.Linear(4, 4)\n"  # train mode, as nn.Modules are made: no warning
        "def example_inputs():\n"
        "    return (torch.randn(2, 4),)\n"
    )
    main(["compile", str(src)])
    assert capsys.readouterr().err.strip().splitlines() == ["coec: warning: careful"]
