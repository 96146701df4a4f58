"""The runtime as an interpreter: one method per op kind, overridable by a subclass."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from conftest import load_example

import coec
from coec.runtime.executor import Executor, Mode


class Recording(Executor):
    """Counts the elementwise ops it runs, by kind, and makes ReLU the identity."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()

    def run_elementwise(self, op, ins, tile):
        kind = op.attrs["kind"]
        self.calls[kind] += 1
        if kind == "relu":
            return ins[0]
        return super().run_elementwise(op, ins, tile)


@pytest.fixture(scope="module")
def mlp():
    model, inputs = load_example("mlp")
    return model, inputs, coec.compile(model, inputs, fusion="dataflow", dtype="fp32")


def test_a_subclass_overrides_one_op_kind(mlp):
    model, (x,), cm = mlp
    plain_out, plain_report = Executor(cm.schedule, cm.weights).run([x.numpy()])
    ex = Recording(cm.schedule, cm.weights)
    (out,), report = ex.run([x.numpy()])

    # every elementwise op went through the override, once per tile step: two bias adds, a relu
    assert ex.calls == {"add": 2, "relu": 1}
    # ... and what it returned is what the model computed: no ReLU now
    with torch.no_grad():
        no_relu = model.fc2(model.fc1(x)).numpy()
    np.testing.assert_allclose(out, no_relu, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out, plain_out[0], atol=1e-3)
    # the counts are the cost model's, not the method's: the same as the plain executor's
    assert report == plain_report


def test_counting_runs_no_op(mlp):
    _, _, cm = mlp
    ex = Recording(cm.schedule, count_only=True)
    assert ex.mode is Mode.COUNT and ex.count_only
    outs, report = ex.run()
    assert outs == [] and not ex.calls
    assert report["flops"] == cm.estimate["flops"]


def test_every_op_kind_has_its_method():
    from coec.backend.schedule import OP_NAMES

    missing = [op for op in sorted(OP_NAMES) if not callable(getattr(Executor, f"run_{op}", None))]
    assert not missing, f"no run_<op> method for {missing}"
