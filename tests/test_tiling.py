"""Tiling: kernels run tile by tile, weights stream when SRAM is short, counts follow."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import load_example, rel_err
from hf_models import gpt2, llama, token_ids
from test_counts import small_target, summary
from test_numerics import check

import coec
from coec.runtime.executor import Executor

M, K, N = 64, 128, 256
BF16 = 2


@pytest.mark.parametrize("max_tile", [1, 3])
@pytest.mark.parametrize("name", ["gpt_block", "llama_block", "tiny_llama_lm"])
def test_examples_match_pytorch_tile_by_tile(name, max_tile):
    cm = check(*load_example(name), max_tile=max_tile, step_rows=1)
    tiles = [p["tile"] for k in cm.schedule["kernels"] for p in k["phases"]]
    assert max(tiles) <= max_tile
    assert any(p["extent"] > p["tile"] for k in cm.schedule["kernels"] for p in k["phases"])


@pytest.mark.parametrize("builder", [gpt2, llama])
def test_huggingface_match_pytorch_tile_by_tile(builder):
    check(builder(), (token_ids(),), max_tile=3, step_rows=1)


def test_count_only_equals_execute_with_partial_tiles():
    model, inputs = load_example("llama_block")
    cm = coec.compile(model, inputs, max_tile=3)
    _, counted = Executor(cm.schedule, count_only=True).run()
    cm(*inputs)
    assert summary(counted) == summary(cm.report) == cm.estimate
    assert counted["per_kernel"] == cm.report["per_kernel"]


def linear_model():
    return torch.nn.Linear(K, N, bias=False).eval(), (torch.randn(M, K),)


def test_resident_weight_is_read_once():
    model, inputs = linear_model()
    cm = coec.compile(model, inputs)
    (k,) = cm.schedule["kernels"]
    assert "b_stream" not in k["ops"][0]
    cm(*inputs)
    assert cm.report["bytes"] == {"hbm->sram": (M * K + K * N) * BF16, "sram->hbm": M * N * BF16}


def test_streamed_weight_follows_the_matmul_formula(tmp_path):
    # 48 KiB of SRAM cannot hold the 64 KiB weight: it streams once per row tile.
    model, inputs = linear_model()
    cm = coec.compile(model, inputs, target=str(small_target(tmp_path, sram=48 / 1024)))
    (k,) = cm.schedule["kernels"]
    (phase,) = k["phases"]
    m = phase["tile"]
    assert "b_stream" in k["ops"][0] and m < M
    out = cm(*inputs)
    assert rel_err(out, model(*inputs).detach()) < 1e-2
    a_bytes, b_bytes, c_bytes = M * K * BF16, K * N * BF16, M * N * BF16
    assert cm.report["bytes"]["hbm->sram"] == a_bytes + b_bytes * math.ceil(M / m)
    assert cm.report["bytes"]["sram->hbm"] == c_bytes
    assert cm.report["peak_bytes"]["sram"] <= 48 * 1024


def test_kernel_sram_never_exceeds_the_target(tmp_path):
    target = small_target(tmp_path, sram=24 / 1024)
    model, inputs = load_example("llama_block")
    cm = coec.compile(model, inputs, target=str(target))
    out = cm(*inputs)
    assert rel_err(out, model(*inputs).detach()) < 1e-2
    assert all(k["sram_bytes"] <= 24 * 1024 for k in cm.report["per_kernel"])
    assert cm.report["peak_bytes"]["sram"] <= 24 * 1024


def test_sram_too_small_for_one_row_is_one_capacity_error(tmp_path):
    model, inputs = linear_model()
    with pytest.raises(coec.CapacityError, match=r"SRAM capacity exceeded for kernel k0"):
        target = str(small_target(tmp_path, sram=0.25 / 1024))
        coec.compile(model, inputs, target=target, fusion="none")


def test_max_tile_must_be_positive():
    model, inputs = linear_model()
    with pytest.raises(coec.ConfigError, match="max tile"):
        coec.compile(model, inputs, max_tile=0)
