"""What ``coec coe compile`` and ``coec coe serve`` do, as plain functions."""

from __future__ import annotations

import json
from pathlib import Path

from coec.backend.target import load_target
from coec.coe.config import CoE, load_coe
from coec.coe.profile import Node, place, profile_of, router_profile
from coec.coe.serve import FORMAT, simulate, synthetic_experts
from coec.ir.errors import ConfigError

#: the report of a run with arrival times (``coec.coe.des``); FORMAT: the batch-after-batch run
ARRIVALS_FORMAT = "coec.coe-serve/2"


def _categories() -> list[str]:
    """The router's categories: those of its bundled labelled prompts (no fit needed)."""
    from coec.coe.router import load_prompts

    return sorted({p.category for p in load_prompts()})


def load(path: str | Path) -> CoE:
    return load_coe(path, _categories())


def compile_coe(
    coe: CoE,
    target: str,
    batch: int | None = None,
    tokens: int | None = None,
    fusion: str | None = None,
    prompt_long: int | None = None,
):
    """Compile every distinct expert architecture and the router; place them on the node.
    ``prompt_long``: prefill compiled at this prompt length too (prompts of several lengths)."""
    t = load_target(target)
    node = Node.of(t, fusion)
    s = coe.serving
    batch, tokens = batch or s.batch, tokens or s.tokens
    distinct = {e.arch: e for e in coe.experts}  # one compile per architecture
    profiles = {
        arch: profile_of(
            distinct[arch], target, node.fusion, batch, s.prompt_tokens, tokens, prompt_long
        )
        for arch in sorted(distinct)
    }
    router_s, router_bytes = router_profile(target, batch, coe.router_seq, node.fusion)
    from dataclasses import replace

    coe = replace(coe, serving=replace(s, batch=batch, tokens=tokens))
    plan = place(coe, node, profiles, router_bytes)
    return coe, node, profiles, router_s, plan


#: a request file's keys: what each may hold
REQUEST_KEYS = {
    "prompt": "the prompt (routed to its expert unless 'expert' says)",
    "expert": "the expert, by name",
    "t": "arrival time, seconds (a trace: every row has one, none earlier than the one before)",
    "prompt_tokens": "the prompt's length in tokens",
    "output_tokens": "tokens to generate",
}


def read_requests(path: str | Path) -> list[dict]:
    """A request file (``coec coe serve --requests``): JSON lines ``{"prompt", "expert"?,
    "t"?, "prompt_tokens"?, "output_tokens"?}``; with ``t`` on every row, a timed trace."""
    path = Path(path)
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read requests ({e.strerror})") from e
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{i}: not a JSON object ({e.msg})") from e
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("prompt"), str)
            or not isinstance(row.get("expert", ""), str)
        ):
            raise ConfigError(f'{path}:{i}: expected {{"prompt": "...", "expert"?: "NAME"}}')
        unknown = sorted(set(row) - set(REQUEST_KEYS))
        if unknown:
            raise ConfigError(
                f"{path}:{i}: unknown key '{unknown[0]}' (keys: {', '.join(REQUEST_KEYS)})"
            )
        for key in ("prompt_tokens", "output_tokens"):
            v = row.get(key, 1)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{path}:{i}: '{key}' must be a positive whole number")
        t = row.get("t", 0.0)
        if isinstance(t, bool) or not isinstance(t, int | float) or t < 0:
            raise ConfigError(f"{path}:{i}: 't' must be a time in seconds, >= 0")
        if "t" in row and rows and "t" in rows[-1] and t < rows[-1]["t"]:
            raise ConfigError(f"{path}:{i}: 't' {t} is earlier than the row before's")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path}: no requests in the file")
    timed = sum("t" in r for r in rows)
    if timed not in (0, len(rows)):
        raise ConfigError(f"{path}: {timed} of {len(rows)} rows have a time 't': all or none")
    return rows


def choose_experts(
    coe: CoE,
    requests: list[dict] | None,
    synthetic: int | None,
    skew: float | None,
    seed: int,
) -> tuple[list[str], list[str] | None]:
    """Each request's expert (routed from its prompt unless it names one) and the prompts;
    synthetic ones drawn by ``seed`` from the [traffic] mix, else Zipf(``skew``)."""
    names = [e.name for e in coe.experts]
    if requests is not None:
        prompts = [r.get("prompt", "") for r in requests]
        from coec.coe.router import Router

        router = Router.default()
        need = [i for i, r in enumerate(requests) if "expert" not in r]
        routed = router.route([prompts[i] for i in need], coe.categories) if need else []
        chosen = [r.get("expert") for r in requests]
        for i, e in zip(need, routed, strict=True):
            chosen[i] = e
        for e in chosen:
            coe.expert(e)  # an unknown expert in the requests is a clear error
        return chosen, prompts
    if not synthetic:
        raise ConfigError("give requests (--requests FILE) or --synthetic N")
    mix = coe.traffic.mix
    if mix and skew is not None:
        raise ConfigError(
            f"--skew draws a Zipf popularity; {coe.source}'s [traffic] mix already gives one"
        )
    popularity = None
    if mix:
        popularity = [
            sum(w for c, w in mix.items() if coe.categories.get(c) == name) for name in names
        ]
    return synthetic_experts(names, synthetic, skew or 0.0, seed, popularity), None


