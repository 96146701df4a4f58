"""Serving a CoE: batches through the router, experts switched into an HBM cache.

A pure function of costs, a trace and a policy. For each batch of BS prompts:
the router runs once (step one: prompt -> category; step two: category ->
expert); the batch's prompts are grouped by expert, in order of first
appearance; for each group, the expert is made resident if it is not (a copy of
its weights at the node's copy rate, evicting others by the policy until it
fits), then runs the group (prefill + N decode steps). Nothing overlaps: a
request's latency is router + switch + expert of its batch and group.
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
    total_s: float = 0.0
    router_s: float = 0.0
    switch_s: float = 0.0
    expert_s: float = 0.0
    hits: int = 0
    activations: int = 0

    def totals(self) -> dict:
        n = len(self.rows)
        return {
            "requests": n,
            "total_s": self.total_s,
            "router_s": self.router_s,
            "switch_s": self.switch_s,
            "expert_s": self.expert_s,
            "throughput_rps": n / self.total_s if self.total_s else 0.0,
            "mean_latency_s": sum(r["latency_s"] for r in self.rows) / n if n else 0.0,
            "expert_activations": self.activations,
            "cache_hits": self.hits,
            "hit_rate": self.hits / self.activations if self.activations else 0.0,
        }


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
        out.router_s += router_s
        for name, members in groups.items():
            hit = cache.access(name, expert_bytes[name])
            switch = 0.0 if hit else expert_bytes[name] / rate[name]
            run = expert_s(name, len(members))
            clock += switch + run
            out.switch_s += switch
            out.expert_s += run
            out.activations += 1
            out.hits += hit
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
        out.total_s += clock
    out.rows.sort(key=lambda r: r["request"])
    return out


def synthetic_experts(names: Sequence[str], n: int, skew: float, seed: int) -> list[str]:
    """``n`` expert picks: uniform (skew 0) or Zipf(skew) over ``names``, by ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    weights = np.array([1.0 / (i + 1) ** skew for i in range(len(names))])
    picks = rng.choice(len(names), size=n, p=weights / weights.sum())
    return [names[i] for i in picks]
