"""``coec bench coe``'s load sweep: latency against offered load, and the nodes a demand takes.

The bench's llama2-7b experts (Zipf popularity, ``coec.bench.coe.SKEW``) on each
system's node, served as requests arrive (``coec.coe.des``): Poisson arrivals and
bursty ones (gamma gaps, cv 3) at each offered rate; prompts of 512 and answers of
200 tokens, each drawn uniformly within +-50%; batch 8 (the sequences the KV cache
holds); LRU with next-in-queue prefetch, copies beside compute. Each run serves
``REQUESTS`` requests and leaves the first ``WARMUP`` (the cold start) out of its
metrics; every run draws the same requests (seed 0), so systems and rates differ
only in what they are asked to do. Capacity: the highest Poisson rate one node
serves with p99 TTFT and p99 TPOT within the SLO (bisection), and the nodes a
demand takes, each node holding every expert and taking an even share.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

from coec.backend.schedule import write_files_atomic
from coec.backend.target import Target
from coec.bench.coe import EXPERT_ARCH, PROMPT, ROUTER_SEQ, SKEW, SYSTEMS, _coe, system_target
from coec.bench.common import csv_text
from coec.coe import des
from coec.coe.profile import Node, place, profile_expert, router_profile
from coec.coe.serve import synthetic_experts
from coec.coe.slo import SLO, max_rate, meets, metrics, nodes_for
from coec.coe.workload import arrival_times, output_lengths, prompt_lengths

FORMAT = "coec.bench.coe-load/1"
TOKENS = 200
SPREAD = 0.5
BATCH = 8
CVS = (1.0, 3.0)
RATES = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)
REQUESTS = 1500
WARMUP = 300
DEMAND_RPS = 100.0
#: the policies table: each copy mode and cache policy at this Poisson rate
POLICY_RPS = 2.0
MODES = (
    ("in series", False, "none"),
    ("beside compute, on demand", True, "none"),
    ("beside compute, prefetch next", True, "next"),
)
POLICIES = ("lru", "lfu", "belady")
#: the bisection's resolution: (highest rate - lowest) / 2**STEPS
STEPS = 7


def _span(mean: int) -> tuple[int, int]:
    """The lengths ``coec.coe.workload.lengths`` draws around ``mean`` with ``SPREAD``."""
    return round(mean * (1 - SPREAD)), round(mean * (1 + SPREAD))


@dataclass(frozen=True)
class System:
    """One system ready to serve at any rate: its costs, experts and serving options."""

    name: str
    costs: des.Costs
    experts: list[str]
    options: des.Options
    copy_GBps: float
    expert_slots: int  # experts the HBM expert cache holds


def prepare(target: Target, experts: int, prof=None, router=None) -> System:
    """``target``'s node serving ``experts`` llama2-7b experts: compiled (prefill at the
    shortest and longest prompt, decode over the whole context, batch 1 and BATCH) unless
    ``prof`` (an ExpertProfile) and ``router`` ((s at batch 1, s at BATCH), bytes) are given."""
    node = Node.of(target)
    shortest, longest = _span(PROMPT)
    context = longest + _span(TOKENS)[1]
    if prof is None:
        prof = profile_expert(
            EXPERT_ARCH,
            target.name,
            node.fusion,
            BATCH,
            shortest,
            context - shortest,
            launch=node.launch,
            prompt_long=longest,
        )
    if router is None:
        r1, _ = router_profile(target.name, 1, ROUTER_SEQ, launch=node.launch)
        rb, nbytes = router_profile(target.name, BATCH, ROUTER_SEQ, launch=node.launch)
        router = ((r1, rb), nbytes)
    (r1, rb), router_bytes = router
    coe = _coe(experts, BATCH, context - shortest)
    coe = replace(coe, serving=replace(coe.serving, prompt_tokens=shortest))
    hold = min(experts, node.ddr_bytes // prof.weight_bytes)  # as coec.bench.coe.run_config
    plan = place(_coe(hold, BATCH, context - shortest), node, {EXPERT_ARCH: prof}, router_bytes)
    names = [e.name for e in coe.experts]
    costs = des.Costs(
        router_s=lambda b: r1 + (rb - r1) * (b - 1) / (BATCH - 1),
        prefill_s=lambda _e, b, p: prof.prefill_at(b, p),
        decode_s=lambda _e, b, kv: prof.decode_at(b, kv),
        expert_bytes=dict.fromkeys(names, prof.weight_bytes),
        copy_Bps=dict.fromkeys(names, node.copy_Bps),
    )
    options = des.Options(plan.cache_bytes, BATCH, policy="lru", prefetch="next")
    slots = plan.cache_bytes // prof.weight_bytes
    return System(target.name, costs, names, options, node.copy_Bps / 1e9, slots)


def requests(names: list[str], rate: float, cv: float, skew: float, seed: int, n: int):
    """``n`` requests at ``rate`` (gap cv ``cv``) to Zipf(``skew``)-popular experts."""
    experts = synthetic_experts(names, n, skew, seed)
    times = arrival_times(n, rate, cv, seed)
    prompts = prompt_lengths(n, PROMPT, SPREAD, seed)
    outputs = output_lengths(n, TOKENS, SPREAD, seed)
    return [des.Request(i, times[i], experts[i], prompts[i], outputs[i]) for i in range(n)]


def point(
    system: System,
    rate: float,
    cv: float,
    slo: SLO,
    skew: float = SKEW,
    seed: int = 0,
    n: int = REQUESTS,
    warmup: int = WARMUP,
) -> dict:
    """The metrics of ``system`` at offered ``rate``."""
    run = des.simulate(
        requests(system.experts, rate, cv, skew, seed, n), system.costs, system.options
    )
    return metrics(run, slo, warmup)


def row(system: str, rate: float, cv: float, m: dict) -> dict:
    """A sweep point as a flat row (CSV): the figures people plan with."""
    return {
        "system": system,
        "rate_rps": rate,
        "cv": cv,
        "offered_rps": m["offered_rps"],
        "throughput_rps": m["throughput_rps"],
        "goodput_rps": m["goodput_rps"],
        "slo_attainment": m["slo_attainment"],
        **{f"ttft_{q}_s": m["ttft_s"][q] for q in ("p50", "p90", "p99")},
        **{f"tpot_{q}_s": m["tpot_s"][q] for q in ("p50", "p99")},
        **{f"latency_{q}_s": m["latency_s"][q] for q in ("p50", "p90", "p99")},
        "queue_p99_s": m["queue_s"]["p99"],
        "hit_rate": m["hit_rate"],
        "hbm_mean_share": m["hbm"]["mean_share"],
        "compute_utilization": m["compute_utilization"],
    }


def sweep(systems: list[System], rates, slo: SLO, skew: float = SKEW, progress=None):
    """Every system at every rate, Poisson and bursty."""
    rows = []
    for s in systems:
        for cv in CVS:
            for rate in rates:
                rows.append(row(s.name, rate, cv, point(s, rate, cv, slo, skew)))
        if progress:
            progress()
    return rows


def policies(
    systems: list[System],
    slo: SLO,
    rate: float = POLICY_RPS,
    skew: float = SKEW,
    n: int = REQUESTS,
    warmup: int = WARMUP,
):
    """Every system at ``rate`` (Poisson) with copies in series, beside compute on demand
    and with prefetch, under each cache policy: what overlap and the cache buy."""
    out = []
    for s in systems:
        for mode, overlap, prefetch in MODES:
            for policy in POLICIES:
                o = replace(s.options, overlap=overlap, prefetch=prefetch, policy=policy)
                m = point(replace(s, options=o), rate, 1.0, slo, skew, n=n, warmup=warmup)
                out.append(
                    {"system": s.name, "copies": mode, "policy": policy, "rate_rps": rate}
                    | {f"ttft_{q}_s": m["ttft_s"][q] for q in ("p50", "p99")}
                    | {f"latency_{q}_s": m["latency_s"][q] for q in ("p50", "p99")}
                    | {"hit_rate": m["hit_rate"], "expert_copies": m["copies"]}
                    | {"requests": m["requests"]}
                )
    return out


def capacity(systems: list[System], rates, slo: SLO, demand: float, skew: float = SKEW):
    """Per system: the highest Poisson rate a node serves within ``slo`` at p99, the nodes
    ``demand`` requests/s take, and the p99s one of those nodes sees at its share."""
    out = []
    for s in systems:
        best = max_rate(
            lambda r, s=s: point(s, r, 1.0, slo, skew), slo, min(rates), max(rates), STEPS
        )
        nodes = nodes_for(demand, best)
        share = point(s, demand / nodes, 1.0, slo, skew) if nodes else None
        out.append(
            {
                "system": s.name,
                "copy_GBps": s.copy_GBps,
                "hbm_expert_slots": s.expert_slots,
                "max_rps_per_node": best,
                "demand_rps": demand,
                "nodes": nodes,
                "share_rps": demand / nodes if nodes else None,
                "share_ttft_p99_s": share["ttft_s"]["p99"] if share else None,
                "share_tpot_p99_s": share["tpot_s"]["p99"] if share else None,
                "share_meets_slo": meets(share, slo) if share else None,
            }
        )
    return out


def plot(rows: list[dict], plan: list[dict], slo: SLO) -> bytes:
    """Left: end-to-end p50 (dashed) and p99 against offered load, Poisson; right: p99 TTFT,
    Poisson and bursty, against the SLO, each system's capacity marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(SYSTEMS, ("tab:red", "tab:blue", "tab:green"), strict=True))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    for system in dict.fromkeys(r["system"] for r in rows):
        c = colors.get(system)
        for cv in CVS:
            pts = [r for r in rows if r["system"] == system and r["cv"] == cv]
            x = [r["rate_rps"] for r in pts]
            if cv == 1.0:
                left.plot(
                    x, [r["latency_p99_s"] for r in pts], "o-", color=c, label=f"{system} p99"
                )
                left.plot(
                    x,
                    [r["latency_p50_s"] for r in pts],
                    "o--",
                    color=c,
                    alpha=0.6,
                    label=f"{system} p50",
                )
            style = "o-" if cv == 1.0 else "s:"
            label = f"{system} {'Poisson' if cv == 1.0 else f'bursty (cv {cv:g})'}"
            right.plot(x, [r["ttft_p99_s"] for r in pts], style, color=c, label=label)
        cap = next((p for p in plan if p["system"] == system), None)
        if cap and cap["max_rps_per_node"]:
            right.axvline(cap["max_rps_per_node"], color=c, alpha=0.3, lw=3)
    right.axhline(slo.ttft_s, color="black", lw=1, ls="--", label=f"SLO p99 TTFT {slo.ttft_s:g} s")
    for ax, what in ((left, "end-to-end latency (s)"), (right, "p99 time to first token (s)")):
        ax.set_xlabel("offered load (requests/s, one node)")
        ax.set_ylabel(what)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    left.set_title("latency vs load (Poisson arrivals)")
    right.set_title("p99 TTFT vs load; bands: the most a node serves within the SLO")
    lines = ", ".join(
        f"{p['system']} {p['max_rps_per_node']:.2f}/s -> {p['nodes']} nodes"
        for p in plan
        if p["max_rps_per_node"]
    )
    if plan:
        fig.suptitle(
            f"coec: {EXPERT_ARCH} experts served as they arrive (modeled). "
            f"{plan[0]['demand_rps']:g} req/s at p99 TTFT <= {slo.ttft_s:g} s, TPOT <= "
            f"{slo.tpot_s:g} s: {lines}",
            fontsize=9,
        )
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    return png.getvalue()