def serve(
    coe: CoE,
    target: str,
    *,
    requests: list[dict] | None = None,
    synthetic: int | None = None,
    skew: float | None = None,
    seed: int = 0,
    batch: int | None = None,
    tokens: int | None = None,
    policy: str | None = None,
    fusion: str | None = None,
    **arrivals,
) -> dict:
    """Route, switch and run every request; the report as versioned JSON-ready data.

    With a rate (``rate=``, or the [traffic] table's) or a trace with arrival times, the
    requests arrive and queue (``serve_arrivals``); else batch after batch, no arrivals."""
    chosen, prompts = choose_experts(coe, requests, synthetic, skew, seed)
    timed = bool(requests) and "t" in requests[0]
    if timed or arrivals.get("rate") is not None or coe.traffic.rate is not None:
        return serve_arrivals(
            coe,
            target,
            chosen,
            prompts,
            requests,
            seed=seed,
            batch=batch,
            tokens=tokens,
            policy=policy,
            fusion=fusion,
            **arrivals,
        )
    given = sorted(k for k, v in arrivals.items() if v is not None)
    if given:
        raise ConfigError(f"{given[0]} applies to a run with arrival times (a rate or a trace)")
    coe, node, profiles, router_s, plan = compile_coe(coe, target, batch, tokens, fusion)
    s = coe.serving
    arch_of = {e.name: e.arch for e in coe.experts}
    served = simulate(
        chosen,
        batch=s.batch,
        router_s=router_s,
        expert_bytes=plan.expert_bytes,
        expert_s=lambda name, b: profiles[arch_of[name]].seconds(b, s.tokens),
        copy_Bps=plan.copy_Bps,
        cache_bytes=plan.cache_bytes,
        policy=policy or s.policy,
        prompts=prompts,
    )
    return {
        "format": FORMAT,
        "coe": coe.name,
        "target": target,
        "fusion": node.fusion,
        "batch": s.batch,
        "tokens": s.tokens,
        "prompt_tokens": s.prompt_tokens,
        "policy": policy or s.policy,
        "placement": plan.to_json(),
        "router_s_per_batch": router_s,
        "assumptions": assumptions(node, profiles),
        "totals": served.totals(),
        "requests": served.rows,
    }


def assumptions(node: Node, profiles: dict | None = None) -> list[str]:
    files = [a for a, p in (profiles or {}).items() if p.sockets == 1]
    return [
        f"expert copy into HBM: {node.copy_path} = {node.copy_Bps / 1e9:g} GB/s for the node",
        "switch, router and expert run one after another (no overlap)",
        "decode cost interpolated linearly between KV lengths prompt and prompt+tokens, "
        "and between batch 1 and the serving batch",
        f"experts tensor-parallel over the node's {node.sockets} sockets, fusion {node.fusion}; "
        "router encoder on one socket",
        "router head (a 384 x categories matrix-vector product) not counted",
    ] + (
        [
            f"MODEL.py experts ({', '.join(files)}) on one socket (copied at one socket's rate): "
            "one forward for the prompt and one per output token, a batch's prompts in turn"
        ]
        if files
        else []
    )


