"""Achievable, not datasheet, rates: HBM streams (latency, then efficiency of peak) and
matmul output tiles dealt to the PCUs in waves. Figures computed by hand."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from test_target import SN40L, variant

from coec.backend.cost import Work, kernel_cost, op_work, stream_cycles, wave_efficiency
from coec.backend.target import load_target
from coec.ir.errors import ConfigError

H100_CLOCK = 1.83e9


def test_a_stream_pays_the_latency_then_the_achievable_bandwidth():
    hbm = load_target("dgx-h100").memory["hbm"]  # 3.35 TB/s at 0.84, 0.4 µs
    assert hbm.achievable_Bps == pytest.approx(2.814e12)
    # 1 MB: 0.4 µs × 1.83 GHz = 732 cycles, then ⌈1e6 × 1.83e9 / 2.814e12⌉ = 651
    assert stream_cycles(10**6, hbm, H100_CLOCK) == 732 + 651
    # 1 KB takes about as long as the latency alone: ~2.5 GB/s, 0.07% of peak
    small = stream_cycles(1000, hbm, H100_CLOCK)
    assert small == 732 + 1
    assert 1000 / (small / H100_CLOCK) < 0.001 * hbm.bandwidth_Bps
    assert stream_cycles(0, hbm, H100_CLOCK) == 0  # no bytes: no latency either


@pytest.mark.parametrize(
    "rows, cols, pcus, expected",
    [
        (4096, 1376, 132, 352 / 396),  # 32 x 11 = 352 tiles: 3 waves of 132, the last 88
        (4096, 512, 132, 128 / 132),  # 128 tiles: one wave, 4 SMs idle
        (4096, 4224, 132, 1.0),  # 32 x 33 = 1056 tiles: exactly 8 waves
        (4096, 4352, 132, 1088 / 1188),  # 32 x 34 = 1088 tiles: 9 waves, the last 32
        (1, 512, 132, 1.0),  # decode: 4 tiles, split along K 33 ways, one full wave
        (1, 17024, 132, 133 / 264),  # 133 tiles: two waves, the second one tile
    ],
)
def test_wave_quantization_by_hand(rows, cols, pcus, expected):
    w = Work(matmul=2 * rows * cols * 64, rows=rows, cols=cols)
    assert wave_efficiency(w, pcus, 128, 128) == pytest.approx(expected)


def test_wave_quantization_slows_a_matmul_in_the_kernel_cost():
    """A 4096 x 4096 x 1376 matmul on the H100: 3 waves where 2.67 would do."""
    t = load_target("dgx-h100")
    w = op_work("matmul", {}, [(4096, 4096), (4096, 1376)], (4096, 1376))
    assert (w.rows, w.cols) == (4096, 1376)
    c = t.compute
    ideal = math.ceil(w.matmul / c.matmul_flop_per_cycle_per_pcu / c.pcus)
    waved = math.ceil(w.matmul / c.matmul_flop_per_cycle_per_pcu / (c.pcus * 352 / 396))
    cost = kernel_cost(t, [[{w: 1}]], {})
    assert cost.compute_cycles == waved + t.launch.tile_cycles_per_stage
    assert waved == pytest.approx(ideal * 396 / 352, rel=1e-4)
    flat = replace(t, compute=replace(c, matmul_tile_rows=1, matmul_tile_cols=1))
    assert kernel_cost(flat, [[{w: 1}]], {}).compute_cycles == ideal + 16


def test_targets_without_the_keys_stream_at_peak(tmp_path):
    """The keys are optional: a user's older target file streams at the datasheet rate."""
    text = (tmp_path / "t.toml").parent / "old.toml"
    lines = SN40L.splitlines()
    dropped = ("efficiency", "latency_us", "matmul_tile_")
    text.write_text("\n".join(x for x in lines if not x.startswith(dropped)))
    t = load_target(text)
    assert (t.memory["hbm"].efficiency, t.memory["hbm"].latency_s) == (1.0, 0.0)
    assert (t.compute.matmul_tile_rows, t.compute.matmul_tile_cols) == (1, 1)
    assert stream_cycles(1_800_000, t.memory["hbm"], 1.6e9) == 1600  # 1 µs at 1.8 TB/s


def test_an_efficiency_above_one_is_refused(tmp_path):
    bad = variant(tmp_path, "efficiency = { value = 0.84", "efficiency = { value = 1.2")
    with pytest.raises(ConfigError, match="'efficiency' is a fraction"):
        load_target(bad)


