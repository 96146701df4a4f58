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


class ConvBN(torch.nn.Module):
    """Conv + BatchNorm2d + ReLU: BatchNorm's running statistics are buffers."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def _conv_bn() -> ConvBN:
    torch.manual_seed(0)
    model = ConvBN()
    with torch.no_grad():  # running statistics far from their defaults (0 and 1)
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    return model.eval()


def test_batchnorm_buffers_are_bound_as_weights():
    model, x = _conv_bn(), torch.randn(2, 3, 8, 8)
    compiled = torch.compile(model, backend="coec", options={"dtype": "fp32"})
    with torch.no_grad():
        out, ref = compiled(x), model(x)
    assert rel_err(out, ref) <= 1e-5
    assert coec.last_report()["ran"] == "coec"


@pytest.mark.parametrize("dynamic", [None, True])
def test_a_new_input_shape_recompiles_for_that_shape(dynamic):
    # dynamic=None: dynamo hands a dynamic graph (SymInt sizes) after the shape changes;
    # dynamic=True: from the start, BatchNorm's eps and momentum as 0-d tensors read by .item()
    model = _conv_bn()
    compiled = torch.compile(model, backend="coec", dynamic=dynamic, options={"dtype": "fp32"})
    for batch in (2, 3, 2):
        x = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            out, ref = compiled(x), model(x)
        assert out.shape == ref.shape and rel_err(out, ref) <= 1e-5
        report = coec.last_report()
        assert report["ran"] == "coec"
        # the conv's MACs scale with the batch: the report is the new shape's
        assert report["flops"] >= 2 * batch * 8 * 8 * 8 * 3 * 9
    # one report per compiled variant: batch 2, batch 3 (then batch 2 again for the
    # dynamic graph, when dynamo first compiled a static one)
    flops = [r["flops"] for r in dynamo.reports()]
    assert flops[1] > flops[0] and set(flops) == {flops[0], flops[1]}
    assert len(flops) == (2 if dynamic else 3)


class Sorty(torch.nn.Module):
    """``torch.sort`` (unsupported by coec) between two supported ops."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        return torch.sort(self.lin(x), dim=-1).values * 2


def test_an_unsupported_op_falls_back_to_eager_with_one_warning():
    torch.manual_seed(0)
    model, x = Sorty().eval(), torch.randn(4, 8)
    compiled = torch.compile(model, backend="coec", options={"dtype": "fp32"})
    warned = pytest.warns(UserWarning, match=r"sort.*test_dynamo\.py:\d+.*eager")
    with warned as caught, torch.no_grad():
        out = compiled(x)
        again = compiled(x)
    assert len([w for w in caught if "coec backend" in str(w.message)]) == 1
    with torch.no_grad():
        ref = model(x)
    assert torch.equal(out, ref) and torch.equal(again, ref)
    assert coec.last_report()["ran"] == "eager"
    assert "sort" in coec.last_report()["reason"]


def test_strict_makes_an_unsupported_op_an_error():
    model, x = Sorty().eval(), torch.randn(4, 8)
    compiled = torch.compile(model, backend="coec", options={"strict": True})
    failed = pytest.raises(Exception, match=r"unsupported op aten.sort at .*test_dynamo\.py:\d+")
    with failed, torch.no_grad():
        compiled(x)