def write_outputs(
    out: Path,
    rows: list[dict],
    plan: list[dict],
    slo: SLO,
    experts: int,
    skew: float = SKEW,
    compared: list[dict] | None = None,
):
    """load.csv, load.json and load_sweep.png in ``out``, in one transaction."""
    files: dict[Path, bytes | str] = {
        out / "load.csv": csv_text(rows),
        out / "load.json": json.dumps(
            {
                "format": FORMAT,
                "assumptions": assumptions(experts, slo, skew),
                "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s},
                "sweep": rows,
                "capacity": plan,
                "policies": compared or [],
            },
            indent=1,
        )
        + "\n",
        out / "load_sweep.png": plot(rows, plan, slo),
    }
    write_files_atomic(files)
    return sorted(files)


def assumptions(experts: int, slo: SLO, skew: float = SKEW) -> list[str]:
    lo, hi = _span(PROMPT)
    olo, ohi = _span(TOKENS)
    return [
        f"{experts} {EXPERT_ARCH} experts per node (TP over all its sockets, one expert "
        "computing at a time: no expert runs on a subset of the sockets beside another), "
        f"Zipf({skew:g}) popularity, every system's node as in the table above",
        f"arrivals: Poisson, and gamma gaps with cv {CVS[1]:g} (bursty) at the same rate; "
        f"{REQUESTS} requests a run, the first {WARMUP} left out (cold start); seed 0 for all",
        f"prompts {lo}-{hi} tokens, answers {olo}-{ohi} (uniform); batch {BATCH}; LRU, "
        "next-in-queue prefetch, copies beside compute; router batches what has arrived",
        f"SLO: p99 TTFT <= {slo.ttft_s:g} s and p99 TPOT <= {slo.tpot_s:g} s (defaults: MLPerf "
        "Inference's Llama-2-70B server scenario)",
        f"capacity: the highest Poisson rate meeting the SLO, by bisection over "
        f"{min(RATES):g}-{max(RATES):g} req/s ({STEPS} halvings); nodes = ceil(demand / it), "
        "each node holding every expert and an even share of the traffic (a random split of "
        "Poisson arrivals is Poisson), checked by serving that share",
    ]


def bench_load(
    experts: int = 150,
    rates=RATES,
    slo: SLO | None = None,
    demand: float = DEMAND_RPS,
    skew: float = SKEW,
    progress=None,
):
    """The sweep, the capacity plan and the policies table for the SN40L node and the DGX
    A100 and H100."""
    slo = slo or SLO()
    systems = [prepare(system_target(s), experts) for s in SYSTEMS]
    rows = sweep(systems, rates, slo, skew, progress)
    return rows, capacity(systems, rates, slo, demand, skew), policies(systems, slo, skew=skew)
