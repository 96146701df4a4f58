"""What a CoE costs on a node: each expert architecture and the router, compiled by coec.

Experts are zoo models compiled count-only (meta device) for the node's sockets
(tensor parallel); identical architectures are compiled once and shared. An
expert's time is prefill of the prompt plus one decode step per output token;
decode is compiled at two KV lengths (prompt, prompt + tokens) and interpolated
linearly between them (a decode step's cost is linear in the KV length), and at
batch 1 and the serving batch, interpolated linearly in between. Prompts of
several lengths compile prefill at the shortest and the longest too, interpolated
linearly between them: the discrete-event serving model (``coec.coe.des``)
charges each step at its own batch and context (``prefill_at``, ``decode_at``).

A MODEL.py expert has no prefill/decode phases: it is compiled once on one socket
and runs its forward once for the prompt and once per output token, the prompts
of a batch one after another.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from coec.backend.target import Host, Target, load_target
from coec.coe.config import CoE, Expert
from coec.ir.errors import CapacityError

BF16 = 2
compiles = 0  # how many compiles ran (tests check identical experts compile once)


@dataclass(frozen=True)
class Node:
    """The memory and copy figures the serving model needs, for a whole node."""

    name: str
    sockets: int
    hbm_bytes: int
    ddr_bytes: int
    copy_Bps: float  # expert copy rate into HBM, all sockets copying: DDR->HBM or host->GPU
    copy_path: str
    fusion: str
    launch: str = ""  # the launch mode its experts and router are compiled with
    host: Host | None = None  # the copy topology (None: ``copy_Bps`` shared evenly)

    def copy_rate(self, devices: int) -> float:
        """The node's copy rate into HBM while ``devices`` sockets copy at once."""
        if self.host:
            return self.host.node_Bps(devices)
        return self.copy_Bps * devices / self.sockets

    @classmethod
    def of(cls, target: Target, fusion: str | None = None) -> Node:
        """The node of ``target`` (its launch mode as set); ``fusion`` defaults to the best
        the target runs."""
        if fusion is not None and fusion not in target.fusion_policies:
            from coec.ir.errors import ConfigError

            raise ConfigError(
                f"target {target.name} runs fusion {', '.join(target.fusion_policies)}, "
                f"not {fusion!r}"
            )
        n, host = target.sockets, target.copy_path()
        copy, path = host.node_Bps(n), copy_path_text(host, n)
        if fusion is None:
            from coec.pipeline import Options

            fusion = Options.best_fusion(target)
        return cls(
            target.name,
            n,
            target.memory["hbm"].capacity_bytes * n,
            target.memory["ddr"].capacity_bytes * n,
            copy,
            path,
            fusion,
            target.launch.mode,
            host,
        )


def copy_path_text(host: Host, sockets: int) -> str:
    """How the copy rate comes about, in words: the terms of ``Host.device_Bps``."""
    terms = [f"link {host.link_Bps / 1e9:g}"]
    if host.uplink_Bps:
        share = min(host.devices_per_uplink, sockets)
        terms.append(f"uplink {host.uplink_Bps / 1e9:g}/{share}")
    if host.dram_Bps:
        terms.append(f"DRAM {host.dram_Bps / 1e9:g}/{sockets}")
    what = "DDR->HBM" if host.copy_from == "ddr" else "host->GPU PCIe"
    per = host.device_Bps(sockets) / 1e9
    return (
        f"{what} ({host.reading(sockets)}): min({', '.join(terms)}) x {host.dma_efficiency:g} "
        f"= {per:g} GB/s per device, x {sockets}"
    )


def _weight_bytes(schedule: dict) -> int:
    return sum(b["bytes"] for b in schedule["buffers"].values() if b["kind"] == "weight")


@functools.cache
def _compiled(
    zoo: str,
    phase: str,
    seq: int,
    batch: int,
    target: str,
    fusion: str,
    layers: int | None = None,
    launch: str | None = None,
) -> dict:
    from coec.cache import cached, target_params
    from coec.commands import compile_zoo_model

    def compile_it() -> dict:
        global compiles
        compiles += 1
        r = compile_zoo_model(
            zoo,
            phase=phase,
            seq=seq,
            batch=batch,
            layers=layers,
            target=target,
            fusion=fusion,
            launch=launch,
        )
        return {"seconds": r.report["seconds"], "weight_bytes": _weight_bytes(r.model.schedule)}

    key = dict(zoo=zoo, phase=phase, seq=seq, batch=batch, layers=layers, fusion=fusion)
    if launch:
        key["launch"] = launch
    return cached("zoo-compile", {**key, "target": target_params(target)}, compile_it)


