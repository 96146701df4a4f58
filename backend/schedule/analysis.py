"""What a schedule implies, computed from it alone: bytes resident over time, peaks, totals."""

from __future__ import annotations

from collections import defaultdict

from coec.backend.schedule.model import Estimate, PeakBytes, Schedule, as_schedule


def resident_bytes(schedule: Schedule | dict) -> dict[tuple[str, str], list[int]]:
    """Bytes live per (tier, buffer kind) before the first kernel, then during each kernel.

    Entry ``i + 1`` of each list is what is resident while kernel ``i`` runs
    (entry 0: before kernel 0), from the buffers' ``live`` ranges; aliases share
    their root's bytes. A difference array keeps it linear in buffers + kernels.
    """
    s = as_schedule(schedule)
    n = len(s.kernels)
    delta: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * (n + 2))
    for b in s.buffers.values():
        if not b.storage:
            continue
        first, last = max(b.live[0], -1), min(b.live[1], n - 1)
        if first > last:
            continue
        d = delta[(b.tier, b.kind)]
        d[first + 1] += b.bytes
        d[last + 2] -= b.bytes
    resident = {}
    for key, d in sorted(delta.items()):
        total, series = 0, []
        for x in d[: n + 1]:
            total += x
            series.append(total)
        resident[key] = series
    return resident


def peak_occupancy(schedule: Schedule | dict) -> dict[str, int]:
    """Peak bytes per tier over the kernel sequence, from buffer lifetimes."""
    s = as_schedule(schedule)
    peak = {"sram": max((k.sram_bytes for k in s.kernels), default=0), "hbm": 0, "ddr": 0}
    by_tier: dict[str, list[int]] = {}
    for (tier, _), series in resident_bytes(s).items():
        acc = by_tier.setdefault(tier, [0] * len(series))
        by_tier[tier] = [a + x for a, x in zip(acc, series, strict=True)]
    for tier in ("hbm", "ddr"):
        peak[tier] = max(by_tier.get(tier, [0]))
    return peak


def summarize(schedule: Schedule) -> Estimate:
    """Totals of the per-kernel estimates and peak occupancy per tier, as the runtime reports.

    Reads only the kernels, buffers and target: the schedule's own ``estimate`` may be a
    placeholder (the emitter fills it in with this).
    """
    kernels = schedule.kernels
    pairs: dict[str, int] = defaultdict(int)
    for k in kernels:
        for pair, n in k.estimate.bytes.items():
            pairs[pair] += n
    cycles = sum(k.estimate.cycles for k in kernels)
    return Estimate(
        kernels=len(kernels),
        flops=sum(k.estimate.flops for k in kernels),
        cycles=cycles,
        seconds=cycles / schedule.target.compute.clock_hz,
        bytes=dict(sorted(pairs.items())),
        peak_bytes=PeakBytes(**peak_occupancy(schedule)),
    )
