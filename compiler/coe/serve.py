"""Serving a CoE: batches through the router, experts switched into an HBM cache.

A pure function of costs, a trace and a policy. For each batch of BS prompts:
the router runs once (step one: prompt -> category; step two: category ->
expert); the batch's prompts are grouped by expert, in order of first
appearance; for each group, the expert is made resident if it is not (a copy of
its weights at the node's copy rate, evicting others by the policy until it
fits), then runs the group (prefill + N decode steps). Nothing overlaps: a
request's latency is router + switch + expert of its batch and group.

Each prompt has its own expert, so a batch of BS prompts may need several: each
distinct expert is switched in (if not resident) and runs its sub-batch. A run
from an empty HBM has a cold start; ``Served.window`` reads any span of its
batches apart, so the cold start and the steady state after a warm-up are two
readings of one run (``Served.filled_at``: the batch in which the cache first
had to evict, after which an LRU cache holds the most recent experts, as in its
steady state).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from coec.ir.errors import CapacityError, ConfigError

FORMAT = "coec.coe-serve/1"


class ExpertCache:
    """Experts resident in HBM, by bytes; ``policy`` picks the victim: lru or lfu."""

    def __init__(self, capacity: int, policy: str = "lru"):
        if policy not in ("lru", "lfu"):
            raise ConfigError(f"cache policy {policy!r}: choose lru or lfu")
        self.capacity, self.policy = capacity, policy
        self.resident: OrderedDict[str, int] = OrderedDict()  # name -> bytes, LRU first
        self.uses: dict[str, int] = {}  # lifetime uses (LFU counts survive eviction)
        self.evictions = 0

    def used(self) -> int:
        return sum(self.resident.values())

    def access(self, name: str, nbytes: int) -> bool:
        """Touch ``name``; True on a hit. A miss makes room and loads it."""
        self.uses[name] = self.uses.get(name, 0) + 1
        if name in self.resident:
            self.resident.move_to_end(name)
            return True
        if nbytes > self.capacity:
            raise CapacityError("hbm", nbytes, self.capacity, f"expert {name} in the expert cache")
        while self.used() + nbytes > self.capacity:
            del self.resident[self._victim()]
            self.evictions += 1
        self.resident[name] = nbytes
        return False

    def _victim(self) -> str:
        if self.policy == "lru":
            return next(iter(self.resident))
        # least used; among equals the least recently used (dict order)
        return min(self.resident, key=lambda n: self.uses[n])


@dataclass
class Served:
    """Per-request rows and totals of one serving run."""

    rows: list[dict] = field(default_factory=list)
    #: per batch: requests, router_s, switch_s, expert_s, total_s, activations, hits
    batches: list[dict] = field(default_factory=list)
    filled_at: int | None = None  # the first batch whose switch-in evicted (None: never)

    def totals(self) -> dict:
        return self.window(0)

    def window(self, first: int, last: int | None = None) -> dict:
        """Totals over batches ``first`` to ``last`` (exclusive; None: to the end)."""
        span = self.batches[first:last]
        rows = [r for r in self.rows if first <= r["batch"] < (last or len(self.batches))]
        n = len(rows)
        total = {k: sum(b[k] for b in span) for k in ("total_s", "router_s", "switch_s")}
        acts, hits = sum(b["activations"] for b in span), sum(b["hits"] for b in span)
        return {
            "requests": n,
            **total,
            "expert_s": sum(b["expert_s"] for b in span),
            "throughput_rps": n / total["total_s"] if total["total_s"] else 0.0,
            "mean_latency_s": sum(r["latency_s"] for r in rows) / n if n else 0.0,
            "expert_activations": acts,
            "cache_hits": hits,
            "hit_rate": hits / acts if acts else 0.0,
        }

    def split(self, warmup: int) -> tuple[dict, dict]:
        """(cold, steady): totals over the batches of the first ``warmup`` requests (from
        an empty HBM) and over the batches after them."""
        first = 0
        seen = 0
        while first < len(self.batches) and seen < warmup:
            seen += self.batches[first]["requests"]
            first += 1
        return self.window(0, first), self.window(first)


def simulate(
    experts: Sequence[str],
    *,
    batch: int,
    router_s: float,
    expert_bytes: dict[str, int],
    expert_s: Callable[[str, int], float],
    copy_Bps: float | dict[str, float],
    cache_bytes: int,
    policy: str = "lru",
    prompts: Sequence[str] | None = None,
) -> Served:
    """Serve requests whose experts are ``experts`` (already routed), ``batch`` at a time.

    ``expert_s(name, b)`` is the time expert ``name`` takes for ``b`` prompts;
    ``copy_Bps`` the rate its weights are copied into HBM (one for all, or per expert).
    """
    rate = copy_Bps if isinstance(copy_Bps, dict) else dict.fromkeys(expert_bytes, copy_Bps)
    cache = ExpertCache(cache_bytes, policy)
    out = Served()
    for start in range(0, len(experts), batch):
        chosen = list(experts[start : start + batch])
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(chosen):
            groups.setdefault(name, []).append(start + i)
        clock = router_s  # the batch's time so far
        b = {"requests": len(chosen), "router_s": router_s, "switch_s": 0.0, "expert_s": 0.0}
        b.update(activations=0, hits=0)
        for name, members in groups.items():
            evicted = cache.evictions
            hit = cache.access(name, expert_bytes[name])
            if out.filled_at is None and cache.evictions > evicted:
                out.filled_at = start // batch
            switch = 0.0 if hit else expert_bytes[name] / rate[name]
            run = expert_s(name, len(members))
            clock += switch + run
            b["switch_s"] += switch
            b["expert_s"] += run
            b["activations"] += 1
            b["hits"] += hit
            for r in members:
                out.rows.append(
                    {
                        "request": r,
                        "prompt": prompts[r] if prompts else None,
                        "expert": name,
                        "batch": start // batch,
                        "hit": hit,
                        "router_s": router_s,
                        "switch_s": switch,
                        "expert_s": run,
                        "latency_s": clock,
                    }
                )
        b["total_s"] = clock
        out.batches.append(b)
    out.rows.sort(key=lambda r: r["request"])
    return out


def synthetic_experts(
    names: Sequence[str],
    n: int,
    skew: float,
    seed: int,
    popularity: Sequence[float] | None = None,
) -> list[str]:
    """``n`` expert picks, one per prompt, drawn independently by ``seed``: from a stated
    ``popularity`` (one weight per name), else uniform (skew 0) or Zipf(skew) over
    ``names`` (the first the most popular)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if popularity is None:
        weights = np.array([1.0 / (i + 1) ** skew for i in range(len(names))])
    else:
        weights = np.asarray(popularity, dtype=float)
        if len(weights) != len(names) or (weights < 0).any() or weights.sum() <= 0:
            raise ConfigError(
                f"popularity: {len(names)} non-negative weights, not all zero, one per expert"
            )
    picks = rng.choice(len(names), size=n, p=weights / weights.sum())
    return [names[i] for i in picks]
