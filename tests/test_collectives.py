"""Collectives across the sockets of a node: ``df.allgather`` end to end, and its IR rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_counts import summary

import coec
from coec.frontend.collectives import all_gather
from coec.frontend.export import export_module
from coec.frontend.lower import lower_program
from coec.ir import ops as df
from coec.ir import parse_module, print_module
from coec.ir.types import TensorType
from coec.pipeline import Options, compile_lowered
from coec.runtime.executor import Executor
from coec.runtime.node import run_node


class Gathered(torch.nn.Module):
    """A column-parallel shard's epilogue: pointwise, all-gather along ``dim``, pointwise."""

    def __init__(self, dim: int, sockets: int):
        super().__init__()
        self.dim, self.sockets = dim, sockets

    def forward(self, x):
        return all_gather(torch.tanh(x) * 2.0, self.dim, self.sockets) + 1.0


def compile_gather(dim: int, sockets: int, fusion: str, gather_sockets: int | None = None):
    x = torch.randn(2, 6, 4)
    program = lower_program(export_module(Gathered(dim, gather_sockets or sockets), (x,)), "f32")
    options = Options(fusion=fusion, dtype="fp32", sockets=sockets, max_tile=2)
    return compile_lowered(program, options).schedule


@pytest.mark.parametrize("fusion", ["none", "dataflow"])
@pytest.mark.parametrize("sockets, dim", [(2, -1), (3, -1), (2, 0)])
def test_all_gather_joins_the_sockets_shards_in_socket_order(fusion, sockets, dim):
    schedule = compile_gather(dim, sockets, fusion)
    ops = [op["op"] for k in schedule["kernels"] for op in k["ops"]]
    assert ops.count("allgather") == 1
    gen = torch.Generator().manual_seed(sockets)
    shards = [torch.randn(2, 6, 4, generator=gen) for _ in range(sockets)]
    outs, report = run_node(
        schedule, [{} for _ in shards], [[s.numpy()] for s in shards], step_rows=1
    )
    expected = torch.cat([torch.tanh(s) * 2.0 for s in shards], dim=dim) + 1.0
    for socket_outs in outs:  # every socket gets the whole result
        np.testing.assert_allclose(socket_outs[0], expected.numpy(), rtol=1e-6, atol=1e-6)
    # a ring all-gather: each socket sends its shard (2·6·4 fp32) to each of the N−1 others
    assert report["bytes"]["sram->p2p"] == (sockets - 1) * 2 * 6 * 4 * 4
    _, counted = Executor(schedule, count_only=True).run()
    assert summary(counted) == summary(report)


def test_an_all_gather_for_other_sockets_than_the_schedule_is_an_error():
    schedule = compile_gather(-1, 2, "none", gather_sockets=4)
    with pytest.raises(coec.ExecutionError, match="does not join the schedule's 2 socket"):
        Executor(schedule, count_only=True).run()


def test_all_gather_verifier_and_text_round_trip():
    x = df.WeightOp("x", "param", TensorType((2, 3), "bf16"))
    good = df.AllGatherOp(x.result, 1, TensorType((2, 12), "bf16"))
    good.verify()
    assert good.parts == 4
    for axis, shape in ((1, (2, 10)), (0, (2, 6)), (2, (2, 3))):
        with pytest.raises(coec.VerifyError):
            df.AllGatherOp(x.result, axis, TensorType(shape, "bf16")).verify()
    text = print_module(lower_program(export_module(Gathered(-1, 2), (torch.randn(2, 3),))).module)
    assert "df.allgather" in text and "axis = 1" in text
    assert print_module(parse_module(text)) == text
