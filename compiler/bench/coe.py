"""``coec bench coe``: the SN40L paper's CoE experiment, modeled.

150 Llama-2-7B-sized experts on one SN40L node (TP8, dataflow fusion, launched
by the chip itself: mode ``hardware``) against DGX A100 and DGX H100 nodes (TP8,
epilogue fusion, their targets' own launch mode), batch 1 and 8, 20 and 200
output tokens. Each prompt is routed to its own expert, drawn from a Zipf-like
popularity over the experts (``SKEW``), so a batch of BS prompts may need
several experts: each distinct one is switched in if not resident and runs its
sub-batch (``coec.coe.serve.simulate``). Each system keeps what fits of the
experts in HBM (LRU) and copies the others in when asked (SN40L: from its DDR;
DGX: from host memory over PCIe), at the rate its target's [host] topology
gives; the DGX rows are also read with the two bounding topologies (one host
link for the whole node; a link per GPU). Cold start (HBM empty, the first
``WARMUP`` requests) and steady state (the ``MEASURE`` requests after them) are
reported apart. Every figure is a modeled cost of coec's compiled, count-only
llama2-7b (prefill and decode) and MiniLM router.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

from coec.backend.schedule import write_files_atomic
from coec.backend.target import Target, load_target
from coec.bench.common import csv_text
from coec.coe.config import CoE, Expert, Serving
from coec.coe.profile import Node, nodes_to_hold, place, profile_expert, router_profile
from coec.coe.serve import simulate, synthetic_experts

SYSTEMS = ("sn40l-node", "dgx-a100", "dgx-h100")
#: the launch mode each system runs with (None: its target's own): the SN40L orchestrates
#: its kernels on chip (the paper's fused + hardware-orchestrated runs); the GPUs keep their
#: targets' asynchronous stream
LAUNCH = {"sn40l-node": "hardware", "dgx-a100": None, "dgx-h100": None}
EXPERT_ARCH = "llama2-7b"
PROMPT = 512
ROUTER_SEQ = 64
#: requests from an empty HBM (the cold start), then the requests measured in steady state
WARMUP = 512
MEASURE = 2048
#: expert popularity: Zipf with this exponent over the experts (0: uniform). A guess with a
#: precedent, not a measurement: request popularity in web caches is Zipf-like with exponents
#: 0.64-0.83 (Breslau et al., INFOCOM 1999); the CoE paper publishes no category mix. Uniform
#: (--skew 0) is the cache's worst case.
SKEW = 0.8
SWEEP = (10, 50, 100, 150, 300, 500, 850)


def _coe(n: int, batch: int, tokens: int) -> CoE:
    experts = [Expert(f"expert-{i}", EXPERT_ARCH) for i in range(n)]
    return CoE(
        f"{n} x {EXPERT_ARCH}",
        experts,
        {},
        ROUTER_SEQ,
        Serving(batch=batch, tokens=tokens, prompt_tokens=PROMPT),
    )


def traffic(names: list[str], skew: float = SKEW, seed: int = 0) -> list[str]:
    """WARMUP + MEASURE prompts, each routed to its own expert (Zipf(skew) popularity)."""
    return synthetic_experts(names, WARMUP + MEASURE, skew, seed)


def system_target(system: str) -> Target:
    """``system``'s target in the launch mode the bench runs it with."""
    t = load_target(system)
    return t.with_launch(LAUNCH[system]) if LAUNCH.get(system) else t


def readings(target: Target) -> list[Target]:
    """``target`` with its own copy topology and, for host copies over PCIe, the two that
    bound it: every device's copy through one host link, and a link per device."""
    host = target.copy_path()
    if host.copy_from != "host":
        return [target]
    one = replace(host, devices_per_uplink=target.sockets, uplink_Bps=host.link_Bps)
    own = replace(host, devices_per_uplink=1, uplink_Bps=0.0)
    return [target, replace(target, host=one), replace(target, host=own)]


