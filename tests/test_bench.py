"""The fusion benchmark and the Monarch FFT convolution it runs."""

from __future__ import annotations

import csv

import pytest
import torch
from test_numerics import check

import coec
from coec.backend.target import load_target
from coec.bench.fusion import Bench, bench_fusion, launch_sweep, p2p_latency_sweep, write_outputs
from coec.models.fftconv import MonarchFFTConv


@pytest.mark.parametrize("fusion", ["none", "dataflow"])
def test_monarch_fft_convolution_matches_torch_fft(fusion):
    model = MonarchFFTConv(3, 8, 4).eval()
    x = torch.randn(2, 3, 32)
    ref = torch.fft.irfft(torch.fft.rfft(x) * torch.fft.rfft(model.filter), n=32)
    assert (model(x) - ref).abs().max() < 1e-5
    check(model, (x,), fusion=fusion, max_tile=3)


def test_bench_fusion_rows_and_files(tmp_path):
    benches = (
        Bench("tiny-llama", "decode", 16, "sn40l"),
        Bench("tiny-llama", "prefill", 16, "sn40l"),
    )
    steps = []
    rows = bench_fusion(benches, progress=steps.append)
    assert len(rows) == len(steps) == 6
    by = {(r["phase"], r["config"]): r for r in rows}
    for phase in ("prefill", "decode"):
        assert by[(phase, "unfused")]["speedup"] == 1.0
        assert by[(phase, "fused")]["kernels"] < by[(phase, "unfused")]["kernels"]
        assert by[(phase, "fused+HO")]["seconds"] < by[(phase, "unfused")]["seconds"]
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
        assert len(list(csv.DictReader(f))) == 6


def test_p2p_latency_sweep_slows_a_tensor_parallel_decode(tmp_path):
    two = load_target("sn40l-node")
    two = type(two)(**{**two.__dict__, "sockets": 2})
    sweep = p2p_latency_sweep(Bench("tiny-llama", "decode", 16, two), latencies_us=(0, 5))
    assert [s["p2p_latency_us"] for s in sweep] == [0, 5]
    assert sweep[0]["seconds"] < sweep[1]["seconds"]  # every all-reduce pays its steps
    write_outputs(
        [{"model": "m", "phase": "p", "config": "fused", "speedup": 1}], [], tmp_path, sweep
    )
    assert '"p2p_latency_sweep"' in (tmp_path / "results.json").read_text()


def test_bench_rejects_unknown_models(capsys):
    from coec.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "fusion", "--models", "gpt-7"])
    assert exit_info.value.code == coec.ConfigError.exit_code
