"""What a serving run means to whoever plans with it: percentiles, goodput, nodes needed.

A run's metrics are over its measured requests: those after the first ``warmup``
(by arrival), so that a cold start from an empty HBM can be read apart. Percentiles
are NumPy's (linear between order statistics). A request meets the service-level
objective when its time to first token and its time per output token are both
within their targets; goodput is the rate of such requests. Capacity planning
reads a sweep of offered load: the highest rate one node serves with its p99 TTFT
and p99 TPOT within the targets, and so how many nodes, each taking an even share
of the traffic (a random split of a Poisson stream is Poisson), serve a demand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from coec.coe.des import Request, Run

QUANTILES = (50, 90, 99)


@dataclass(frozen=True)
class SLO:
    """Targets for one request. The defaults are MLPerf Inference's Llama-2-70B server
    scenario (p99 TTFT 2 s, p99 TPOT 200 ms): a published serving target, not a fit."""

    ttft_s: float = 2.0
    tpot_s: float = 0.2

    def met(self, r: Request) -> bool:
        return r.ttft <= self.ttft_s and (r.tpot is None or r.tpot <= self.tpot_s)


def distribution(values: Sequence[float]) -> dict:
    """p50/p90/p99, mean and max of ``values`` (None each when there are none)."""
    import numpy as np

    if not values:
        return {**{f"p{q}": None for q in QUANTILES}, "mean": None, "max": None}
    a = np.asarray(values, dtype=float)
    out = {f"p{q}": float(np.percentile(a, q)) for q in QUANTILES}
    return out | {"mean": float(a.mean()), "max": float(a.max())}


def occupancy(run: Run, start: float, end: float) -> dict:
    """HBM the experts hold over [start, end]: time-weighted mean and the peak, in bytes
    and as a share of the expert cache."""
    points = run.occupancy
    total, peak = 0.0, 0
    for (t0, used), (t1, _) in zip(points, [*points[1:], (math.inf, 0)], strict=True):
        lo, hi = max(t0, start), min(t1, end)
        if hi > lo:
            total += used * (hi - lo)
        if t0 <= end and t1 >= start:
            peak = max(peak, used)
    mean = total / (end - start) if end > start else float(points[-1][1])
    share = run.cache_bytes or 1
    return {
        "mean_bytes": mean,
        "peak_bytes": peak,
        "mean_share": mean / share,
        "peak_share": peak / share,
    }


def metrics(run: Run, slo: SLO = SLO(), warmup: int = 0) -> dict:
    """The run's figures over its requests after the first ``warmup`` (by arrival)."""
    ordered = sorted(run.requests, key=lambda r: (r.arrival, r.id))
    measured = ordered[warmup:] if warmup < len(ordered) else []
    n = len(measured)
    start = measured[0].arrival if measured else 0.0
    end = max((r.done for r in measured), default=start)
    window = end - start
    ids = {r.id for r in measured}  # turns and copies count for the request they were for
    turns = [t for t in run.turns if t["request"] in ids]
    hits = sum(t["hit"] for t in turns)
    good = sum(slo.met(r) for r in measured)
    span = measured[-1].arrival - start if n > 1 else 0.0
    return {
        "requests": n,
        "warmup": min(warmup, len(ordered)),
        "window_s": window,
        "offered_rps": (n - 1) / span if span > 0 else None,
        "throughput_rps": n / window if window > 0 else None,
        "goodput_rps": good / window if window > 0 else None,
        "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s},
        "slo_attainment": good / n if n else None,
        "ttft_s": distribution([r.ttft for r in measured]),
        "tpot_s": distribution([r.tpot for r in measured if r.tpot is not None]),
        "latency_s": distribution([r.latency for r in measured]),
        "queue_s": distribution([r.queue for r in measured]),
        "turns": len(turns),
        "hits": hits,
        "hit_rate": hits / len(turns) if turns else None,
        "copies": sum(1 for c in run.copies if c["request"] in ids),
        "compute_utilization": utilization(run),
        "hbm": occupancy(run, start, end) if measured else None,
    }


def utilization(run: Run) -> float:
    """The share of the whole run the compute was busy (router, steps, serial copies)."""
    makespan = max((r.done for r in run.requests), default=0.0)
    return run.compute_busy_s / makespan if makespan > 0 else 0.0


def meets(m: dict, slo: SLO) -> bool:
    """Whether a run's p99 TTFT and p99 TPOT are within ``slo``."""
    ttft, tpot = m["ttft_s"]["p99"], m["tpot_s"]["p99"]
    return ttft is not None and ttft <= slo.ttft_s and (tpot is None or tpot <= slo.tpot_s)


def max_rate(
    at: Callable[[float], dict], slo: SLO, lo: float, hi: float, steps: int = 8
) -> float | None:
    """The highest offered load in [lo, hi] whose run (``at(rate)``'s metrics) meets ``slo``
    at p99, by bisection from a rate that meets it (``lo``) to one that does not (``hi``);
    None when even ``lo`` does not. Latency is not strictly monotone in the load for one
    seed, so this is a crossing of the sweep, found to (hi - lo) / 2**steps."""
    if not meets(at(lo), slo):
        return None
    if meets(at(hi), slo):
        return hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if meets(at(mid), slo) else (lo, mid)
    return lo


def nodes_for(demand_rps: float, per_node_rps: float | None) -> int | None:
    """Nodes that serve ``demand_rps`` when one serves ``per_node_rps`` within the SLO."""
    if not per_node_rps:
        return None
    return math.ceil(demand_rps / per_node_rps - 1e-9)