# -- a streaming pipeline fills and drains a block of output columns at a time -------------
def test_a_matmul_hands_on_its_output_a_block_of_columns_at_a_time():
    """Two decode matmuls (one row) in one phase on the SN40L: the second starts after the
    first's first 32-column block, so the fill is one block of the first, not all of it."""
    t = load_target("sn40l")
    up = Work(matmul=2 * 4096 * 512, rows=1, cols=512)  # 16 blocks of 32 columns
    down = Work(matmul=2 * 512 * 4096, rows=1, cols=4096)  # 128 blocks
    cost = kernel_cost(t, [[{up: 1}, {down: 1}]], {})
    c, overhead = t.compute, t.launch.tile_cycles_per_stage
    assert cost.stage_pcus == (520, 520)  # equal work, equal PCUs

    def cycles(w):  # one stage's whole tile: 1 of 32 lanes busy, output tiles in waves
        rate = c.matmul_flop_per_cycle_per_pcu / c.simd_lanes
        return math.ceil(w.matmul / rate / (520 * wave_efficiency(w, 520, 32, 32)))

    first = [math.ceil(cycles(up) / 16) + overhead, math.ceil(cycles(down) / 128) + overhead]
    assert cost.compute_cycles == max(cycles(up), cycles(down)) + overhead
    assert cost.fill_cycles == sum(first) - max(first) + 2 * t.launch.fill_cycles_per_stage
    # the old charge, a whole tile's trip through the first stage, is 16x larger
    assert cycles(up) + overhead > 10 * (cost.fill_cycles - 2 * t.launch.fill_cycles_per_stage)


def test_llama2_7b_decode_with_hardware_launch_keeps_one_kernel_per_layer():
    """Charged a streaming pipeline's fill, a whole decoder layer beats its pieces: 32 layer
    kernels plus the embedding and the head (it was 98 kernels: each layer re-split in 3)."""
    from coec.models.zoo import instantiate
    from coec.pipeline import Options
    from coec.regional import compile_zoo

    inst = instantiate("llama2-7b", "decode", seq=4096)
    options = Options(fusion="dataflow", target="sn40l-node", launch="hardware")
    assert len(compile_zoo(inst, options).schedule["kernels"]) == 32 + 2


def test_the_stage_timeline_adds_up_to_compute_and_fill():
    """The same two matmuls, then a second phase of one softmax: each stage's busy cycles
    and start, as a trace draws them. The second stage starts after the first's first
    block, as far as the fill allows; the second phase after the first's compute and fill."""
    t = load_target("sn40l")
    up = Work(matmul=2 * 4096 * 512, rows=1, cols=512)
    down = Work(matmul=2 * 512 * 4096, rows=1, cols=4096)
    soft = Work(vector=5 * 4096)
    cost = kernel_cost(t, [[{up: 1}, {down: 1}], [{soft: 2}]], {})
    c, overhead = t.compute, t.launch.tile_cycles_per_stage
    up_pcus, down_pcus, soft_pcus = cost.stage_pcus

    def cycles(w, pcus):
        if not w.matmul:
            return math.ceil(w.vector / c.vector_flop_per_cycle_per_pcu / pcus)
        rate = c.matmul_flop_per_cycle_per_pcu / c.simd_lanes
        return math.ceil(w.matmul / rate / (pcus * wave_efficiency(w, pcus, 32, 32)))

    busy = [cycles(up, up_pcus) + overhead, cycles(down, down_pcus) + overhead]
    first = [
        math.ceil(cycles(up, up_pcus) / 16) + overhead,
        math.ceil(cycles(down, down_pcus) / 128) + overhead,
    ]
    phase0 = max(busy) + sum(first) - max(first) + 2 * t.launch.fill_cycles_per_stage
    soft_busy = 2 * (cycles(soft, soft_pcus) + overhead)
    assert cost.stage_phases == (0, 0, 1)
    assert cost.stage_cycles == (*busy, soft_busy)
    assert cost.stage_starts == (0, min(first[0], sum(first) - max(first)), phase0)
    assert cost.compute_cycles == max(busy) + soft_busy
    # every stage ends within the kernel's compute and fill
    ends = [s + b for s, b in zip(cost.stage_starts, cost.stage_cycles, strict=True)]
    assert max(ends) <= cost.compute_cycles + cost.fill_cycles
