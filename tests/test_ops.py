"""Op coverage: small modules exercising each lowering, compared with PyTorch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_numerics import check

import coec

X = (torch.randn(2, 6, 8),)
CASES = {
    "unary": lambda x: torch.sigmoid(x) + torch.tanh(x) - x.abs().sqrt() + torch.exp(x).log(),
    "trig": lambda x: torch.sin(x) * torch.cos(x) + torch.erf(x) - torch.neg(x).reciprocal(),
    "gelu": lambda x: F.gelu(x) + F.gelu(x, approximate="tanh") + F.silu(x) + F.relu(x),
    "scalars": lambda x: (2.0 - x) * 3 / 4 + x**2 - torch.rsqrt(x * x + 1),
    "compare_where": lambda x: torch.where(x > 0.1, x, torch.zeros_like(x) - 1.0),
    "masked_fill": lambda x: x.masked_fill(x < 0, -5.0),
    "clamp": lambda x: x.clamp(-0.5, 0.5) + x.clamp(min=0.2),
    "minmax": lambda x: torch.maximum(x, x * 0.5) + torch.minimum(x, -x),
    "reduce": lambda x: (
        x.sum(-1, keepdim=True) + x.mean(1, keepdim=True) + x.amax(-1, keepdim=True)
    ),
    "reduce_all": lambda x: x - x.sum() + x.amin(dim=(0, 2), keepdim=True),
    "softmax": lambda x: F.softmax(x, dim=-1) + F.log_softmax(x, dim=1),
    "layer_norm": lambda x: F.layer_norm(x, (8,)) + F.layer_norm(x, (6, 8)),
    "rms_norm": lambda x: F.rms_norm(x, (8,), weight=torch.ones(8) * 2, eps=1e-6),
    "permute": lambda x: x.permute(2, 0, 1).contiguous() * 2,
    "transpose_matmul": lambda x: x @ x.transpose(-1, -2),
    "slice_cat": lambda x: torch.cat([x[..., 4:], -x[..., :4]], dim=-1),
    "strided_slice": lambda x: x[:, ::2, 1::3] + 1,
    "select": lambda x: x[:, 2] + x[1, 3],
    "split": lambda x: torch.split(x, [3, 5], dim=-1)[1] * torch.chunk(x, 2, dim=-1)[0].sum(),
    "expand": lambda x: x[:, :1, :].expand(2, 6, 8) + x,
    "reshape": lambda x: x.reshape(12, 8).t().reshape(8, 2, 6).sum(0),
    "index_select": lambda x: torch.index_select(x, 1, torch.tensor([0, 5, 2])),
    "bmm": lambda x: torch.bmm(x, x.transpose(1, 2).contiguous()),
    "sdpa_mask": lambda x: F.scaled_dot_product_attention(
        x.view(2, 2, 3, 8),
        x.view(2, 2, 3, 8),
        x.view(2, 2, 3, 8),
        attn_mask=torch.ones(3, 3).tril().bool(),
    ),
    "sdpa_causal_scale": lambda x: F.scaled_dot_product_attention(
        x.view(2, 2, 3, 8), x.view(2, 2, 3, 8), x.view(2, 2, 3, 8), is_causal=True, scale=0.3
    ),
}


class Lambda(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("name", sorted(CASES))
def test_op(name):
    check(Lambda(CASES[name]), (X[0].clone(),))


def test_embedding_and_gather_with_int_inputs():
    emb = torch.nn.Embedding(50, 8)
    ids = torch.tensor([[1, 5, 7], [0, 49, 3]])
    check(emb, (ids,))


def test_addmm_and_bias_free_linear():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(8, 4))
            self.b = torch.nn.Parameter(torch.randn(4))
            self.lin = torch.nn.Linear(4, 3, bias=False)

        def forward(self, x):
            return self.lin(torch.addmm(self.b, x, self.w, beta=0.5, alpha=2.0))

    check(M(), (torch.randn(5, 8),))


def test_multiple_outputs():
    check(Lambda(lambda x: (x + 1, x.sum(-1), {"y": x * 2})), (torch.randn(3, 4),))


def test_unsupported_op_names_op_and_source_line():
    with pytest.raises(coec.UnsupportedOpError, match=r"aten\.sort.*test_ops\.py:\d+"):
        coec.compile(Lambda(lambda x: torch.sort(x, 0).values), (torch.randn(3, 4),))


def test_index_with_several_index_tensors():
    """HF padding masks: ``mask[arange(B)[:, None, None, None], arange(S)]`` (constant
    indices, adjacent dims), and dynamic / non-adjacent / negative indices."""
    b = torch.arange(2)[:, None, None, None]
    s = torch.arange(6)[None, None, None, :]
    check(Lambda(lambda x: x[:, :, 0][b, s] * 2), X)
    rows = torch.tensor([[1, 0], [-1, 1]])
    cols = torch.tensor([[2, 7], [0, -3]])
    check(Lambda(lambda x: x[rows, :, cols] + 1), X)  # non-adjacent: index dims come first

    class Dynamic(torch.nn.Module):
        def forward(self, x, i, j):
            return x[i, j] - 1

    check(Dynamic(), (X[0], torch.tensor([0, 1, -1]), torch.tensor([5, -2, 3])))


@pytest.mark.parametrize("p", [2, 1, float("inf"), 3])
def test_vector_norm_and_normalize(p):
    check(Lambda(lambda x: torch.linalg.vector_norm(x, ord=p, dim=-1, keepdim=True) + x), X)
    if p == 2:
        check(Lambda(lambda x: F.normalize(x, p=2, dim=1)), X)


def test_topk_values_and_indices_match_torch():
    """A router's top-k: the values and the positions, largest first, against torch."""
    import coec

    class Router(torch.nn.Module):
        def forward(self, x):
            v, i = torch.topk(torch.softmax(x, -1), 3, dim=-1)
            s, j = torch.topk(x, 2, dim=1, largest=False)
            return v / v.sum(-1, keepdim=True), i, s, j

    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    for fusion in ("none", "dataflow"):
        outs = coec.compile(Router().eval(), (x,), dtype="fp32", fusion=fusion)(x)
        for got, want in zip(outs, Router()(x), strict=True):
            torch.testing.assert_close(got.to(want.dtype), want)
