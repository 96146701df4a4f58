"""coec as a torch.compile backend: numerics against eager, graph breaks, reports."""

from __future__ import annotations

import pytest
import torch
from conftest import load_example, rel_err
from hf_models import gpt2, token_ids

import coec
from coec import dynamo


@pytest.fixture(autouse=True)
def _fresh():
    torch._dynamo.reset()
    dynamo.reset()
    yield
    torch._dynamo.reset()


def test_registered_as_a_dynamo_backend():
    assert "coec" in torch._dynamo.list_backends()


@pytest.mark.parametrize("fusion", ["none", "dataflow"])
@pytest.mark.parametrize("name", ["mlp", "gpt_block", "llama_block"])
def test_examples_match_eager(name, fusion):
    model, inputs = load_example(name)
    model.eval()
    compiled = torch.compile(model, backend="coec", options={"fusion": fusion, "dtype": "fp32"})
    with torch.no_grad():
        out, ref = compiled(*inputs), model(*inputs)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert rel_err(out, ref) <= 1e-5
    report = coec.last_report()
    assert report["kernels"] >= 1 and report["flops"] > 0 and report["bytes"]["hbm->sram"] > 0
    if fusion == "dataflow":
        assert report["kernels"] == 1  # each example block is one streaming kernel


def test_huggingface_model_through_torch_compile():
    model = gpt2().eval()
    ids = token_ids()
    compiled = torch.compile(model, backend="coec", options={"dtype": "fp32"})
    with torch.no_grad():
        out, ref = compiled(ids).logits, model(ids).logits
    assert rel_err(out, ref) <= 1e-5


class Branchy(torch.nn.Module):
    """A data-dependent Python branch: dynamo breaks the graph at ``.item()``."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 16), torch.nn.Linear(16, 8)

    def forward(self, x):
        h = torch.relu(self.a(x))
        if h.sum().item() > 0:
            h = h * 2
        return self.b(h)


def test_graph_break_compiles_each_graph():
    torch.manual_seed(0)
    model, x = Branchy().eval(), torch.randn(4, 16)
    seen = []
    compiled = torch.compile(
        model, backend="coec", options={"dtype": "fp32", "on_report": seen.append}
    )
    with torch.no_grad():
        out, ref = compiled(x), model(x)
    assert rel_err(out, ref) <= 1e-5
    assert len(dynamo.reports()) >= 2  # one per captured graph
    assert len(seen) == len(dynamo.reports())  # each graph ran once and reported
    assert coec.last_report() is seen[-1]
    # the graph after the break is h·2 (a sum of ReLUs is > 0) then b(h): 16 -> 8 on 4 rows
    assert seen[-1]["flops"] == 4 * 16 + 2 * 4 * 16 * 8 + 4 * 8


def test_unknown_option_is_a_clear_error():
    model, x = Branchy().eval(), torch.randn(4, 16)
    compiled = torch.compile(model, backend="coec", options={"fusoin": "dataflow"})
    with pytest.raises(Exception, match="unknown option 'fusoin'"):
        compiled(x)


def test_outputs_carry_no_gradient_and_say_so():
    model, inputs = load_example("mlp")
    compiled = torch.compile(model, backend="coec", options={"dtype": "fp32"})
    with pytest.warns(UserWarning, match="inference only"):
        out = compiled(*inputs)
    assert not out.requires_grad
