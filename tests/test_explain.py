"""``coec explain``: each kernel boundary with its cause in hardware terms."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from coec.backend.target import load_target
from coec.cli import main
from coec.explain import explain_program
from coec.frontend.export import export_module
from coec.frontend.lower import lower_program
from coec.passes.fusion import can_fuse_dataflow, compute_ops


class TwoLayers(torch.nn.Module):
    """Two 512 x 512 projections: 0.5 MiB of bf16 weights each."""

    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(512, 512, bias=False)
        self.down = torch.nn.Linear(512, 512, bias=False)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def program():
    return lower_program(export_module(TwoLayers().eval(), (torch.randn(4, 512),)), "bf16")


def with_sram(nbytes: int):
    """The SN40L with ``nbytes`` of SRAM in PMUs of 1 KiB."""
    t = load_target("sn40l")
    sram = replace(t.memory["sram"], capacity_bytes=nbytes)
    compute = replace(t.compute, pmus=nbytes // 1024)
    return replace(t, compute=compute, memory={**t.memory, "sram": sram})


def test_a_cut_forced_by_sram_names_the_bytes_needed_and_there():
    """At its smallest (one-row tiles, weights in one-column chunks, double-buffered) a
    projection with its ReLU needs 4 buffers of 1 KiB in bf16 (x row, weight column, out
    row... = 8 KiB), the whole block 12 KiB: with 8 KiB of SRAM the block is two kernels,
    and the boundary says the fused kernel needs 4 KiB more than there is."""
    prog = program()
    target = with_sram(8 * 1024)
    e = explain_program(prog, target, "two layers")
    assert len(e.kernels) == 2
    (cut,) = e.boundaries
    assert cut.cause == "sram"
    ops = compute_ops(prog.func)
    verdict = can_fuse_dataflow(ops, target)
    assert (verdict.ok, verdict.need, verdict.have) == (False, 12 * 1024, 8 * 1024)
    assert cut.change.startswith("+4.0 KiB of SRAM (12.0 KiB needed, 8.0 KiB there)")
    # the ops are named by the user's module path and source line
    assert "up" in cut.before and "test_explain.py" in cut.before
    assert "down" in cut.after or "relu" in cut.after


def test_with_room_the_two_are_one_kernel():
    e = explain_program(program(), load_target("sn40l"), "two layers")
    assert len(e.kernels) == 1 and not e.boundaries


def test_a_cut_the_cost_model_chose_says_by_how_much():
    """With 4 PCUs and software launch, a projection and its ReLU fuse but the second
    projection is cheaper as its own kernel: the stages would share 4 PCUs. The boundary
    gives the modeled difference, which the cost model's own figures reproduce."""
    from coec.passes.fusion import kernel_cycles

    t = load_target("sn40l")
    t = replace(t, compute=replace(t.compute, pcus=4))
    prog = program()
    e = explain_program(prog, t, "two layers")
    assert e.kernels == [["linear", "relu"], ["linear"]]
    (cut,) = e.boundaries
    ops = compute_ops(prog.func)
    fused, apart = kernel_cycles(ops, t), kernel_cycles(ops[:2], t) + kernel_cycles(ops[2:], t)
    assert cut.cause == "faster apart" and fused > apart
    clock = t.compute.clock_hz
    assert f"splitting is faster by {(fused - apart) / clock * 1e6:,.2f} µs" in cut.why
    assert f"{fused - apart:,} fewer cycles of" in cut.change


def test_explain_cli_text_and_json(capsys):
    assert main(["explain", "examples/mlp.py"]) in (None, 0)
    out = capsys.readouterr().out
    assert out.startswith("mlp.py: 1 kernel(s)") and "nothing to explain" in out
    assert main(["explain", "examples/mlp.py", "--json"]) in (None, 0)
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "coec.explain/2" and data["parts"][0]["kernels"]


def test_explain_needs_one_model(capsys):
    with pytest.raises(SystemExit) as e:
        main(["explain"])
    assert e.value.code != 0
    assert "give either MODEL.py" in capsys.readouterr().err


def test_explain_an_onnx_model(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Sigmoid", ["y"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])],
    )
    path = tmp_path / "act.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert main(["explain", str(path), "--json"]) in (None, 0)
    (part,) = json.loads(capsys.readouterr().out)["parts"]
    assert part["part"] == "act.onnx" and len(part["kernels"]) == 1 and not part["boundaries"]
