"""Launch modes (serial, queued, CUDA Graphs) and collective latency: hand-computed figures."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from test_cli import MLP, one_error, run_ok
from test_counts import summary
from test_target import variant

from coec.backend.cost import (
    Work,
    allgather_bytes,
    allreduce_bytes,
    collective_steps,
    kernel_cost,
)
from coec.backend.target import LAUNCH_MODES, load_target
from coec.frontend.collectives import all_reduce
from coec.frontend.export import export_module
from coec.frontend.lower import lower_program
from coec.ir.errors import ConfigError
from coec.pipeline import Options, compile_lowered
from coec.runtime.executor import Executor
from coec.runtime.node import run_node

MiB = 2**20


# -- collectives: per-step latency plus bytes over the link -----------------------------
def sn40l_node(latency_us: float = 0.6):
    t = load_target("sn40l-node")  # 8 sockets, 100 GB/s, 1.6 GHz
    return replace(t, network=replace(t.network, p2p_latency_s=latency_us * 1e-6))


def test_ring_all_reduce_pays_two_n_minus_one_step_latencies():
    t = sn40l_node(0.6)
    n, b = 8, MiB
    assert collective_steps("allreduce", n) == 14  # 2(N−1)
    sent = allreduce_bytes(b, n)
    assert sent == 1_835_008  # 2·7/8 of 1 MiB
    cost = kernel_cost(t, [], {"sram->p2p": sent}, collective_steps("allreduce", n))
    # bytes: ceil(1 835 008 B × 1.6e9 cycles/s / 100e9 B/s) = ceil(29 360.128) = 29 361
    # steps: 14 × 0.6 µs × 1.6 GHz = 13 440
    assert cost.p2p_cycles == 29_361 + 13_440 == 42_801
    assert cost.bound == "p2p"
    # without latency, only the bytes: what coec charged before
    no_latency = kernel_cost(sn40l_node(0), [], {"sram->p2p": sent}, 14)
    assert no_latency.p2p_cycles == 29_361


def test_ring_all_gather_pays_n_minus_one_step_latencies():
    t = sn40l_node(0.6)
    n, b = 8, MiB
    assert collective_steps("allgather", n) == 7  # N−1
    sent = allgather_bytes(b, n)
    assert sent == 917_504  # 7/8 of the 1 MiB result
    cost = kernel_cost(t, [], {"sram->p2p": sent}, collective_steps("allgather", n))
    # bytes: ceil(917 504 × 1.6e9 / 100e9) = ceil(14 680.064) = 14 681
    # steps: 7 × 0.6 µs × 1.6 GHz = 6 720
    assert cost.p2p_cycles == 14_681 + 6_720 == 21_401


def test_one_socket_has_no_collective_steps():
    assert collective_steps("allreduce", 1) == collective_steps("allgather", 1) == 0


def test_tiny_all_reduce_on_a_gpu_node_is_latency_bound():
    """8 KiB (one decode token's hidden state, 4096 × bf16) over 8 H100s: latency dominates."""
    t = load_target("dgx-h100")  # 450 GB/s, 0.6 µs per step, 1.83 GHz
    cost = kernel_cost(t, [], {"sram->p2p": allreduce_bytes(8192, 8)}, 14)
    # bytes: 14 336 B × 1.83e9 / 450e9 = 58.3 -> 59; steps: 14 × 0.6 µs × 1.83 GHz = 15 372
    assert cost.p2p_cycles == 59 + 15_372


class Reduced(torch.nn.Module):
    """A row-parallel shard's epilogue: pointwise, all-reduce, pointwise."""

    def forward(self, x):
        return all_reduce(x * 2.0) + 1.0


def test_all_reduce_kernel_latency_end_to_end_and_estimate_equals_count():
    x = torch.randn(2, 6, 4)
    program = lower_program(export_module(Reduced(), (x,)), "f32")
    options = Options(fusion="none", dtype="fp32", sockets=2, max_tile=2)
    schedule = compile_lowered(program, options).schedule
    (k,) = [k for k in schedule["kernels"] if k["ops"][0]["op"] == "allreduce"]
    (phase,) = k["phases"]
    tiles = math.ceil(phase["extent"] / phase["tile"])
    # 2 sockets: each tile's ring all-reduce is 2 steps; the 2·6·4 fp32 result = 192 B, of
    # which a socket sends 2·(1/2) = all 192 B: ceil(192 × 1.6e9 / 100e9) = ceil(3.072) = 4
    assert round(0.6e-6 * 1.6e9) == 960  # sn40l: 0.6 µs per ring step at 1.6 GHz
    assert tiles == 3  # 6 rows in tiles of 2
    assert k["estimate"]["p2p_cycles"] == 4 + 3 * 2 * 960 == 5_764
    shards = [torch.randn(2, 6, 4) for _ in range(2)]
    outs, report = run_node(schedule, [{}, {}], [[s.numpy()] for s in shards], step_rows=1)
    torch.testing.assert_close(torch.from_numpy(outs[0][0]), (shards[0] * 2 + shards[1] * 2) + 1.0)
    counted = next(r for r in report["per_kernel"] if r["name"] == k["name"])
    assert counted["p2p_cycles"] == k["estimate"]["p2p_cycles"]
    _, count_only = Executor(schedule, count_only=True).run()
    assert summary(count_only) == summary(report)


# -- launch modes: k tiny kernels --------------------------------------------------------
#: a kernel with 32 vector FLOPs, on an H100 (132 SMs, 256 FLOP/cycle each, 1.83 GHz):
#: compute = ceil(32 / 256 / 132) + 16 control = 17 cycles, fill = 64 cycles: 81 on the device
TINY = [[{Work(vector=32): 1}]]
K = 10


@pytest.mark.parametrize(
    "mode, per_kernel, launch",
    [
        # serial, host-launched: 4 µs × 1.83 GHz = 7 320 launch cycles, then the body
        ("software", 7_320 + 81, 7_320),
        # serial, on-chip: 1 µs = 1 830 cycles, then the body
        ("hardware", 1_830 + 81, 1_830),
        # queued: max(81, issue 3.3 µs = 6 039) + gap 0.5 µs = 915
        ("async", 6_039 + 915, 6_039 - 81 + 915),
        # CUDA Graph: max(81, issue 1 µs = 1 830) + gap 915
        ("graph", 1_830 + 915, 1_830 - 81 + 915),
    ],
)
def test_k_tiny_kernels_under_each_launch_mode(mode, per_kernel, launch):
    t = load_target("dgx-h100").with_launch(mode)
    cost = kernel_cost(t, TINY, {})
    assert (cost.compute_cycles, cost.fill_cycles) == (17, 64)
    assert cost.launch_cycles == launch
    assert cost.cycles == per_kernel
    assert cost.bound == "launch"
    total = K * cost.cycles
    assert total == {"software": 74_010, "hardware": 19_110, "async": 69_540, "graph": 27_450}[mode]
    assert K * cost.seconds == pytest.approx(total / 1.83e9)


def test_a_kernel_longer_than_the_issue_interval_pays_only_the_gap():
    t = load_target("dgx-h100").with_launch("async")
    # 132 SMs × 256 = 33 792 vector FLOP/cycle: 10 000 cycles of work (+16 control, +64 fill)
    cost = kernel_cost(t, [[{Work(vector=33_792 * 10_000): 1}]], {})
    assert cost.compute_cycles == 10_016
    assert cost.launch_cycles == 915  # the gap: the host's issues hide behind the body
    assert cost.cycles == 10_016 + 64 + 915
    assert cost.bound == "compute"


def test_queued_modes_report_cycles_as_the_cost_model_on_a_compiled_model():
    from test_counts import mlp_compiled

    for mode in ("async", "graph"):
        cm, _, x = mlp_compiled(target="dgx-h100", launch=mode, fusion="none", sockets=1)
        cm(x)
        t = load_target("dgx-h100").with_launch(mode)
        clock = t.compute.clock_hz
        issue, gap = round(t.launch.seconds * clock), round(t.launch.gap_s * clock)
        total = 0
        for k in cm.report["per_kernel"]:
            body = max(k[f"{p}_cycles"] for p in ("compute", "hbm", "ddr", "p2p"))
            assert k["cycles"] == max(body + k["fill_cycles"], issue) + gap
            total += k["cycles"]
        assert cm.report["cycles"] == total


def test_launch_modes_and_gpu_defaults():
    assert LAUNCH_MODES == ("software", "hardware", "async", "graph")
    for gpu in ("dgx-a100", "dgx-h100"):
        assert load_target(gpu).launch.mode == "async"
    for rdu in ("sn40l", "sn40l-node", "sn40l-16"):
        t = load_target(rdu)
        assert t.launch.mode == "software"  # unchanged: the SN40L keeps its two modes
        with pytest.raises(ConfigError, match="async_issue_us, gap_us"):
            t.with_launch("async")
        with pytest.raises(ConfigError, match="graph_issue_us, gap_us"):
            t.with_launch("graph")


def test_a_queued_default_mode_needs_its_keys(tmp_path):
    path = variant(tmp_path, 'mode = "software"', 'mode = "async"')
    with pytest.raises(ConfigError, match=r"\[launch\] mode = 'async' needs 'async_issue_us'"):
        load_target(path)
    ok = variant(
        tmp_path,
        'mode = "software"',
        'mode = "graph"\ngraph_issue_us = 2\ngap_us = 0',
        name="graph.toml",
    )
    t = load_target(ok)
    assert (t.launch.mode, t.launch.graph_issue_s, t.launch.gap_s) == ("graph", 2e-6, 0)
    assert t.launch.async_issue_s is None


def test_cli_launch_accepts_the_queued_modes(capsys):
    import json

    argv = ["compile", MLP, "--target", "dgx-h100", "--sockets", "1", "--fusion", "none", "--json"]
    seconds = {}
    for mode in LAUNCH_MODES:
        report = json.loads(run_ok([*argv, "--launch", mode], capsys))
        assert report["launch"] == mode
        seconds[mode] = report["seconds"]
    assert seconds["graph"] < seconds["async"] < seconds["software"]
    one_error(
        ["compile", MLP, "--target", "sn40l", "--launch", "graph"],
        capsys,
        "graph_issue_us",
    )