def run_config(
    target: Target,
    n: int,
    batch: int,
    tokens: int,
    max_tokens: int,
    skew: float = SKEW,
    seed: int = 0,
):
    """One (system, experts, batch, tokens) point: cold and steady per-request times."""
    node = Node.of(target)
    system = target.name
    prof = profile_expert(
        EXPERT_ARCH, system, node.fusion, batch, PROMPT, max_tokens, launch=node.launch
    )
    router_s, router_bytes = router_profile(system, batch, ROUTER_SEQ, launch=node.launch)
    coe = _coe(n, batch, tokens)
    # experts beyond one node's DDR (host memory) need more nodes: serve from what one holds
    hold = min(n, node.ddr_bytes // prof.weight_bytes)
    plan = place(_coe(hold, batch, tokens), node, {EXPERT_ARCH: prof}, router_bytes)
    names = [e.name for e in coe.experts]
    served = simulate(
        traffic(names, skew, seed),
        batch=batch,
        router_s=router_s,
        expert_bytes=dict.fromkeys(names, prof.weight_bytes),
        expert_s=lambda _name, b: prof.seconds(b, tokens),
        copy_Bps=node.copy_Bps,
        cache_bytes=plan.cache_bytes,
    )
    cold, steady = served.split(WARMUP)
    sizes = [prof.weight_bytes] * n
    filled = served.filled_at
    row = {
        "system": system,
        "launch": node.launch,
        "copy_reading": node.host.reading(node.sockets) if node.host else "",
        "experts": n,
        "batch": batch,
        "tokens": tokens,
        "skew": skew,
        "expert_bytes": prof.weight_bytes,
        "copy_GBps": node.copy_Bps / 1e9,
        "hbm_expert_slots": plan.cache_bytes // prof.weight_bytes,
        "nodes_all_in_hbm": nodes_to_hold(sizes, plan.cache_bytes),
        "nodes_all_in_ddr": nodes_to_hold(sizes, node.ddr_bytes),
        "switch_s": prof.weight_bytes / node.copy_Bps,  # one expert's copy into HBM
        # the request at which the cache first evicted: steady state needs it < WARMUP
        "cache_full_at_request": None if filled is None else filled * batch,
        "experts_per_batch": steady["expert_activations"] / (steady["requests"] / batch),
        "cold_per_request_s": cold["total_s"] / cold["requests"],
        "cold_hit_rate": cold["hit_rate"],
    }
    n_req = steady["requests"]
    row.update(
        {
            "router_per_request_s": steady["router_s"] / n_req,
            "switch_per_request_s": steady["switch_s"] / n_req,
            "expert_per_request_s": steady["expert_s"] / n_req,
            "per_request_s": steady["total_s"] / n_req,
            "hit_rate": steady["hit_rate"],
            "total_s": steady["total_s"],
        }
    )
    return row


def bench_coe(experts: int = 150, sweep=SWEEP, progress=None, skew: float = SKEW):
    rows, curve = [], []
    for system in SYSTEMS:
        target = system_target(system)
        for batch, tokens in ((1, 20), (1, 200), (8, 20), (8, 200)):
            for k, reading in enumerate(readings(target)):
                row = run_config(reading, experts, batch, tokens, 200, skew)
                rows.append({**row, "topology": "target file" if k == 0 else "bound"})
            if progress:
                progress()
    for system in SYSTEMS:
        target = system_target(system)
        for n in sweep:
            curve.append(run_config(target, n, 1, 20, 200, skew))
        if progress:
            progress()
    return rows, curve


def summary(rows: list[dict]) -> list[dict]:
    """SN40L against each DGX reading per (batch, tokens): switch, expert-only, steady and
    cold speedups."""
    sn = {(r["batch"], r["tokens"]): r for r in rows if r["system"] == "sn40l-node"}
    out = []
    for r in rows:
        if r["system"] == "sn40l-node":
            continue
        s = sn[(r["batch"], r["tokens"])]
        out.append(
            {
                "vs": r["system"],
                "copy_reading": r["copy_reading"],
                "batch": r["batch"],
                "tokens": r["tokens"],
                "switch_ratio": r["switch_s"] / s["switch_s"],
                "expert_speedup": r["expert_per_request_s"] / s["expert_per_request_s"],
                "overall_speedup": r["per_request_s"] / s["per_request_s"],
                "cold_speedup": r["cold_per_request_s"] / s["cold_per_request_s"],
            }
        )
    return out


def footprint(curve: list[dict]) -> list[dict]:
    """Nodes each system takes for the sweep's largest CoE (the paper's 850 experts)."""
    n = max(r["experts"] for r in curve)
    return [
        {k: r[k] for k in ("system", "experts", "nodes_all_in_hbm", "nodes_all_in_ddr")}
        for r in curve
        if r["experts"] == n
    ]


def write_outputs(out: Path, rows: list[dict], curve: list[dict], ratios: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[Path, bytes | str] = {}
    files[out / "results.csv"] = csv_text(rows)
    files[out / "results.json"] = (
        json.dumps(
            {
                "format": "coec.bench.fusion-coe/2",
                "assumptions": assumptions(rows[0]["skew"] if rows else SKEW),
                "rows": rows,
                "sweep": curve,
                "ratios": ratios,
                "footprint": footprint(curve),
            },
            indent=1,
        )
        + "\n"
    )
    fig, axes = plt.subplots(1, 4, figsize=(15, 4), sharey=False)
    configs = sorted({(r["batch"], r["tokens"]) for r in rows})
    for ax, (batch, tokens) in zip(axes, configs, strict=False):
        sel = [
            r
            for r in rows
            if (r["batch"], r["tokens"]) == (batch, tokens) and r["topology"] == "target file"
        ]
        names = [r["system"] for r in sel]
        bottom = [0.0] * len(sel)
        for part, color in (
            ("router", "tab:gray"),
            ("switch", "tab:red"),
            ("expert", "tab:blue"),
        ):
            vals = [r[f"{part}_per_request_s"] * 1e3 for r in sel]
            ax.bar(names, vals, bottom=bottom, color=color, label=part)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_title(f"batch {batch}, {tokens} tokens (steady)")
        ax.set_ylabel("ms per request")
        ax.tick_params(axis="x", labelsize=8)
    axes[0].legend()
    fig.suptitle(f"coec: CoE serving, 150 {EXPERT_ARCH} experts (modeled latency breakdown)")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    files[out / "breakdown.png"] = png.getvalue()
    fig, ax = plt.subplots(figsize=(7, 4))
    for system in SYSTEMS:
        pts = [r for r in curve if r["system"] == system]
        ax.plot(
            [r["experts"] for r in pts],
            [r["per_request_s"] * 1e3 for r in pts],
            marker="o",
            label=system,
        )
    ax.set_xlabel("experts")
    ax.set_ylabel("ms per request (batch 1, 20 tokens, steady)")
    ax.set_xscale("log")
    ax.legend()
    ax.set_title(f"latency vs number of experts (Zipf {curve[0]['skew']:g} traffic, LRU, steady)")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    files[out / "experts_sweep.png"] = png.getvalue()
    write_files_atomic(files)
    return sorted(files)


def assumptions(skew: float = SKEW) -> list[str]:
    lines = []
    for s in SYSTEMS:
        node = Node.of(system_target(s))
        lines.append(
            f"{s}: launch {node.launch}; expert copy {node.copy_path} = "
            f"{node.copy_Bps / 1e9:g} GB/s; fusion {node.fusion}; HBM "
            f"{node.hbm_bytes / 2**30:.0f} GiB, DDR/host {node.ddr_bytes / 2**40:.2f} TiB"
        )
    lines += [
        "DGX copy readings: the target file's topology, and two bounds: one host link for the "
        "node (every GPU's copy through one PCIe x16) and a link per GPU (no shared uplink)",
        f"experts: {EXPERT_ARCH} (bf16, TP8 over the node's 8 sockets/GPUs: an expert's bytes are "
        "every socket's shard — layers Megatron-style, embedding and LM head split by "
        "vocabulary; norms and folded constants replicated, counted on each), prompt "
        f"{PROMPT} tokens, router MiniLM-L6 at seq {ROUTER_SEQ} on one socket",
        f"expert time: prefill of {PROMPT} tokens + one decode step per output token; decode "
        f"compiled at KV {PROMPT} and {PROMPT + 200} and interpolated linearly in between, and "
        "between batch 1 and the batch for a sub-batch",
        f"traffic: each prompt routed to its own expert, Zipf({skew:g}) popularity over the "
        "experts (seed 0; Zipf-like as web request popularity, Breslau et al. 1999: a guess, "
        "the paper gives no mix); a batch runs each distinct expert on its sub-batch, "
        "switching it in if not resident; LRU expert cache in the HBM left after router and "
        "KV cache",
        f"cold: the first {WARMUP} requests from an empty HBM; steady: the {MEASURE} requests "
        "after them (the table's router/switch/expert/total)",
        "router, switch and expert time in series (no overlap, no prefetch)",
        "nodes to hold N experts: whole experts packed into each node's expert cache (HBM after "
        "its own router and KV cache) or into its DDR/host memory",
        "GPU launch overheads, SRAM and all RDU assumptions: as in the target files",
    ]
    return lines
