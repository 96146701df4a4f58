"""End to end: compiled models executed on the NumPy runtime match PyTorch eager."""

from __future__ import annotations

import pytest
import torch
from conftest import load_example, rel_err
from hf_models import BUILDERS, token_ids

import coec
from coec.api import flatten_outputs

TOL = 1e-4  # max |err| relative to output scale, fp32 compute


def check(module: torch.nn.Module, inputs: tuple, **options) -> coec.CompiledModel:
    module.eval()
    cm = coec.compile(module, inputs, dtype="fp32", **options)
    outs = cm(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    with torch.no_grad():
        refs = flatten_outputs(module(*inputs))
    assert len(outs) == len(refs)
    for out, ref in zip(outs, refs, strict=True):
        assert out.shape == ref.shape
        assert rel_err(out, ref) <= TOL
    return cm


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(64, 128), torch.nn.Linear(128, 32)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_mlp():
    check(MLP(), (torch.randn(8, 64),))


POLICIES = ["none", "epilogue", "dataflow"]


@pytest.mark.parametrize("fusion", POLICIES)
@pytest.mark.parametrize("name", ["mlp", "gpt_block", "llama_block", "tiny_llama_lm"])
def test_examples(name, fusion):
    check(*load_example(name), fusion=fusion)


@pytest.mark.parametrize("fusion", POLICIES)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_huggingface(family, attn, fusion):
    cm = check(BUILDERS[family](attn), (token_ids(),), fusion=fusion)
    assert cm.report["kernels"] > {"none": 20, "epilogue": 5, "dataflow": 0}[fusion]


def test_bf16_emulation_is_close_but_not_exact():
    model, inputs = load_example("llama_block")
    cm = coec.compile(model, inputs, emulate_bf16=True)
    out = cm(*inputs)
    with torch.no_grad():
        ref = model(*inputs)
    err = rel_err(out, ref)
    assert 0 < err < 5e-2  # bf16 keeps ~3 significant digits


def test_compiled_model_is_reusable_with_new_inputs():
    model = MLP().eval()
    cm = coec.compile(model, (torch.randn(8, 64),), dtype="fp32")
    x = torch.randn(8, 64)
    assert rel_err(cm(x), model(x).detach()) <= TOL
