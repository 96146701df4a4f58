"""The fusion benchmark and the Monarch FFT convolution it runs."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from test_numerics import check

import coec
from coec.backend.target import load_target
from coec.bench.fusion import (
    CONFIGS,
    SWEEPS,
    Bench,
    assumption_sweeps,
    bench_fusion,
    compile_bench,
    count,
    launch_sweep,
    relaunch,
    write_outputs,
)
from coec.models.fftconv import MonarchFFTConv, monarch_factors


def circular_convolution(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """The reference: y = irfft(rfft(x) · rfft(k)), torch.fft in float64."""
    n = x.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(x.double()) * torch.fft.rfft(taps.double()), n=n).float()


@pytest.mark.parametrize(
    ("n", "factors"), [(8, None), (64, (2, 8, 4)), (512, (8, 8, 8)), (4096, None)]
)
def test_monarch_fft_convolution_matches_torch_fft(n, factors):
    model = MonarchFFTConv(3, n, factors).eval()
    assert math.prod(model.factors) == n
    x = torch.randn(2, 3, n)
    ref = circular_convolution(x, model.taps)
    assert (model(x) - ref).abs().max() < 1e-5 * ref.abs().max().item()


def test_monarch_factors_are_small_and_balanced():
    assert monarch_factors(1 << 20) == (32, 32, 32, 32)  # the bench's: four stages
    assert monarch_factors(4096) == (16, 16, 16)
    assert monarch_factors(512) == (32, 16)
    with pytest.raises(ValueError):
        monarch_factors(48)


@pytest.mark.parametrize("fusion", ["none", "dataflow"])
def test_monarch_fft_convolution_compiled(fusion):
    """8·8·8 points, tiled along channels, through the compiler and runtime."""
    model = MonarchFFTConv(3, 512, (8, 8, 8)).eval()
    x = torch.randn(2, 3, 512)
    cm = check(model, (x,), fusion=fusion, max_tile=1)
    assert (cm(x) - circular_convolution(x, model.taps)).abs().max() < 1e-5
    if fusion == "dataflow":  # one kernel, streamed along channels: x is read once
        assert cm.report["kernels"] == 1
        x_bytes = x.numel() * 4
        assert cm.report["bytes"]["hbm->sram"] < 2 * x_bytes + 2 * model.kr.numel() * 4


def test_monarch_fft_convolution_at_the_bench_factorization():
    """2^20 = 32·32·32·32 (the bench's stages) on one channel, executed with data."""
    n = 1 << 20
    model = MonarchFFTConv(1, n).eval()
    assert model.factors == (32, 32, 32, 32)
    x = torch.randn(1, 1, n)
    cm = coec.compile(model, (x,), dtype="fp32")
    ref = circular_convolution(x, model.taps)
    assert (cm(x) - ref).abs().max() < 1e-5 * ref.abs().max().item()


def test_bench_fusion_rows_and_files(tmp_path):
    benches = (
        Bench("tiny-llama", "decode", 16, "sn40l"),
        Bench("tiny-llama", "prefill", 16, "sn40l"),
    )
    steps = []
    rows = bench_fusion(benches, progress=steps.append)
    assert len(rows) == len(steps) == 2 * len(CONFIGS)
    by = {(r["phase"], r["config"]): r for r in rows}
    fused, same, resplit = (c.label for c in CONFIGS[1:])
    for phase in ("prefill", "decode"):
        unfused = by[(phase, "unfused")]
        assert unfused["speedup"] == unfused["step_speedup"] == 1.0
        assert by[(phase, fused)]["kernels"] < unfused["kernels"]
        # hardware launch on the fused kernels: the same partition, never slower
        assert by[(phase, same)]["kernels"] == by[(phase, fused)]["kernels"]
        assert by[(phase, same)]["hbm_bytes"] == by[(phase, fused)]["hbm_bytes"]
        assert by[(phase, same)]["seconds"] <= by[(phase, fused)]["seconds"]
        assert by[(phase, resplit)]["seconds"] < unfused["seconds"]
        # each step is the change from the row before; together, the speedup
        total = math.prod(by[(phase, c.label)]["step_speedup"] for c in CONFIGS)
        assert total == pytest.approx(by[(phase, resplit)]["speedup"])
    sweep = launch_sweep(benches[0], overheads_us=(1, 50))
    assert sweep[0]["speedup"] < sweep[1]["speedup"]  # fusion matters more as launches cost more
    paths = write_outputs(rows, sweep, tmp_path)
    assert {p.name for p in paths} == {
        "results.csv",
        "results.json",
        "speedups.png",
        "launch_sweep.png",
    }
    assert (tmp_path / "speedups.png").read_bytes()[:4] == b"\x89PNG"
    with open(tmp_path / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [c["label"] for c in saved["configs"]] == [c.label for c in CONFIGS]


def test_hardware_launch_on_the_same_kernels_only_changes_launch():
    """relaunch keeps every kernel, tile and byte; only launches get cheaper."""
    from coec.backend.target import load_target

    bench = Bench("tiny-llama", "decode", 16, "sn40l")
    target = load_target("sn40l")
    fused = compile_bench(bench, target.with_launch("software"), "dataflow")
    same = relaunch(fused, target.with_launch("hardware"))
    assert same.kernels == fused.kernels and same.options.launch == "hardware"
    a, b = count(fused), count(same)
    assert (a["kernels"], a["flops"], a["hbm_bytes"]) == (b["kernels"], b["flops"], b["hbm_bytes"])
    assert b["seconds"] < a["seconds"]


def test_assumption_sweeps_move_a_tensor_parallel_decode(tmp_path):
    """Slower links, costlier launches, later HBM bytes: each makes fused+HO slower (this
    tiny model is not HBM-bandwidth bound, so the efficiency sweep is not among them)."""
    from dataclasses import replace

    two = replace(load_target("sn40l-node"), sockets=2)
    bench = Bench("tiny-llama", "decode", 16, two)
    picked = {
        "network.p2p_latency_us": (0, 5),
        "network.p2p_bandwidth_GBps": (400, 25),
        "launch.hardware_us": (0.25, 5),
        "memory.hbm.latency_us": (0, 2),
    }
    sweeps = tuple(replace(sw, values=picked[sw.key]) for sw in SWEEPS if sw.key in picked)
    results = assumption_sweeps(bench, sweeps)
    for key, (fast, slow) in results.items():
        assert fast["value"] == picked[key][0] and slow["value"] == picked[key][1]
        assert fast["seconds"] < slow["seconds"], key
    paths = write_outputs(
        [{"model": "m", "phase": "p", "config": "fused", "speedup": 1}], [], tmp_path, results
    )
    assert (tmp_path / "sweeps.png").read_bytes()[:4] == b"\x89PNG" and len(paths) == 4
    assert json.loads((tmp_path / "results.json").read_text())["sweeps"] == results


def test_rows_name_the_unpublished_constants_they_rest_on():
    """The SN40L's P2P link and launch costs are assumptions; the H100's HBM bandwidth is
    the datasheet's, its efficiency measured: a row says which constants bound it."""
    from coec.bench.fusion import unpublished

    sn = load_target("sn40l-node")
    assert unpublished(sn, "p2p") == ["network.p2p_bandwidth_GBps", "network.p2p_latency_us"]
    assert unpublished(sn.with_launch("hardware"), "launch") == ["launch.hardware_us"]
    assert unpublished(sn, "hbm") == ["memory.hbm.efficiency", "memory.hbm.latency_us"]
    assert unpublished(load_target("dgx-h100"), "hbm") == []
    one = load_target("sn40l").with_launch("software")
    row = count(compile_bench(Bench("tiny-llama", "decode", 16, "sn40l"), one, "none"), one)
    assert row["bound"] == "launch" and row["unpublished"] == "launch.software_us"
    assert 0.5 < row["bound_share"] <= 1


def test_bench_rejects_unknown_models(capsys):
    from coec.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "fusion", "--models", "gpt-7"])
    assert exit_info.value.code == coec.ConfigError.exit_code