@functools.cache
def _compiled_file(path: str, entry: str | None, target: str, fusion: str) -> dict:
    from coec.cache import cached, file_digest, target_params
    from coec.commands import compile_model_file

    def compile_it() -> dict:
        global compiles
        compiles += 1
        r = compile_model_file(path, entry=entry, target=target, fusion=fusion, sockets=1)
        return {"seconds": r.report["seconds"], "weight_bytes": _weight_bytes(r.model.schedule)}

    try:
        digest = file_digest(path)
    except OSError:
        return compile_it()  # compile_model_file names the missing file
    key = {"file": digest, "entry": entry, "fusion": fusion, "target": target_params(target)}
    return cached("file-compile", key, compile_it)


@dataclass(frozen=True)
class ExpertProfile:
    """One expert architecture's costs on a node (times in seconds)."""

    zoo: str
    weight_bytes: int  # the whole node's share: every socket's shard
    kv_bytes_per_token: int  # per sequence, all layers, K and V
    prefill: tuple[float, float]  # at batch 1 and at batch ``batch``
    decode: tuple[tuple[float, float], tuple[float, float]]  # [batch][kv at S, at S + T]
    batch: int
    prompt: int
    tokens: int
    sockets: int = 0  # sockets its weights are spread over (0: all the node's)
    #: prefill at batch 1 and ``batch`` for prompts of ``prompt_long`` tokens (None: one length)
    prefill_long: tuple[float, float] | None = None
    prompt_long: int = 0

    @property
    def prefill_s(self) -> float:
        return self.prefill[0]

    @property
    def decode_step_s(self) -> float:
        return self.decode[0][0]

    def _at(self, pair: tuple[float, float], b: int) -> float:
        if self.batch == 1:
            return pair[0]
        return pair[0] + (pair[1] - pair[0]) * (b - 1) / (self.batch - 1)

    def prefill_at(self, b: int, prompt: float) -> float:
        """Prefill of ``b`` prompts of ``prompt`` tokens (their mean), within the profiled
        lengths: linear in the batch and in the prompt length between the compiled points."""
        at = self._at(self.prefill, b)
        if not self.prefill_long:
            return at
        span = self.prompt_long - self.prompt
        return at + (self._at(self.prefill_long, b) - at) * (prompt - self.prompt) / span

    def decode_at(self, b: int, kv: float) -> float:
        """One decode step of ``b`` sequences whose KV lengths average ``kv``: linear in the
        batch, and in the length between S and S + T (attention reads each sequence's KV)."""
        lo, hi = (self._at((self.decode[0][i], self.decode[1][i]), b) for i in (0, 1))
        return lo + (hi - lo) * (kv - self.prompt) / self.tokens

    def seconds(self, b: int, tokens: int) -> float:
        """Prefill of ``b`` prompts plus ``tokens`` decode steps (tokens <= profiled)."""
        # mean decode step over KV lengths S .. S+tokens-1, linear in the length
        mean = self.decode_at(b, self.prompt + (tokens - 1) / 2)
        return self._at(self.prefill, b) + tokens * mean


@dataclass(frozen=True)
class FileExpertProfile:
    """A MODEL.py expert on one socket: one forward for the prompt and per output token."""

    zoo: str  # its arch key (the file)
    weight_bytes: int
    forward_s: float
    sockets: int = 1
    kv_bytes_per_token: int = 0

    @property
    def prefill_s(self) -> float:
        return self.forward_s

    @property
    def decode_step_s(self) -> float:
        return self.forward_s

    def prefill_at(self, b: int, prompt: float) -> float:
        return b * self.forward_s

    def decode_at(self, b: int, kv: float) -> float:
        return b * self.forward_s

    def seconds(self, b: int, tokens: int) -> float:
        return b * (1 + tokens) * self.forward_s


def profile_expert(
    zoo: str,
    target: str,
    fusion: str,
    batch: int,
    prompt: int,
    tokens: int,
    layers: int | None = None,
    launch: str | None = None,
    prompt_long: int | None = None,
):
    """``zoo``'s costs on ``target`` with ``fusion``, launched as ``launch`` (None: the
    target's own mode); ``prompt_long``: prefill compiled at this prompt length too."""
    from coec.models.zoo import get_arch

    arch = get_arch(zoo, layers)
    t = load_target(target)
    batches = (1, batch) if batch > 1 else (1, 1)

    def run(phase, seq, b):
        return _compiled(zoo, phase, seq, b, target, fusion, layers, launch)

    pre = tuple(run("prefill", prompt, b)["seconds"] for b in batches)
    dec = tuple(
        tuple(run("decode", kv, b)["seconds"] for kv in (prompt, prompt + tokens)) for b in batches
    )
    weights = run("prefill", prompt, 1)["weight_bytes"] * t.sockets
    kv_per_token = 2 * arch.layers * arch.kv_heads * arch.head_dim * BF16
    long = None
    if prompt_long and prompt_long != prompt:
        long = tuple(run("prefill", prompt_long, b)["seconds"] for b in batches)
    return ExpertProfile(
        zoo, weights, kv_per_token, pre, dec, batch, prompt, tokens, 0, long, prompt_long or 0
    )


