"""What ``coec coe compile`` and ``coec coe serve`` do, as plain functions."""

from __future__ import annotations

import json
from pathlib import Path

from coec.backend.target import load_target
from coec.coe.config import CoE, load_coe
from coec.coe.profile import Node, place, profile_of, router_profile
from coec.coe.serve import FORMAT, simulate, synthetic_experts
from coec.ir.errors import ConfigError


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
):
    """Compile every distinct expert architecture and the router; place them on the node."""
    t = load_target(target)
    node = Node.of(t, fusion)
    s = coe.serving
    batch, tokens = batch or s.batch, tokens or s.tokens
    distinct = {e.arch: e for e in coe.experts}  # one compile per architecture
    profiles = {
        arch: profile_of(distinct[arch], target, node.fusion, batch, s.prompt_tokens, tokens)
        for arch in sorted(distinct)
    }
    router_s, router_bytes = router_profile(target, batch, coe.router_seq, node.fusion)
    from dataclasses import replace

    coe = replace(coe, serving=replace(s, batch=batch, tokens=tokens))
    plan = place(coe, node, profiles, router_bytes)
    return coe, node, profiles, router_s, plan


def read_requests(path: str | Path) -> list[dict]:
    """A request file (``coec coe serve --requests``): JSON lines ``{"prompt", "expert"?}``."""
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
        unknown = sorted(set(row) - {"prompt", "expert"})
        if unknown:
            raise ConfigError(f"{path}:{i}: unknown key '{unknown[0]}' (keys: prompt, expert)")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path}: no requests in the file")
    return rows


def serve(
    coe: CoE,
    target: str,
    *,
    requests: list[dict] | None = None,
    synthetic: int | None = None,
    skew: float = 0.0,
    seed: int = 0,
    batch: int | None = None,
    tokens: int | None = None,
    policy: str | None = None,
    fusion: str | None = None,
) -> dict:
    """Route, switch and run every request; the report as versioned JSON-ready data."""
    coe, node, profiles, router_s, plan = compile_coe(coe, target, batch, tokens, fusion)
    s = coe.serving
    names = [e.name for e in coe.experts]
    prompts: list[str] | None = None
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
    elif synthetic:
        chosen = synthetic_experts(names, synthetic, skew, seed)
    else:
        raise ConfigError("give requests (--requests FILE) or --synthetic N")
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
