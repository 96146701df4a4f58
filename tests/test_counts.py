"""Exact counts: bytes per tier pair, peaks and cycles against hand-computed values;
count-only equals execute; the backend's estimate equals the runtime's counts."""

from __future__ import annotations

import copy
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, load_example, rel_err
from hf_models import llama, token_ids
from test_numerics import MLP

import coec
from coec.backend.target import load_target
from coec.runtime.executor import Executor

B, IN, HID, OUT = 8, 64, 128, 32
BF16 = 2


def summary(report: dict) -> dict:
    return {k: report[k] for k in ("kernels", "flops", "cycles", "seconds", "bytes", "peak_bytes")}


def mlp_compiled(**kw) -> tuple[coec.CompiledModel, torch.nn.Module, torch.Tensor]:
    """The MLP compiled unfused (the hand counts below are the baseline's) unless ``kw`` says."""
    model, x = MLP().eval(), torch.randn(B, IN)
    return coec.compile(model, (x,), **{"fusion": "none", **kw}), model, x


def test_mlp_bytes_per_tier_pair_match_hand_count():
    cm, _, x = mlp_compiled()
    cm(x)
    # Unfused: matmul, +bias, relu, matmul, +bias; each reads its operands from HBM
    # into SRAM and writes its result back.
    loads = (
        (B * IN + HID * IN)  # x, W1
        + (B * HID + HID)  # h, b1
        + B * HID  # relu
        + (B * HID + OUT * HID)  # h, W2
        + (B * OUT + OUT)  # y, b2
    ) * BF16
    stores = (3 * B * HID + 2 * B * OUT) * BF16
    assert cm.report["bytes"] == {"hbm->sram": loads, "sram->hbm": stores}
    assert cm.report["kernels"] == 5
    # matmuls 2MNK; bias add, relu, bias add one FLOP per element
    assert cm.report["flops"] == 2 * B * IN * HID + 2 * B * HID * OUT + 2 * B * HID + B * OUT


def test_mlp_peaks_match_hand_count():
    cm, _, x = mlp_compiled()
    cm(x)
    weights = (HID * IN + HID + OUT * HID + OUT) * BF16
    # at most two B x HID activations are live at once (producer's input and output)
    assert cm.report["peak_bytes"]["hbm"] == weights + B * IN * BF16 + 2 * B * HID * BF16
    assert cm.report["peak_bytes"]["sram"] == (B * IN + HID * IN + B * HID) * BF16
    assert cm.report["peak_bytes"]["ddr"] == 0