def profile_of(
    expert: Expert,
    target: str,
    fusion: str,
    batch: int,
    prompt: int,
    tokens: int,
    prompt_long: int | None = None,
):
    """The profile of ``expert``'s architecture (compiled once per architecture)."""
    if expert.file:
        c = _compiled_file(expert.file, expert.entry, target, fusion)
        return FileExpertProfile(expert.arch, c["weight_bytes"], c["seconds"])
    return profile_expert(
        expert.zoo, target, fusion, batch, prompt, tokens, expert.layers, prompt_long=prompt_long
    )


@functools.cache
def router_profile(
    target: str, batch: int, seq: int, fusion: str | None = None, launch: str | None = None
) -> tuple[float, int]:
    """(seconds per batch, weight bytes) of the router's encoder on one socket of ``target``,
    launched as ``launch`` (None: the target's own mode)."""
    from coec.cache import cached, target_params
    from coec.coe.router import embedding_program
    from coec.pipeline import Options, compile_program
    from coec.runtime.executor import Executor

    fusion = fusion or Node.of(load_target(target)).fusion

    def compile_it() -> dict:
        module, inputs = embedding_program(batch, seq)
        options = Options(target=target, fusion=fusion, sockets=1, launch=launch)
        compiled = compile_program(module, inputs, options)
        _, report = Executor(compiled.schedule, count_only=True).run()
        return {"seconds": report["seconds"], "weight_bytes": _weight_bytes(compiled.schedule)}

    key = {"batch": batch, "seq": seq, "fusion": fusion, "target": target_params(target)}
    if launch:
        key["launch"] = launch
    c = cached("router-compile", key, compile_it)
    return c["seconds"], c["weight_bytes"]


@dataclass(frozen=True)
class Plan:
    """Where a CoE lives on a node: what HBM keeps resident, what the expert cache gets."""

    node: Node
    expert_bytes: dict[str, int]  # expert name -> bytes
    router_bytes: int
    kv_bytes: int
    cache_bytes: int  # HBM left for resident experts
    ddr_needed: int
    copy_Bps: dict[str, float]  # expert name -> its copy rate into HBM
    nodes_in_hbm: int  # nodes it takes to keep every expert resident in HBM (no switching)
    nodes_in_ddr: int  # nodes it takes to hold every expert in DDR (host memory on GPUs)

    def to_json(self) -> dict:
        return {
            "node": self.node.name,
            "hbm_bytes": self.node.hbm_bytes,
            "ddr_bytes": self.node.ddr_bytes,
            "router_bytes": self.router_bytes,
            "kv_cache_bytes": self.kv_bytes,
            "expert_cache_bytes": self.cache_bytes,
            "experts_in_ddr_bytes": self.ddr_needed,
            "copy_GBps": self.node.copy_Bps / 1e9,
            "copy_path": self.node.copy_path,
            "nodes_all_experts_in_hbm": self.nodes_in_hbm,
            "nodes_all_experts_in_ddr": self.nodes_in_ddr,
        }


def nodes_to_hold(sizes: list[int], per_node: int) -> int:
    """Nodes of ``per_node`` bytes each that hold every expert whole (first fit, largest first)."""
    if not sizes:
        return 0
    if max(sizes) > per_node:
        return 0  # no number of nodes does
    free: list[int] = []
    for size in sorted(sizes, reverse=True):
        for i, left in enumerate(free):
            if size <= left:
                free[i] -= size
                break
        else:
            free.append(per_node - size)
    return len(free)


def place(coe: CoE, node: Node, profiles: dict[str, ExpertProfile], router_bytes: int) -> Plan:
    """HBM: router, KV cache, expert cache; DDR (host memory on GPUs): every expert."""
    s = coe.serving
    sizes = {e.name: profiles[e.arch].weight_bytes for e in coe.experts}
    kv = (
        max(p.kv_bytes_per_token for p in profiles.values())
        * s.batch
        * (s.prompt_tokens + s.tokens)
    )
    ddr_needed = sum(sizes.values())
    in_ddr = nodes_to_hold(list(sizes.values()), node.ddr_bytes)
    if ddr_needed > node.ddr_bytes:
        raise CapacityError(
            "ddr",
            ddr_needed,
            node.ddr_bytes,
            f"the {len(sizes)} experts of {coe.name} on one {node.name} node ("
            + (f"they take {in_ddr} nodes" if in_ddr else "one expert alone exceeds a node")
            + ")",
        )
    cache = node.hbm_bytes - router_bytes * node.sockets - kv
    largest = max(sizes.values())
    if cache < largest:
        raise CapacityError(
            "hbm",
            router_bytes * node.sockets + kv + largest,
            node.hbm_bytes,
            "router, KV cache and one active expert",
        )
    copy = {e.name: node.copy_rate(profiles[e.arch].sockets or node.sockets) for e in coe.experts}
    in_hbm = nodes_to_hold(list(sizes.values()), cache)
    return Plan(
        node, sizes, router_bytes * node.sockets, kv, cache, ddr_needed, copy, in_hbm, in_ddr
    )
