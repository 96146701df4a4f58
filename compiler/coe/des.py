"""Serving a CoE as it happens: a discrete-event simulation of one node (SimPy).

Requests arrive at their own times and wait for the router, which batches what has
arrived (up to ``batch`` prompts, or whatever is there once the oldest has waited
``max_wait_s``) and puts each prompt in its expert's queue. The node computes one
thing at a time — a router batch, or a step of one expert, whose weights are spread
over all its sockets — and takes the experts in turns, first come first served: next
is the expert whose oldest queued request arrived first. A turn admits that
expert's queue (up to ``batch`` sequences, the KV cache's slots) and steps it until
it drains: a prefill of the prompts just admitted, else one decode step of every
running sequence (each step emits one token of each). A request routed to the
expert during its turn joins at the next step (continuous batching) while no other
expert has an older request waiting. A step costs what the expert compiled at that
batch and context costs (``Costs``). The router runs between steps when a batch is
ready.

An expert must be resident in HBM for its turn: its weights are copied in at the
node's rate (DDR->HBM on an SN40L, host->GPU PCIe on a DGX), evicting others by the
cache policy, never the expert in its turn nor one being copied. With ``overlap``
the copies run on the node's DMA (SN40L) or copy engines (GPU), one at a time,
while the compute goes on; without it a copy holds the compute as well, as in
``coec.coe.serve.simulate``. Prefetch ``next`` copies in, while the compute works,
the experts next in the queue's order that are not resident, evicting only experts
no queued request needs (Belady: those needed later than it); ``none`` copies an
expert when its turn comes. Belady looks at the future: the arrival of each
expert's next request.

Same requests, costs and options: the same run, event for event (SimPy orders
simultaneous events by when they were scheduled).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from coec.coe.serve import POLICIES, ExpertCache
from coec.ir.errors import ConfigError

PREFETCH = ("none", "next")


@dataclass
class Request:
    """One request: what it asks (given) and when each thing happened to it (the run's)."""

    id: int
    arrival: float
    expert: str
    prompt_tokens: int
    output_tokens: int
    prompt: str | None = None
    routed: float = math.nan  # its router batch ended
    admitted: float = math.nan  # its prefill began
    first_token: float = math.nan  # its first decode step ended
    done: float = math.nan  # its last decode step ended
    hit: bool = False  # its expert was resident (copied in) when it was admitted
    generated: int = 0

    @property
    def ttft(self) -> float:
        return self.first_token - self.arrival

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first (None: a one-token answer)."""
        if self.output_tokens < 2:
            return None
        return (self.done - self.first_token) / (self.output_tokens - 1)

    @property
    def latency(self) -> float:
        return self.done - self.arrival

    @property
    def queue(self) -> float:
        """From arrival to its prefill: router batching and compute, its expert's queue and
        any copy it waited for."""
        return self.admitted - self.arrival

    def row(self) -> dict:
        return {
            "request": self.id,
            "prompt": self.prompt,
            "expert": self.expert,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "arrival_s": self.arrival,
            "routed_s": self.routed,
            "admitted_s": self.admitted,
            "first_token_s": self.first_token,
            "done_s": self.done,
            "hit": self.hit,
            "queue_s": self.queue,
            "ttft_s": self.ttft,
            "tpot_s": self.tpot,
            "latency_s": self.latency,
        }


@dataclass(frozen=True)
class Costs:
    """What the node charges, in seconds, from compiled profiles (or by hand in tests)."""

    router_s: Callable[[int], float]  # a router batch of b prompts
    prefill_s: Callable[[str, int, float], float]  # expert, batch, mean prompt length
    decode_s: Callable[[str, int, float], float]  # expert, batch, mean KV length
    expert_bytes: dict[str, int]
    copy_Bps: dict[str, float]  # each expert's copy rate into HBM

    def copy_s(self, name: str) -> float:
        return self.expert_bytes[name] / self.copy_Bps[name]


@dataclass(frozen=True)
class Options:
    cache_bytes: int  # HBM for resident experts
    batch: int = 1  # KV slots: sequences running at once; the router's batch too
    max_wait_s: float = 0.0  # the router waits this long for a batch to fill
    policy: str = "lru"
    prefetch: str = "next"
    overlap: bool = True

    def check(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"cache policy {self.policy!r}: choose {', '.join(POLICIES)}")
        if self.prefetch not in PREFETCH:
            raise ConfigError(f"prefetch {self.prefetch!r}: choose {', '.join(PREFETCH)}")
        if self.prefetch != "none" and not self.overlap:
            raise ConfigError(
                "prefetch copies while the node computes: it needs overlap (or --prefetch none)"
            )
        if self.batch < 1 or self.max_wait_s < 0:
            raise ConfigError("batch must be >= 1 and max_wait >= 0")


@dataclass
class Run:
    """What happened: the requests, the experts' turns and copies, HBM over time."""

    requests: list[Request]
    #: per turn: expert, request (the first it admits), start_s, end_s, hit, copy_wait_s,
    #: admitted (requests it served)
    turns: list[dict] = field(default_factory=list)
    #: per copy: expert, request (the oldest queued it is for), start_s, end_s, evicted,
    #: prefetch
    copies: list[dict] = field(default_factory=list)
    #: (time, bytes of HBM the experts hold or are being copied into), at each change
    occupancy: list[tuple[float, int]] = field(default_factory=list)
    compute_busy_s: float = 0.0  # router and expert steps (and copies without overlap)
    cache_bytes: int = 0


def simulate(requests: Sequence[Request], costs: Costs, options: Options) -> Run:
    """Serve ``requests`` (each routed to its expert already) on one node; the run."""
    import simpy

    options.check()
    for r in requests:
        if r.output_tokens < 1 or r.prompt_tokens < 1:
            raise ConfigError(f"request {r.id}: prompt and output tokens must be >= 1")
        if r.expert not in costs.expert_bytes:
            raise ConfigError(f"request {r.id}: unknown expert {r.expert!r}")
    env = simpy.Environment()
    node = _Node(env, sorted(requests, key=lambda r: (r.arrival, r.id)), costs, options)
    env.process(node.arrivals())
    env.process(node.compute())
    if options.overlap:
        env.process(node.copier())
    env.run()
    if node.finished < len(requests):  # a bug in the model, not a user error
        raise RuntimeError(f"{len(requests) - node.finished} requests never finished")
    return node.run


class _Node:
    """The node's state and its three processes: arrivals, the compute, the copy engine."""

    def __init__(self, env, requests: list[Request], costs: Costs, o: Options):
        self.env, self.requests, self.costs, self.o = env, requests, costs, o
        self.pending: deque[Request] = deque()  # arrived, not routed yet
        self.queues: dict[str, deque[Request]] = {}  # routed, not admitted, per expert
        self.running: list[Request] = []  # the current turn's sequences
        self.current: str | None = None  # the expert in its turn
        self.wanted: str | None = None  # the expert whose turn waits for its copy
        self.loading: dict[str, object] = {}  # expert -> its copy's completion event
        self.finished = 0
        # Belady's future: each expert's arrival times, and how many of them are routed
        self.arrivals_of: dict[str, list[float]] = {}
        for r in requests:
            self.arrivals_of.setdefault(r.expert, []).append(r.arrival)
        self.routed_of: dict[str, int] = dict.fromkeys(self.arrivals_of, 0)
        self.cache = ExpertCache(o.cache_bytes, o.policy, self.next_use)
        self.run = Run(list(requests), cache_bytes=o.cache_bytes)
        self.run.occupancy.append((0.0, 0))
        self._compute_wake = env.event()
        self._copier_wake = env.event()

    # -- the future, as Belady sees it --------------------------------------------------

    def next_use(self, name: str) -> float:
        """When ``name`` is next needed: its oldest queued request's arrival, else the
        arrival of its next request not routed yet (inf: never again)."""
        q = self.queues.get(name)
        if q:
            return q[0].arrival
        times, k = self.arrivals_of.get(name, []), self.routed_of.get(name, 0)
        return times[k] if k < len(times) else math.inf

    # -- waking -------------------------------------------------------------------------

    def _wake(self, which: str) -> None:
        event = getattr(self, which)
        if not event.triggered:
            event.succeed()

    def _sleep(self, which: str):
        setattr(self, which, self.env.event())
        return getattr(self, which)

    # -- arrivals and the router -----------------------------------------------------------

    def arrivals(self):
        for r in self.requests:
            if r.arrival > self.env.now:
                yield self.env.timeout(r.arrival - self.env.now)
            self.pending.append(r)
            if self.o.max_wait_s > 0:
                self.env.process(self._wait_limit(self.o.max_wait_s))
            self._wake("_compute_wake")

    def _wait_limit(self, delay: float):
        yield self.env.timeout(delay)
        self._wake("_compute_wake")

    def _router_ready(self) -> bool:
        if not self.pending:
            return False
        full = len(self.pending) >= self.o.batch
        return full or self.env.now >= self.pending[0].arrival + self.o.max_wait_s

    def _route(self):
        batch = [self.pending.popleft() for _ in range(min(self.o.batch, len(self.pending)))]
        yield from self._busy(self.costs.router_s(len(batch)))
        for r in batch:
            r.routed = self.env.now
            self.queues.setdefault(r.expert, deque()).append(r)
            self.routed_of[r.expert] += 1
        self._wake("_copier_wake")

    def _busy(self, seconds: float):
        self.run.compute_busy_s += seconds
        yield self.env.timeout(seconds)

    # -- the order of turns ------------------------------------------------------------

    def _order(self) -> list[str]:
        """Experts with queued requests, oldest request first (not the one in its turn)."""
        waiting = [x for x, q in self.queues.items() if q and x != self.current]
        return sorted(waiting, key=lambda x: (self.queues[x][0].arrival, self.queues[x][0].id))

    def _admit(self, starting: bool) -> list[Request]:
        """The current expert's queued requests that join its batch now: at the turn's start
        its queue; later, those no other expert's waiting request is older than."""
        q, slots = self.queues.get(self.current), self.o.batch - len(self.running)
        if not q or slots <= 0:
            return []
        older = min(
            (q2[0].arrival for x, q2 in self.queues.items() if q2 and x != self.current),
            default=math.inf,
        )
        taken = []
        while q and len(taken) < slots and (starting or q[0].arrival <= older):
            taken.append(q.popleft())
        return taken

    # -- the compute ---------------------------------------------------------------------

    def compute(self):
        while self.finished < len(self.requests):
            if self._router_ready():
                yield from self._route()
            elif self.current is not None:
                if not (yield from self._step(starting=False)):
                    self.current = None  # the turn drained
                    self._wake("_copier_wake")
            elif order := self._order():
                yield from self._turn(order[0])
            else:
                yield self._sleep("_compute_wake")
        self._note_occupancy()  # where HBM stands at the end

    def _turn(self, name: str):
        """Start ``name``'s turn: make it resident (waiting for its copy if need be), then
        its first step."""
        env, start = self.env, self.env.now
        resident = self.cache.touch(name) and name not in self.loading
        if not resident:
            if self.o.overlap:
                self.wanted = name
                self._wake("_copier_wake")
                while name not in self.cache.resident or name in self.loading:
                    if self._router_ready():  # the compute is free while the copy runs
                        yield from self._route()
                        continue
                    waits = [self._sleep("_compute_wake")]
                    if name in self.loading:
                        waits.append(self.loading[name])
                    yield env.any_of(waits)
                self.wanted = None
            else:
                evicted = self.cache.make_room(
                    name, self.costs.expert_bytes[name], self._evictable()
                )
                copy = self._copy_starts(name, evicted, prefetch=False)
                yield from self._busy(self.costs.copy_s(name))
                copy["end_s"] = env.now
        self.current = name
        turn = {"expert": name, "request": self.queues[name][0].id, "start_s": start}
        turn |= {"hit": resident, "copy_wait_s": env.now - start, "admitted": 0}
        self.run.turns.append(turn)
        yield from self._step(starting=True)

    def _step(self, starting: bool):
        """One step of the current expert; False when it has nothing left to do."""
        name, turn = self.current, self.run.turns[-1]
        new = self._admit(starting)
        if new:
            for r in new:
                r.admitted, r.hit = self.env.now, turn["hit"] or not starting
            turn["admitted"] += len(new)
            prompt = sum(r.prompt_tokens for r in new) / len(new)
            yield from self._busy(self.costs.prefill_s(name, len(new), prompt))
            self.running += new
        elif self.running:
            kv = sum(r.prompt_tokens + r.generated for r in self.running) / len(self.running)
            yield from self._busy(self.costs.decode_s(name, len(self.running), kv))
            for r in self.running:
                r.generated += 1
                if r.generated == 1:
                    r.first_token = self.env.now
                if r.generated == r.output_tokens:
                    r.done = self.env.now
                    self.finished += 1
            self.running = [r for r in self.running if r.generated < r.output_tokens]
        else:
            turn["end_s"] = self.env.now
            return False
        return True

    # -- the copy engine (with overlap) ----------------------------------------------------

    def copier(self):
        env = self.env
        while self.finished < len(self.requests):
            chosen = self._next_copy()
            if chosen is None:
                yield self._sleep("_copier_wake")
                continue
            name, evicted, prefetch = chosen
            copy = self._copy_starts(name, evicted, prefetch)
            done = self.loading[name] = env.event()
            yield env.timeout(self.costs.copy_s(name))
            del self.loading[name]
            copy["end_s"] = env.now
            done.succeed()
            self._wake("_compute_wake")

    def _copy_starts(self, name: str, evicted: list[str], prefetch: bool) -> dict:
        """Make ``name`` resident now (its bytes held from the copy's start); its record,
        for the request it is copied for (its expert's oldest queued)."""
        self.cache.insert(name, self.costs.expert_bytes[name])
        self._note_occupancy()
        copy = {"expert": name, "request": self.queues[name][0].id, "start_s": self.env.now}
        copy |= {"end_s": None, "evicted": evicted, "prefetch": prefetch}
        self.run.copies.append(copy)
        return copy

    def _next_copy(self) -> tuple[str, list[str], bool] | None:
        """The copy to start now, room made for it: the waiting turn's expert, else (with
        prefetch) the first expert in the queue's order that is not resident."""
        free = self._evictable()
        if self.wanted and self.wanted not in self.cache.resident:
            name = self.wanted
            evicted = self.cache.make_room(name, self.costs.expert_bytes[name], free)
            return None if evicted is None else (name, evicted, False)
        if self.o.prefetch != "next":
            return None
        for name in self._order():
            if name in self.cache.resident:
                continue
            if self.o.policy == "belady":
                later = self.next_use(name)
                tier = [n for n in free if self.next_use(n) > later]
            else:
                tier = [n for n in free if not self.queues.get(n)]
            evicted = self.cache.make_room(name, self.costs.expert_bytes[name], tier)
            return None if evicted is None else (name, evicted, True)
        return None

    def _evictable(self) -> list[str]:
        """Resident experts a copy may evict: not the one in its turn, not one being copied."""
        return [n for n in self.cache.resident if n != self.current and n not in self.loading]

    def _note_occupancy(self) -> None:
        t, used = self.env.now, self.cache.used()
        if self.run.occupancy[-1][0] == t:
            self.run.occupancy[-1] = (t, used)
        else:
            self.run.occupancy.append((t, used))
