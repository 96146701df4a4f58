"""Fusion policies: what fuses, what it saves, and how the chip's size bounds it."""

from __future__ import annotations

import pytest
import torch
from conftest import load_example, rel_err
from test_counts import small_target

import coec
from coec.pipeline import Options, compile_program

POLICIES = ("none", "epilogue", "dataflow")


def hbm_bytes(report: dict) -> int:
    return sum(n for pair, n in report["bytes"].items() if "hbm" in pair.split("->"))


def compiled(name: str, **options) -> coec.CompiledModel:
    model, inputs = load_example(name)
    cm = coec.compile(model, inputs, **options)
    cm(*inputs)
    return cm


def test_llama_block_dataflow_beats_epilogue_beats_none():
    reports = {p: compiled("llama_block", fusion=p).report for p in POLICIES}
    kernels = [reports[p]["kernels"] for p in POLICIES]
    traffic = [hbm_bytes(reports[p]) for p in POLICIES]
    assert kernels[0] > kernels[1] > kernels[2]
    assert traffic[0] > traffic[1] > traffic[2]


def test_whole_block_in_one_dataflow_kernel_moves_only_inputs_weights_outputs():
    cm = compiled("llama_block", fusion="dataflow")
    assert cm.report["kernels"] == 1
    buffers = cm.schedule["buffers"].values()
    reads = sum(b["bytes"] for b in buffers if b["kind"] in ("input", "weight"))
    outputs = sum(cm.schedule["buffers"][n]["bytes"] for n in cm.schedule["outputs"])
    # no intermediate crosses HBM: the bytes are exactly the model's inputs,
    # weights (and folded constants) in, its outputs out
    assert cm.report["bytes"] == {"hbm->sram": reads, "sram->hbm": outputs}
    assert not [b for b in buffers if b["kind"] == "activation" and b.get("alias_of") is None][1:]


def test_kernel_outputs_are_only_what_later_kernels_or_the_caller_read():
    cm = compiled("gpt_block", fusion="dataflow")
    read = {d["buffer"] for k in cm.schedule["kernels"] for d in k["loads"]}
    for k in cm.schedule["kernels"]:
        for d in k["stores"]:
            assert d["buffer"] in read or d["buffer"] in cm.schedule["outputs"]


def test_shrinking_sram_splits_dataflow_kernels(tmp_path):
    model, inputs = load_example("llama_block")
    whole = coec.compile(model, inputs, fusion="dataflow")
    assert whole.report["kernels"] == 1
    cap = whole.schedule["kernels"][0]["sram_bytes"]
    while True:  # shrink SRAM until the kernel no longer fits at any tile size
        cap //= 2
        small = small_target(tmp_path, sram=cap / 2**20)
        split = coec.compile(model, inputs, fusion="dataflow", target=str(small))
        if split.report["kernels"] > 1:
            break
    out = split(*inputs)
    assert rel_err(out, model(*inputs).detach()) < 1e-2
    assert all(k["sram_bytes"] <= cap for k in split.schedule["kernels"])
    assert split.report["peak_bytes"]["sram"] <= cap


def test_user_target_file_changes_fusion_and_placement(tmp_path):
    model, inputs = load_example("llama_block")
    base = coec.compile(model, inputs, fusion="dataflow")
    target = small_target(tmp_path, sram=16 / 1024, hbm=64 / 1024)
    cm = coec.compile(model, inputs, fusion="dataflow", target=str(target))
    assert cm.report["kernels"] > base.report["kernels"]
    assert {b["tier"] for b in cm.schedule["buffers"].values()} == {"hbm", "ddr"}
    assert rel_err(cm(*inputs), model(*inputs).detach()) < 1e-2


def kernels_of(fn, shape=(4, 8), fusion="epilogue") -> list[list[str]]:
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(8, 8))

        def forward(self, x):
            return fn(x, self.w)

    compiled = compile_program(M(), (torch.randn(*shape),), Options(fusion=fusion))
    return [
        [o["attrs"].get("kind", o["op"]) for o in k["ops"]] for k in compiled.schedule["kernels"]
    ]


def test_epilogue_fuses_pointwise_after_a_gemm():
    assert kernels_of(lambda x, w: torch.relu(x @ w) + 1) == [["matmul", "relu", "add"]]


def test_epilogue_gives_a_gemm_no_prologue():
    assert kernels_of(lambda x, w: torch.exp(x) @ w) == [["exp"], ["matmul"]]


def test_epilogue_fuses_pointwise_prologue_into_a_reduction():
    assert kernels_of(lambda x, w: torch.softmax(x * 2, -1)) == [["mul", "softmax"]]


def test_epilogue_keeps_two_reductions_apart():
    assert kernels_of(lambda x, w: torch.softmax(torch.softmax(x, -1), 0)) == [
        ["softmax"],
        ["softmax"],
    ]


def test_epilogue_stays_convex():
    # y feeds both a GEMM and the add after it: fusing the add into y's kernel
    # would need the GEMM inside too (a path out and back in)
    def fn(x, w):
        y = x + 1
        return y + y @ w

    assert kernels_of(fn) == [["add"], ["matmul", "add"]]


def test_dataflow_fuses_everything_that_fits():
    assert kernels_of(lambda x, w: torch.softmax(torch.exp(x) @ w, -1), fusion="dataflow") == [
        ["exp", "matmul", "softmax"]
    ]


def test_unknown_policy_is_a_config_error():
    with pytest.raises(coec.ConfigError, match="fusion policy 'fused'"):
        compile_program(torch.nn.ReLU(), (torch.randn(2),), Options(fusion="fused"))