def test_first_kernel_cycles_follow_the_cost_model():
    cm, _, x = mlp_compiled()
    cm(x)
    t = load_target("sn40l")
    k0 = cm.report["per_kernel"][0]
    clock = t.compute.clock_hz
    (phase,) = cm.schedule["kernels"][0]["phases"]
    tiles = math.ceil(phase["extent"] / phase["tile"])
    c, hbm_tier = t.compute, t.memory["hbm"]
    lanes = min(1.0, phase["tile"] / c.simd_lanes)
    per_tile = 2 * phase["tile"] * IN * HID / (c.matmul_flop_per_cycle_per_pcu * lanes)
    # output tiles of 32 x 32 dealt to the PCUs in waves (split along K when too few)
    out_tiles = math.ceil(phase["tile"] / c.matmul_tile_rows) * math.ceil(HID / c.matmul_tile_cols)
    units = out_tiles * max(1, c.pcus // out_tiles)
    waves = units / (math.ceil(units / c.pcus) * c.pcus)
    compute = tiles * (math.ceil(per_tile / (c.pcus * waves)) + t.launch.tile_cycles_per_stage)
    nbytes = (B * IN + HID * IN + B * HID) * BF16
    hbm = round(hbm_tier.latency_s * clock) + math.ceil(
        nbytes * clock / (hbm_tier.bandwidth_Bps * hbm_tier.efficiency)
    )
    launch = round(t.launch.software_s * clock)
    assert k0["cycles"] == launch + max(compute, hbm) + t.launch.fill_cycles_per_stage
    assert k0["bound"] == "launch"


@pytest.mark.parametrize("launch", ["software", "hardware"])
def test_hardware_launch_is_cheaper(launch):
    sw, _, _ = mlp_compiled(launch="software")
    cm, _, _ = mlp_compiled(launch=launch)
    assert cm.report["kernels"] == sw.report["kernels"]
    assert (cm.report["cycles"] < sw.report["cycles"]) == (launch == "hardware")


@pytest.mark.parametrize("name", ["mlp", "gpt_block", "llama_block"])
def test_count_only_equals_execute_equals_estimate(name):
    model, inputs = load_example(name)
    cm = coec.compile(model, inputs)
    _, counted = Executor(cm.schedule, count_only=True).run()
    cm(*inputs)
    assert summary(counted) == summary(cm.report) == cm.estimate
    assert counted["per_kernel"] == cm.report["per_kernel"]


def test_count_only_equals_execute_on_huggingface_llama():
    model = llama()
    ids = token_ids()
    cm = coec.compile(model, (ids,))
    _, counted = Executor(cm.schedule, count_only=True).run()
    cm(ids)
    assert summary(counted) == summary(cm.report) == cm.estimate


def test_same_model_twice_gives_byte_identical_schedule():
    a, _, _ = mlp_compiled()
    b, _, _ = mlp_compiled()
    assert a.schedule_json() == b.schedule_json()


def test_schedule_is_identical_across_processes(tmp_path):
    script = (
        "import sys, coec, runpy;"
        "ns = runpy.run_path(sys.argv[1]);"
        "cm = coec.compile(ns['model'](), ns['example_inputs']());"
        "sys.stdout.write(cm.schedule_json())"
    )
    outs = []
    for seed in ("1", "2"):
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
        r = subprocess.run(
            [sys.executable, "-c", script, str(ROOT / "examples" / "gpt_block.py")],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        outs.append(r.stdout)
    assert outs[0] == outs[1] and '"format": "coec.schedule/4"' in outs[0]


def small_target(tmp_path: Path, **capacity_mib: float) -> Path:
    """sn40l.toml with the named tiers' capacities replaced (in MiB), as a user's file."""
    text = (ROOT / "backend" / "targets" / "sn40l.toml").read_text()
    for tier, mib in capacity_mib.items():
        pattern = rf"(\[memory\.{tier}\]\n)capacity_\w+ = \{{ value = [\d.]+"
        text, n = re.subn(pattern, rf"\1capacity_MiB = {{ value = {mib!r}", text)
        assert n == 1, tier
    path = tmp_path / "small.toml"
    path.write_text(text)
    return path


def test_small_hbm_spills_weights_to_ddr_and_still_matches(tmp_path):
    # HBM holds the input and the first weight only; the rest must go to DDR.
    target = small_target(tmp_path, hbm=(B * IN + HID * IN) * BF16 / 2**20 + 1e-4)
    cm, model, x = mlp_compiled(target=str(target))
    out = cm(x)
    assert rel_err(out, model(x).detach()) < 1e-2
    assert cm.report["bytes"].get("ddr->sram", 0) > 0
    assert cm.report["peak_bytes"]["ddr"] > 0
    tiers = {b["tier"] for b in cm.schedule["buffers"].values()}
    assert tiers == {"hbm", "ddr"}


def test_model_larger_than_hbm_and_ddr_is_one_capacity_error(tmp_path):
    target = small_target(tmp_path, hbm=0.001, ddr=0.002)
    with pytest.raises(coec.CapacityError, match=r"needs [\d,]+ bytes, [\d,]+ available"):
        mlp_compiled(target=str(target))


def test_runtime_enforces_sram_capacity():
    # The runtime checks capacities itself: shrink SRAM in a valid schedule below
    # what its first kernel holds, and execution must stop there.
    cm, _, x = mlp_compiled()
    schedule = copy.deepcopy(cm.schedule)
    need = schedule["kernels"][0]["sram_bytes"]
    schedule["target"]["memory"]["sram"]["capacity_bytes"] = need - 1
    with pytest.raises(
        coec.CapacityError, match=rf"SRAM capacity exceeded.*{need - 1:,} available"
    ):
        Executor(schedule, cm.weights).run([x.numpy()])


@pytest.mark.parametrize(
    ("work", "pcus", "expected"),
    [
        ([3.0, 1.0], 10, [7, 3]),  # 1 each, then 8 shared 6:2
        ([1.0] * 3, 10, [4, 3, 3]),  # remainders tie: the earlier stage first
        ([1000.0] + [1.0] * 5, 8, [3, 1, 1, 1, 1, 1]),  # tiny stages still get one, sum stays 8
        ([0.0, 0.0], 4, [1, 1]),
        ([5.0] * 4, 3, [1, 1, 1, 1]),  # more stages than PCUs: one each
    ],
)
def test_pcu_allocation_uses_the_array_exactly(work, pcus, expected):
    from coec.backend.cost import allocate_pcus

    got = allocate_pcus(work, pcus)
    assert got == expected
    if 0 < len(work) < pcus and sum(work):
        assert sum(got) == pcus


def test_no_kernel_uses_more_pcus_than_the_chip_has():
    """llama2-7b decode fused on 8 sockets: every kernel's stages fit the 1040 PCUs."""
    from coec.commands import compile_zoo_model

    result = compile_zoo_model(
        "llama2-7b", phase="decode", seq=4096, layers=2, target="sn40l-node", fusion="dataflow"
    )
    pcus = result.model.schedule["target"]["compute"]["pcus"]
    for k in result.model.schedule["kernels"]:
        assert sum(k["estimate"]["stage_pcus"]) <= pcus, k["name"]