def serve_arrivals(
    coe: CoE,
    target: str,
    chosen: list[str],
    prompts: list[str] | None,
    requests: list[dict] | None,
    *,
    seed: int = 0,
    batch: int | None = None,
    tokens: int | None = None,
    policy: str | None = None,
    fusion: str | None = None,
    rate: float | None = None,
    cv: float | None = None,
    max_wait: float | None = None,
    prefetch: str | None = None,
    overlap: bool | None = None,
    spread: float | None = None,
    slo=None,
    warmup: int | None = None,
) -> dict:
    """Serve ``chosen`` as requests arriving (a trace's times, or drawn at ``rate``):
    the discrete-event model, every step's cost from the compiled experts."""
    from dataclasses import replace

    from coec.coe import des
    from coec.coe.slo import SLO, metrics
    from coec.coe.workload import arrival_times, output_lengths, prompt_lengths

    s, traffic = coe.serving, coe.traffic
    n = len(chosen)
    timed = bool(requests) and "t" in requests[0]
    if timed and rate is not None:
        raise ConfigError("--rate draws arrival times; the trace gives its own ('t')")
    rate = traffic.rate if rate is None else rate
    cv = traffic.cv if cv is None else cv
    spread = traffic.spread if spread is None else spread
    if timed:
        times = [float(r["t"]) for r in requests]
        arrivals = {"source": "trace", "requests": n}
    else:
        times = arrival_times(n, rate, cv, seed)
        kind = "poisson" if cv == 1 else "gamma"
        arrivals = {"source": kind, "rate_rps": rate, "cv": cv, "seed": seed, "requests": n}
    rows = requests or [{}] * n
    tokens = tokens or s.tokens
    drawn_p = prompt_lengths(n, s.prompt_tokens, spread, seed)
    drawn_o = output_lengths(n, tokens, spread, seed)
    p_len = [r.get("prompt_tokens", d) for r, d in zip(rows, drawn_p, strict=True)]
    o_len = [r.get("output_tokens", d) for r, d in zip(rows, drawn_o, strict=True)]
    shortest, longest = min(p_len), max(p_len)
    context = max(p + o for p, o in zip(p_len, o_len, strict=True))
    # profiles span the lengths: prefill at the shortest and longest prompt, decode from the
    # shortest prompt's KV to the longest context; the KV cache holds ``batch`` of the longest
    span = replace(coe, serving=replace(s, prompt_tokens=shortest, tokens=context - shortest))
    coe2, node, profiles, router_s, plan = compile_coe(
        span, target, batch, context - shortest, fusion, longest
    )
    batch = coe2.serving.batch
    router_1, _ = router_profile(target, 1, coe.router_seq, node.fusion)
    arch_of = {e.name: e.arch for e in coe.experts}
    costs = des.Costs(
        router_s=lambda b: router_1 + (router_s - router_1) * (b - 1) / max(1, batch - 1),
        prefill_s=lambda e, b, p: profiles[arch_of[e]].prefill_at(b, p),
        decode_s=lambda e, b, kv: profiles[arch_of[e]].decode_at(b, kv),
        expert_bytes=plan.expert_bytes,
        copy_Bps=plan.copy_Bps,
    )
    options = des.Options(
        cache_bytes=plan.cache_bytes,
        batch=batch,
        max_wait_s=s.max_wait if max_wait is None else max_wait,
        policy=policy or s.policy,
        prefetch=prefetch or s.prefetch,
        overlap=s.overlap if overlap is None else overlap,
    )
    reqs = [
        des.Request(i, times[i], chosen[i], p_len[i], o_len[i], prompts[i] if prompts else None)
        for i in range(n)
    ]
    slo = slo or SLO()
    run = des.simulate(reqs, costs, options)
    return {
        "format": ARRIVALS_FORMAT,
        "coe": coe.name,
        "target": target,
        "fusion": node.fusion,
        "batch": batch,
        "policy": options.policy,
        "prefetch": options.prefetch,
        "overlap": options.overlap,
        "max_wait_s": options.max_wait_s,
        "arrivals": arrivals,
        "lengths": {
            "prompt_tokens": {"min": shortest, "mean": sum(p_len) / n, "max": longest},
            "output_tokens": {"min": min(o_len), "mean": sum(o_len) / n, "max": max(o_len)},
        },
        "placement": plan.to_json(),
        "router_s": {"batch_1": router_1, f"batch_{batch}": router_s},
        "assumptions": arrival_assumptions(node, target, options),
        "metrics": metrics(run, slo, warmup or 0),
        "hbm_occupancy": [[t, used] for t, used in run.occupancy],
        "requests": [r.row() for r in sorted(run.requests, key=lambda r: r.id)],
    }


def arrival_assumptions(node: Node, target: str, options) -> list[str]:
    """What the arrivals model assumes, with the figures it takes from the target."""
    hbm = load_target(target).memory["hbm"].bandwidth_Bps
    per_socket = node.copy_Bps / node.sockets
    engines = "DMA" if node.host and node.host.copy_from == "ddr" else "copy"
    copies = (
        f"copies beside compute on the node's {engines} engines, one expert at a time, "
        f"prefetch {options.prefetch}; a copy does not slow the compute (it writes each socket's HBM at {per_socket / 1e9:g} GB/s of its "
        f"{hbm / 1e9:g} GB/s, {per_socket / hbm:.0%}: not modelled)"
        if options.overlap
        else "copies hold the compute (no overlap)"
    )
    return [
        f"expert copy into HBM: {node.copy_path} = {node.copy_Bps / 1e9:g} GB/s for the node",
        copies,
        "the node computes one thing at a time: a router batch (on one socket) or a step of one "
        f"expert (over its {node.sockets} sockets); the router runs between steps when its "
        f"batch is full or its oldest prompt has waited {options.max_wait_s:g} s",
        "turns first come first served (the expert of the oldest queued request); a turn "
        f"admits its queue up to {options.batch} sequences (the KV cache's slots) and steps "
        "until it drains; newcomers join while no other expert's request is older; a prefill "
        "step runs before the decode steps it interrupts",
        "a step's cost: the expert compiled at batch 1 and the serving batch, prefill at the "
        "shortest and longest prompt, decode at the shortest prompt's KV and the longest "
        "context; linear in between; a batch of mixed lengths at its mean length",
        "a request's first token comes from its first decode step after the prefill",
        f"expert cache {options.policy}"
        + (
            " (Belady: the offline bound, knowing every request's arrival)"
            if options.policy == "belady"
            else ""
        )
        + "; the expert in its turn and one being copied are never evicted",
        f"experts tensor-parallel over the node's {node.sockets} sockets (MODEL.py experts on "
        f"one), fusion {node.fusion}",
    ]
