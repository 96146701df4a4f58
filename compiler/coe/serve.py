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

import bisect
import math
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from coec.ir.errors import CapacityError, ConfigError

FORMAT = "coec.coe-serve/1"
POLICIES = ("lru", "lfu", "belady")


class ExpertCache:
    """Experts resident in HBM, by bytes; ``policy`` picks the victim: lru, lfu, or belady.

    Belady (evict the expert needed farthest ahead) is the offline optimum for experts of
    one size, a bound no online policy beats; it needs the future: ``next_use(name)``, when
    ``name`` is next needed (``math.inf``: never).
    """

    def __init__(
        self,
        capacity: int,
        policy: str = "lru",
        next_use: Callable[[str], float] | None = None,
    ):
        if policy not in POLICIES:
            raise ConfigError(f"cache policy {policy!r}: choose {', '.join(POLICIES)}")
        if policy == "belady" and next_use is None:
            raise ValueError("the belady policy needs next_use (the future)")
        self.capacity, self.policy, self.next_use = capacity, policy, next_use
        self.resident: OrderedDict[str, int] = OrderedDict()  # name -> bytes, LRU first
        self.uses: dict[str, int] = {}  # lifetime uses (LFU counts survive eviction)
        self.evictions = 0

    def used(self) -> int:
        return sum(self.resident.values())

    def touch(self, name: str) -> bool:
        """Count a use of ``name`` (most recent now); True when it is resident."""
        self.uses[name] = self.uses.get(name, 0) + 1
        if name in self.resident:
            self.resident.move_to_end(name)
            return True
        return False

    def make_room(self, name: str, nbytes: int, *tiers: Collection[str]) -> list[str] | None:
        """Evict until ``nbytes`` more fit, victims by the policy from the first of ``tiers``
        (sets of evictable experts), then the next; the victims, or None (and nothing
        evicted) when the tiers cannot make room. No tiers: every resident is evictable."""
        if nbytes > self.capacity:
            raise CapacityError("hbm", nbytes, self.capacity, f"expert {name} in the expert cache")
        tiers = tiers or (self.resident.keys(),)
        pool = {n for tier in tiers for n in tier if n in self.resident}
        if self.used() - sum(self.resident[n] for n in pool) + nbytes > self.capacity:
            return None
        victims = []
        for tier in tiers:
            while self.used() + nbytes > self.capacity:
                candidates = [n for n in self.resident if n in tier]
                if not candidates:
                    break
                victim = self._victim(candidates)
                del self.resident[victim]
                victims.append(victim)
                self.evictions += 1
        return victims

    def insert(self, name: str, nbytes: int) -> None:
        """Make ``name`` resident (most recent); room must have been made."""
        assert self.used() + nbytes <= self.capacity, "make_room first"
        self.resident[name] = nbytes

    def access(self, name: str, nbytes: int) -> bool:
        """Touch ``name``; True on a hit. A miss makes room and loads it."""
        if self.touch(name):
            return True
        self.make_room(name, nbytes)
        self.insert(name, nbytes)
        return False

    def _victim(self, candidates: list[str]) -> str:
        """Of ``candidates`` (least recently used first), the one the policy evicts; among
        equals, the least recently used."""
        if self.policy == "lru":
            return candidates[0]
        if self.policy == "lfu":
            return min(candidates, key=lambda n: self.uses[n])
        return max(candidates, key=self.next_use)


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
    batches = []
    for start in range(0, len(experts), batch):
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(experts[start : start + batch]):
            groups.setdefault(name, []).append(start + i)
        batches.append((start, groups))
    # the accesses, in order: known up front (no cache decides them), so Belady can look ahead
    accesses = [name for _, groups in batches for name in groups]
    at: dict[str, list[int]] = {}
    for k, name in enumerate(accesses):
        at.setdefault(name, []).append(k)
    now = -1  # the position of the access being made

    def next_use(name: str) -> float:
        later = at.get(name, [])
        i = bisect.bisect_right(later, now)
        return later[i] if i < len(later) else math.inf

    cache = ExpertCache(cache_bytes, policy, next_use)
    out = Served()
    for start, groups in batches:
        chosen = list(experts[start : start + batch])
        clock = router_s  # the batch's time so far
        b = {"requests": len(chosen), "router_s": router_s, "switch_s": 0.0, "expert_s": 0.0}
        b.update(activations=0, hits=0)
        for name, members in groups.items():
            evicted = cache.evictions
            now += 1
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
