"""Placement: lifetimes share addresses, DDR takes the least-needed buffers, the runtime checks."""

from __future__ import annotations

import copy
from collections import defaultdict

import pytest
import torch
from conftest import load_example, rel_err
from test_counts import small_target
from test_numerics import MLP

import coec
from coec.runtime.executor import Executor


def overlap(a: dict, b: dict) -> bool:
    return a["offset"] < b["offset"] + b["bytes"] and b["offset"] < a["offset"] + a["bytes"]


def alive_together(a: dict, b: dict) -> bool:
    return not (a["live"][1] < b["live"][0] or b["live"][1] < a["live"][0])


def storage(schedule: dict) -> list[dict]:
    return [b for b in schedule["buffers"].values() if "alias_of" not in b]


def test_buffers_with_disjoint_lifetimes_share_addresses():
    model, inputs = load_example("gpt_block")
    cm = coec.compile(model, inputs, fusion="none")  # unfused: many kernel-boundary buffers
    bufs = storage(cm.schedule)
    shared = [
        (a, b)
        for i, a in enumerate(bufs)
        for b in bufs[i + 1 :]
        if a["tier"] == b["tier"] and overlap(a, b)
    ]
    assert shared, "no address is reused"
    assert all(not alive_together(a, b) for a, b in shared)
    top = max(b["offset"] + b["bytes"] for b in bufs)
    assert top < sum(b["bytes"] for b in bufs)
    cm(*inputs)  # and the runtime, which checks every allocation, agrees


def test_runtime_rejects_overlapping_live_buffers():
    model, x = MLP().eval(), torch.randn(8, 64)
    cm = coec.compile(model, (x,), fusion="none")
    schedule = copy.deepcopy(cm.schedule)
    weights = [b for b in schedule["buffers"].values() if b["kind"] == "weight"]
    weights[1]["offset"] = weights[0]["offset"]
    with pytest.raises(coec.ExecutionError, match="overlaps live buffer"):
        Executor(schedule, cm.weights).run([x.numpy()])


def traffic_per_byte(schedule: dict) -> dict[str, float]:
    moved: dict[str, int] = defaultdict(int)
    for k in schedule["kernels"]:
        dmas = k["loads"] + k["stores"] + [o["b_stream"] for o in k["ops"] if "b_stream" in o]
        for d in dmas:
            b = schedule["buffers"][d["buffer"]]
            moved[b.get("alias_of", d["buffer"])] += d["bytes"]
    return {n: moved[n] / b["bytes"] for n, b in schedule["buffers"].items() if "alias_of" not in b}


def test_ddr_takes_the_buffers_with_the_smallest_bandwidth_need(tmp_path):
    model, inputs = load_example("gpt_block")
    full = coec.compile(model, inputs, fusion="none")  # unfused: activations between kernels
    total = sum(b["bytes"] for b in storage(full.schedule))
    target = small_target(tmp_path, hbm=total / 2 / 2**20)
    cm = coec.compile(model, inputs, target=str(target), fusion="none")
    need = traffic_per_byte(cm.schedule)
    in_ddr = [
        need[n] for n, b in cm.schedule["buffers"].items() if b["tier"] == "ddr" and n in need
    ]
    in_hbm = [
        need[n] for n, b in cm.schedule["buffers"].items() if b["tier"] == "hbm" and n in need
    ]
    assert in_ddr and in_hbm
    assert max(in_ddr) <= min(in_hbm)
    out = cm(*inputs)
    assert rel_err(out, model(*inputs).detach()) < 1e-2
    assert cm.report["peak_bytes"]["hbm"] <= total / 2


def test_model_that_fits_nowhere_names_ddr_and_the_bytes(tmp_path):
    target = small_target(tmp_path, hbm=0.001, ddr=0.002)
    model, inputs = load_example("mlp")
    with pytest.raises(
        coec.CapacityError, match=r"DDR capacity exceeded .*needs [\d,]+ bytes, 2,097 available"
    ):
        coec.compile(model, inputs, target=str(target))
