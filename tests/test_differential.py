"""Differential testing: random graphs, compiled under every policy and tiling, match PyTorch.

Graphs are chains and DAGs (every op may read any earlier value, so inputs are
shared) over matmul, elementwise, reduce, softmax, layernorm, reshape, permute,
slice and concat. The default run keeps the case count modest and deterministic;
``-m slow`` runs many more.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coec.api import CompiledModel, flatten_outputs
from coec.frontend.export import export_module
from coec.frontend.lower import lower_program
from coec.pipeline import Options, compile_lowered

UNARY = {
    "relu": torch.relu,
    "neg": torch.neg,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "silu": F.silu,
    "exp_tanh": lambda x: torch.exp(torch.tanh(x)),
    "sqrt_abs": lambda x: torch.sqrt(x.abs() + 1),
}
BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "max": torch.maximum}


@st.composite
def programs(draw):
    """A random program: (value shapes, steps, outputs); a step names its op and operands."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(2, 8)))
    shapes = [shape]
    steps = []
    for _ in range(draw(st.integers(1, 7))):
        i = draw(st.integers(0, len(shapes) - 1))
        s = shapes[i]
        kind = draw(
            st.sampled_from(
                [
                    "unary",
                    "binary",
                    "matmul",
                    "bmm",
                    "reduce",
                    "softmax",
                    "layernorm",
                    "reshape",
                    "permute",
                    "slice",
                    "concat",
                ]
            )
        )
        if kind == "unary":
            steps.append(("unary", i, draw(st.sampled_from(sorted(UNARY)))))
        elif kind == "binary":
            partners = [j for j, t in enumerate(shapes) if t == s or t == s[:-1] + (1,)]
            steps.append(
                (
                    "binary",
                    i,
                    draw(st.sampled_from(partners)),
                    draw(st.sampled_from(sorted(BINARY))),
                )
            )
        elif kind == "matmul":
            n = draw(st.integers(1, 8))
            steps.append(("matmul", i, n))
            s = s[:-1] + (n,)
        elif kind == "bmm":
            steps.append(("bmm", i))
            s = s[:-1] + (s[-2],)
        elif kind == "reduce":
            axis = draw(st.sampled_from([-1, -2]))
            steps.append(("reduce", i, axis, draw(st.sampled_from(["sum", "mean", "amax"]))))
            s = tuple(1 if k == len(s) + axis else d for k, d in enumerate(s))
        elif kind == "softmax":
            steps.append(("softmax", i, draw(st.integers(0, len(s) - 1))))
        elif kind == "layernorm":
            steps.append(("layernorm", i))
        elif kind == "reshape":
            if len(s) == 3:
                steps.append(("merge", i))
                s = (s[0], s[1] * s[2])
            else:
                steps.append(("split", i))
                s = (s[0], 1, s[1])
        elif kind == "permute":
            perm = tuple(draw(st.permutations(range(len(s)))))
            steps.append(("permute", i, perm))
            s = tuple(s[p] for p in perm)
        elif kind == "slice":
            axis = draw(st.integers(0, len(s) - 1))
            start = draw(st.integers(0, s[axis] - 1))
            steps.append(("slice", i, axis, start))
            s = tuple(d - start if k == axis else d for k, d in enumerate(s))
        else:
            axis = draw(st.integers(0, len(s) - 1))
            steps.append(("concat", i, axis))
            s = tuple(2 * d if k == axis else d for k, d in enumerate(s))
        shapes.append(s)
    outputs = sorted({len(shapes) - 1, draw(st.integers(1, len(shapes) - 1))})
    return shapes, steps, outputs


class RandomGraph(torch.nn.Module):
    def __init__(self, shapes, steps, outputs):
        super().__init__()
        self.steps, self.outputs = steps, outputs
        self.weights = torch.nn.ParameterList()
        self.norms = torch.nn.ModuleList()
        for step in steps:  # parameters in step order, as forward consumes them
            width = shapes[step[1]][-1]
            if step[0] == "matmul":
                self.weights.append(torch.nn.Parameter(torch.randn(width, step[2]) / 3))
            if step[0] == "layernorm":
                self.norms.append(torch.nn.LayerNorm(width))

    def forward(self, x):
        vals, w, n = [x], iter(self.weights), iter(self.norms)
        for step in self.steps:
            v = vals[step[1]]
            op = step[0]
            if op == "unary":
                y = UNARY[step[2]](v)
            elif op == "binary":
                y = BINARY[step[3]](v, vals[step[2]])
            elif op == "matmul":
                y = v @ next(w)
            elif op == "bmm":
                y = v @ v.transpose(-1, -2)
            elif op == "reduce":
                y = getattr(torch, step[3])(v, dim=step[2], keepdim=True)
            elif op == "softmax":
                y = torch.softmax(v, dim=step[2])
            elif op == "layernorm":
                y = next(n)(v)
            elif op == "merge":
                y = v.reshape(v.shape[0], -1)
            elif op == "split":
                y = v.reshape(v.shape[0], 1, v.shape[1])
            elif op == "permute":
                y = v.permute(*step[2])
            elif op == "slice":
                y = v.narrow(step[2], step[3], v.shape[step[2]] - step[3])
            else:
                y = torch.cat([v, v * 0.5], dim=step[2])
            vals.append(y)
        return tuple(vals[i] for i in self.outputs)


def check_program(program, max_tile):
    shapes, steps, outputs = program
    torch.manual_seed(0)
    model = RandomGraph(shapes, steps, outputs).eval()
    x = torch.randn(*shapes[0])
    with torch.no_grad():
        refs = flatten_outputs(model(x))
    lowered = lower_program(export_module(model, (x,)), "f32")
    for fusion in ("none", "epilogue", "dataflow"):
        cm = CompiledModel(  # tiny tiles: the runtime moves data strictly tile by tile
            compile_lowered(lowered, Options(fusion=fusion, dtype="fp32", max_tile=max_tile)),
            step_rows=1 if max_tile else 256,
        )
        outs = cm(x)
        outs = outs if isinstance(outs, tuple) else (outs,)
        for out, ref in zip(outs, refs, strict=True):
            # an output that cancels to ~0 (the sum of a layernorm's outputs) is judged
            # against the unit scale of the graph's values, not against its own rounding
            scale = max(ref.abs().max().item(), 1e-2)
            err = (out - ref).abs().max().item() / scale
            assert err <= 1e-4, (fusion, max_tile, steps, err)


COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@settings(max_examples=120, **COMMON)
@given(programs(), st.sampled_from([None, 1, 2, 3]))
def test_random_graphs_match_pytorch(program, max_tile):
    check_program(program, max_tile)


@pytest.mark.slow
@settings(max_examples=1500, **COMMON)
@given(programs(), st.sampled_from([None, 1, 2, 3, 5]))
def test_random_graphs_match_pytorch_long(program, max_tile):
    check_program(program, max_tile)
