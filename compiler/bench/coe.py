"""``coec bench coe``: the SN40L paper's CoE experiment, modeled.

150 Llama-2-7B-sized experts on one SN40L node (TP8, dataflow fusion) against
DGX A100 and DGX H100 nodes (TP8, epilogue fusion), batch 1 and 8, 20 and 200
output tokens. Each batch of BS prompts goes to one expert drawn uniformly from
the 150 (a CoE's traffic spread over its experts; the batch shares the expert,
so batch 8 amortizes a switch over 8 prompts); each system keeps what fits of
the experts in HBM (LRU) and copies the others in when asked (SN40L: from DDR;
DGX: from host memory over PCIe). Every figure is a modeled cost of coec's
compiled, count-only llama2-7b (prefill and decode) and MiniLM router.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from coec.backend.schedule import write_files_atomic
from coec.backend.target import load_target
from coec.bench.common import csv_text
from coec.coe.config import CoE, Expert, Serving
from coec.coe.profile import Node, nodes_to_hold, place, profile_expert, router_profile
from coec.coe.serve import simulate, synthetic_experts

SYSTEMS = ("sn40l-node", "dgx-a100", "dgx-h100")
EXPERT_ARCH = "llama2-7b"
PROMPT = 512
ROUTER_SEQ = 64
REQUESTS = 512
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


def traffic(names: list[str], batch: int, seed: int = 0) -> list[str]:
    """REQUESTS picks: one uniformly drawn expert per batch, shared by its BS prompts."""
    per_batch = synthetic_experts(names, REQUESTS // batch, 0.0, seed)
    return [name for name in per_batch for _ in range(batch)]


def run_config(system: str, n: int, batch: int, tokens: int, max_tokens: int, seed: int = 0):
    """One (system, experts, batch, tokens) point: per-request times, switch time, footprint."""
    node = Node.of(load_target(system))
    prof = profile_expert(EXPERT_ARCH, system, node.fusion, batch, PROMPT, max_tokens)
    router_s, router_bytes = router_profile(system, batch, ROUTER_SEQ)
    coe = _coe(n, batch, tokens)
    # experts beyond one node's DDR (host memory) need more nodes: serve from what one holds
    hold = min(n, node.ddr_bytes // prof.weight_bytes)
    plan = place(_coe(hold, batch, tokens), node, {EXPERT_ARCH: prof}, router_bytes)
    names = [e.name for e in coe.experts]
    served = simulate(
        traffic(names, batch, seed),
        batch=batch,
        router_s=router_s,
        expert_bytes=dict.fromkeys(names, prof.weight_bytes),
        expert_s=lambda _name, b: prof.seconds(b, tokens),
        copy_Bps=node.copy_Bps,
        cache_bytes=plan.cache_bytes,
    )
    t = served.totals()
    n_req = t["requests"]
    sizes = [prof.weight_bytes] * n
    return {
        "system": system,
        "experts": n,
        "batch": batch,
        "tokens": tokens,
        "expert_bytes": prof.weight_bytes,
        "copy_GBps": node.copy_Bps / 1e9,
        "hbm_expert_slots": plan.cache_bytes // prof.weight_bytes,
        "nodes_all_in_hbm": nodes_to_hold(sizes, plan.cache_bytes),
        "nodes_all_in_ddr": nodes_to_hold(sizes, node.ddr_bytes),
        "switch_s": prof.weight_bytes / node.copy_Bps,  # one expert's copy into HBM
        "router_per_request_s": t["router_s"] / n_req,
        "switch_per_request_s": t["switch_s"] / n_req,
        "expert_per_request_s": t["expert_s"] / n_req,
        "per_request_s": t["total_s"] / n_req,
        "hit_rate": t["hit_rate"],
        "total_s": t["total_s"],
    }


def bench_coe(experts: int = 150, sweep=SWEEP, progress=None):
    rows, curve = [], []
    configs = [(s, b, t) for s in SYSTEMS for b in (1, 8) for t in (20, 200)]
    for system, batch, tokens in configs:
        rows.append(run_config(system, experts, batch, tokens, 200))
        if progress:
            progress()
    for system in SYSTEMS:
        for n in sweep:
            curve.append(run_config(system, n, 1, 20, 200))
        if progress:
            progress()
    return rows, curve


def summary(rows: list[dict]) -> list[dict]:
    """SN40L against each DGX per (batch, tokens): switch, expert-only and overall speedups."""
    by = {(r["system"], r["batch"], r["tokens"]): r for r in rows}
    out = []
    for (system, batch, tokens), r in by.items():
        if system == "sn40l-node":
            continue
        sn = by[("sn40l-node", batch, tokens)]
        out.append(
            {
                "vs": system,
                "batch": batch,
                "tokens": tokens,
                "switch_ratio": r["switch_s"] / sn["switch_s"],
                # sensitivity, not the model: the node's copies sharing one PCIe link
                "switch_ratio_one_link": r["expert_bytes"]
                / load_target(system).host_copy_Bps
                / sn["switch_s"],
                "expert_speedup": r["expert_per_request_s"] / sn["expert_per_request_s"],
                "overall_speedup": r["per_request_s"] / sn["per_request_s"],
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
                "format": "coec.bench.fusion-coe/1",
                "assumptions": assumptions(),
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
        sel = [r for r in rows if (r["batch"], r["tokens"]) == (batch, tokens)]
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
        ax.set_title(f"batch {batch}, {tokens} tokens")
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
    ax.set_ylabel("ms per request (batch 1, 20 tokens)")
    ax.set_xscale("log")
    ax.legend()
    ax.set_title("latency vs number of experts (uniform traffic, LRU)")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    files[out / "experts_sweep.png"] = png.getvalue()
    write_files_atomic(files)
    return sorted(files)


def assumptions() -> list[str]:
    lines = []
    for s in SYSTEMS:
        node = Node.of(load_target(s))
        lines.append(
            f"{s}: expert copy {node.copy_path} = {node.copy_Bps / 1e9:g} GB/s; fusion {node.fusion}; HBM {node.hbm_bytes / 2**30:.0f} GiB, DDR/host {node.ddr_bytes / 2**40:.2f} TiB"
        )
    lines += [
        f"experts: {EXPERT_ARCH} (bf16, TP8 over the node's 8 sockets/GPUs: an expert's bytes are "
        "every socket's shard — layers Megatron-style, embedding and LM head split by "
        "vocabulary; norms and folded constants replicated, counted on each), prompt "
        f"{PROMPT} tokens, router MiniLM-L6 at seq {ROUTER_SEQ} on one socket",
        f"expert time: prefill of {PROMPT} tokens + one decode step per output token; decode "
        f"compiled at KV {PROMPT} and {PROMPT + 200} and interpolated linearly in between",
        f"traffic: {REQUESTS} requests, one expert per batch drawn uniformly (seed 0); LRU "
        "expert cache in the HBM left after router and KV cache; cold start (empty cache)",
        "router, switch and expert time in series (no overlap, no prefetch)",
        "nodes to hold N experts: whole experts packed into each node's expert cache (HBM after "
        "its own router and KV cache) or into its DDR/host memory",
        "GPU launch overheads, SRAM and all RDU assumptions: as in the target files",
    ]
    return lines
