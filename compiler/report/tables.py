"""What the CLI's commands print, rendered from their results: rich tables and text lines.

Each function takes a command's result (plain dicts and dataclasses, as the commands
return them) and gives back what to print, in order: a list of rich renderables (a
``Table`` or a string, which rich prints with its markup). The CLI prints them;
nothing here computes a figure. The compile/run report itself is in ``text.py``.
"""

from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table

Rendered = list[RenderableType]


def _table(columns: tuple[str, ...], left: tuple[str, ...] = (), **kwargs) -> Table:
    table = Table(**kwargs)
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right")
    return table


# -- coec run ---------------------------------------------------------------------------------
def run_outputs(outputs: dict) -> Rendered:
    """One line per output of an executed schedule: its shape, mean and largest magnitude."""
    return [
        f"output {name}: shape {tuple(arr.shape)}  mean {float(arr.mean()):.6g}  "
        f"max|x| {float(abs(arr).max()):.6g}"
        for name, arr in outputs.items()
    ]


# -- coec zoo / coec targets ---------------------------------------------------------------
def zoo_rows(archs) -> list[dict]:
    """The zoo's models as JSON rows (``coec zoo --json``)."""
    return [
        {
            "name": a.name,
            "params": a.params(),
            "layers": a.layers,
            "hidden": a.hidden,
            "heads": a.heads,
            "kv_heads": a.kv_heads,
            "ffn": a.ffn,
            "vocab": a.vocab,
            "source": a.source,
        }
        for a in archs
    ]


def zoo_lines(archs) -> list[str]:
    return [
        f"{a.name:<14} {a.params() / 1e9:7.1f} B params  layers {a.layers:>3}  hidden {a.hidden:>5}  "
        f"heads {a.heads}/{a.kv_heads} kv  ffn {a.ffn}  vocab {a.vocab}  ({a.source})"
        for a in archs
    ]


def target_rows(targets) -> list[dict]:
    """The built-in targets as JSON rows (``coec targets --json``)."""
    return [
        {
            "name": t.name,
            "description": t.description,
            "sockets": t.sockets,
            "fusion_policies": list(t.fusion_policies),
            "launch": t.launch.mode,
        }
        for t in targets
    ]


def target_lines(targets) -> list[str]:
    return [f"{t.name}: {t.description}" for t in targets]


# -- coec bench fusion ------------------------------------------------------------------------
def bench_fusion(
    rows: list[dict], sweep: list[dict], first, assumptions: list[str], sweeps=None
) -> Rendered:
    """The fusion benchmark's table (each row with the term bounding most of its time, and
    the unpublished constants that term rests on), its sweeps and its assumptions."""
    table = _table(
        (
            "model",
            "phase",
            "seq",
            "sockets",
            "config",
            "kernels",
            "time",
            "speedup",
            "step",
            "launches÷",
            "GFLOP",
            "HBM GB",
            "HBM BW used",
            "bound by",
            "rests on unpublished",
        ),
        left=("model", "phase", "config", "step", "bound by", "rests on unpublished"),
        title="SN40L fusion benchmark (modeled, count-only)",
    )
    for r in rows:
        table.add_row(
            r["model"],
            r["phase"],
            str(r["seq"]),
            str(r["sockets"]),
            r["config"],
            f"{r['kernels']:,}",
            f"{r['seconds'] * 1e3:.3f} ms",
            f"{r['speedup']:.2f}x",
            "" if r["step"] == "baseline" else f"{r['step']} {r['step_speedup']:.2f}x",
            f"{r['launch_ratio']:.1f}",
            f"{r['flops'] / 1e9:,.2f}",
            f"{r['hbm_bytes'] / 1e9:.2f}",
            f"{r['hbm_bw_fraction']:.0%}",
            f"{r['bound']} {r['bound_share']:.0%}",
            # the keys' last parts (results.json has them whole)
            ", ".join(k.rsplit(".", 1)[-1] for k in r["unpublished"].split(", ") if k) or "-",
        )
    out: Rendered = [table]
    if sweep:
        out.append(
            "launch-overhead sweep ("
            + f"{first.name} {first.phase}): "
            + ", ".join(f"{s['software_launch_us']:g} µs → {s['speedup']:.2f}x" for s in sweep)
        )
    for key, pts in (sweeps or {}).items():
        out.append(
            f"{key} sweep ({first.name} {first.phase}, fused+HO time, speedup over unfused): "
            + ", ".join(
                f"{s['value']:g} → {s['seconds'] * 1e3:.3f} ms, {s['speedup']:.2f}x" for s in pts
            )
        )
    return out + _assumptions(assumptions)


def _assumptions(lines: list[str]) -> Rendered:
    return ["assumptions:", *(f"  - {line}" for line in lines)]


def pareto(front: list[dict], objectives: tuple[str, str], names: list[str]) -> Rendered:
    """A sweep's Pareto front: its points' objectives (in people's units) and swept values."""
    from coec.sweep.spec import AXES

    rest = [n for n in names if n not in objectives]
    heads = tuple(AXES.get(o, (o, 1))[0] for o in objectives)
    table = _table(
        (*heads, *rest), left=tuple(rest), title=f"Pareto front of {' and '.join(objectives)}"
    )
    for r in front:
        cells = [f"{r[o] * AXES.get(o, (o, 1))[1]:.4g}" for o in objectives]
        table.add_row(*cells, *(str(r[n]) for n in rest))
    return [table]


def written(paths) -> Rendered:
    return [f"wrote {path}" for path in paths]


# -- coec bench coe ---------------------------------------------------------------------------
def bench_coe(
    experts: int, rows: list[dict], ratios: list[dict], feet: list[dict], assumptions: list[str]
) -> Rendered:
    """The CoE benchmark: per-system table, SN40L-vs-DGX ratios, footprints, assumptions."""
    table = _table(
        (
            "system",
            "launch",
            "copy reading",
            "batch",
            "tokens",
            "one switch",
            "experts/batch",
            "cold",
            "router",
            "switch",
            "expert",
            "steady",
            "hit rate",
            "HBM slots",
        ),
        left=("system", "launch", "copy reading"),
        title=f"CoE serving: {experts} llama2-7b experts per node (modeled, per request; "
        "router/switch/expert/steady: steady state; cold: from an empty HBM)",
    )
    for r in rows:
        table.add_row(
            r["system"],
            r["launch"],
            r["copy_reading"] + ("" if r.get("topology", "target file") == "target file" else "*"),
            str(r["batch"]),
            str(r["tokens"]),
            f"{r['switch_s'] * 1e3:.1f} ms",
            f"{r['experts_per_batch']:.2f}",
            f"{r['cold_per_request_s'] * 1e3:.1f} ms",
            f"{r['router_per_request_s'] * 1e3:.2f} ms",
            f"{r['switch_per_request_s'] * 1e3:.1f} ms",
            f"{r['expert_per_request_s'] * 1e3:.1f} ms",
            f"{r['per_request_s'] * 1e3:.1f} ms",
            f"{r['hit_rate']:.0%}",
            str(r["hbm_expert_slots"]),
        )
    filled = [r["cache_full_at_request"] for r in rows if r["cache_full_at_request"] is not None]
    out: Rendered = [
        table,
        "* a bound on the copy path, not the target file's topology",
        *(
            [f"steady state: every expert cache was full by request {max(filled)}"]
            if filled
            else []
        ),
        "SN40L node against each DGX node (ratio > 1: SN40L faster):",
    ]
    for r in ratios:
        out.append(
            f"  vs {r['vs']} ({r['copy_reading']}), batch {r['batch']}, {r['tokens']} tokens: "
            f"switching {r['switch_ratio']:.1f}x, expert-only {r['expert_speedup']:.2f}x, "
            f"steady {r['overall_speedup']:.2f}x, cold {r['cold_speedup']:.2f}x"
        )
    by_system = {f["system"]: f for f in feet}
    sn = by_system.get("sn40l-node")
    for f in by_system.values():
        out.append(
            f"  {f['experts']} experts on {f['system']}: {f['nodes_all_in_ddr']} node(s) hold them "
            f"in DDR/host memory, {f['nodes_all_in_hbm']} keep them all resident in HBM"
        )
    if sn:
        for f in by_system.values():
            if f["system"] != "sn40l-node":
                out.append(
                    f"  footprint: {f['system']} nodes in HBM / SN40L nodes in DDR = "
                    f"{f['nodes_all_in_hbm']} / {sn['nodes_all_in_ddr']} = "
                    f"{f['nodes_all_in_hbm'] / sn['nodes_all_in_ddr']:.1f}x"
                )
    return out + _assumptions(assumptions)


# -- coec coe ---------------------------------------------------------------------------------
def bench_coe_load(
    rows: list[dict], plan: list[dict], compared: list[dict], assumptions: list[str]
) -> Rendered:
    """The load sweep: per system and rate, the percentiles and rates (Poisson; the bursty
    run's p99 TTFT beside), the capacity plan, and copy modes and cache policies compared."""
    bursty = {(r["system"], r["rate_rps"]): r for r in rows if r["cv"] != 1.0}
    table = _table(
        (
            "system",
            "offered",
            "throughput",
            "goodput",
            "p50",
            "p99",
            "p99 TTFT",
            "p99 TPOT",
            "p99 TTFT bursty",
            "hit rate",
            "HBM",
            "busy",
        ),
        left=("system",),
        title="CoE serving under load (modeled; Poisson arrivals; p50/p99: end to end)",
    )
    for r in rows:
        if r["cv"] != 1.0:
            continue
        b = bursty.get((r["system"], r["rate_rps"]))
        table.add_row(
            r["system"],
            f"{r['rate_rps']:g}/s",
            _per_s(r["throughput_rps"]),
            _per_s(r["goodput_rps"]),
            _ms(r["latency_p50_s"]),
            _ms(r["latency_p99_s"]),
            _ms(r["ttft_p99_s"]),
            _ms(r["tpot_p99_s"]),
            _ms(b["ttft_p99_s"]) if b else "-",
            "-" if r["hit_rate"] is None else f"{r['hit_rate']:.0%}",
            f"{r['hbm_mean_share']:.0%}",
            f"{r['compute_utilization']:.0%}",
        )
    out: Rendered = [table, "capacity planning:"]
    for p in plan:
        if not p["max_rps_per_node"]:
            out.append(f"  {p['system']}: not even the lowest rate meets the SLO")
            continue
        out.append(
            f"  {p['system']}: {p['max_rps_per_node']:.2f} req/s a node within the SLO -> "
            f"{p['nodes']} nodes for {p['demand_rps']:g} req/s (each at {p['share_rps']:.2f}/s: "
            f"p99 TTFT {_ms(p['share_ttft_p99_s'])}, p99 TPOT {_ms(p['share_tpot_p99_s'])}"
            f"{'' if p['share_meets_slo'] else ', MISSES the SLO'})"
        )
    if compared:
        table = _table(
            ("system", "expert copies", "policy", "p50", "p99", "p99 TTFT", "hit rate", "copies"),
            left=("system", "expert copies", "policy"),
            title=f"copies and cache policies at {compared[0]['rate_rps']:g} req/s (Poisson; "
            "hit: the expert resident when its turn came; copies: experts copied in)",
        )
        for r in compared:
            table.add_row(
                r["system"],
                r["copies"],
                r["policy"],
                _ms(r["latency_p50_s"]),
                _ms(r["latency_p99_s"]),
                _ms(r["ttft_p99_s"]),
                f"{r['hit_rate']:.0%}",
                f"{r['expert_copies']} / {r['requests']}",
            )
        out.append(table)
    return out + _assumptions(assumptions)


def coe_placement(coe, node, profiles: dict, plan: dict) -> Rendered:
    """``coec coe compile``: the architectures compiled, the HBM/DDR placement, the footprint.

    ``plan`` is the placement's JSON (``Placement.to_json()``).
    """
    out: Rendered = [
        f"{coe.name}: {len(coe.experts)} experts, {len(profiles)} distinct architecture(s) "
        f"compiled once each, on {node.name} ({node.sockets} sockets, fusion {node.fusion})"
    ]
    table = _table(("architecture", "weights GB", "prefill", "decode step"))
    for zoo, p in profiles.items():
        table.add_row(
            zoo,
            f"{p.weight_bytes / 1e9:.3f}",
            f"{p.prefill_s * 1e3:.3f} ms",
            f"{p.decode_step_s * 1e6:.1f} µs",
        )
    out.append(table)
    out.append(
        f"HBM {plan['hbm_bytes'] / 1e9:.1f} GB: router {plan['router_bytes'] / 1e9:.3f} GB, "
        f"KV cache {plan['kv_cache_bytes'] / 1e9:.3f} GB, expert cache "
        f"{plan['expert_cache_bytes'] / 1e9:.1f} GB; DDR {plan['ddr_bytes'] / 1e9:.0f} GB holds "
        f"all experts ({plan['experts_in_ddr_bytes'] / 1e9:.2f} GB); switching: {plan['copy_path']}"
    )
    in_hbm = plan["nodes_all_experts_in_hbm"]
    out.append(
        f"footprint: 1 {node.name} node holds all {len(coe.experts)} experts in DDR; "
        + (
            f"keeping all of them resident in HBM (no switching) would take {in_hbm} node(s)"
            if in_hbm
            else "no number of nodes keeps them all resident in HBM"
        )
    )
    return out


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f} ms"


def _per_s(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2f}/s"


def coe_serve_arrivals(report: dict, target: str, max_rows: int = 12) -> Rendered:
    """``coec coe serve`` with arrivals: the first requests, the latency distributions, the
    rates, the cache and HBM, the assumptions."""
    a, m = report["arrivals"], report["metrics"]
    came = (
        "a trace's arrival times"
        if a["source"] == "trace"
        else f"{a['source']} arrivals at {a['rate_rps']:g}/s (cv {a['cv']:g}, seed {a['seed']})"
    )
    title = (
        f"{report['coe']} on {target}: {came}; batch {report['batch']}, {report['policy']}, "
        f"prefetch {report['prefetch']}, {'overlap' if report['overlap'] else 'no overlap'}"
    )
    rows = _table(
        ("request", "expert", "arrival", "hit", "queue", "TTFT", "TPOT", "latency"),
        left=("expert",),
        title=title,
    )
    for r in report["requests"][:max_rows]:
        rows.add_row(
            str(r["request"]),
            r["expert"],
            f"{r['arrival_s']:.3f} s",
            "yes" if r["hit"] else "no",
            _ms(r["queue_s"]),
            _ms(r["ttft_s"]),
            _ms(r["tpot_s"]),
            _ms(r["latency_s"]),
        )
    dist = _table(
        ("", "p50", "p90", "p99", "mean", "max"),
        left=("",),
        title=f"{m['requests']} requests measured (the first {m['warmup']} left out)",
    )
    for key, name in (
        ("ttft_s", "time to first token"),
        ("tpot_s", "time per output token"),
        ("latency_s", "end to end"),
        ("queue_s", "queue wait"),
    ):
        d = m[key]
        dist.add_row(name, *(_ms(d[q]) for q in ("p50", "p90", "p99", "mean", "max")))
    slo, hbm = m["slo"], m["hbm"]
    hit = "-" if m["hit_rate"] is None else f"{m['hit_rate']:.0%}"
    return [
        rows,
        dist,
        f"offered {_per_s(m['offered_rps'])}, throughput {_per_s(m['throughput_rps'])}, "
        f"goodput {_per_s(m['goodput_rps'])} (TTFT <= {slo['ttft_s']:g} s and TPOT <= "
        f"{slo['tpot_s']:g} s: {m['slo_attainment']:.0%} of requests); compute busy "
        f"{m['compute_utilization']:.0%}",
        f"experts: {m['turns']} turns, cache hit rate {hit} ({m['hits']}/{m['turns']}), "
        f"{m['copies']} copies; HBM held by experts: mean {hbm['mean_bytes'] / 1e9:.1f} GB "
        f"({hbm['mean_share']:.0%} of the expert cache), peak {hbm['peak_bytes'] / 1e9:.1f} GB",
        *(f"  - {x}" for x in report["assumptions"]),
    ]


def coe_serve(report: dict, target: str, max_rows: int = 20) -> Rendered:
    """``coec coe serve``: the first requests, the totals and the assumptions."""
    if report["format"] != "coec.coe-serve/1":
        return coe_serve_arrivals(report, target)
    table = _table(
        ("request", "expert", "hit", "router", "switch", "expert time", "latency"),
        title=f"{report['coe']} on {target}: batch {report['batch']}, {report['tokens']} tokens, "
        f"{report['policy']}",
    )
    for r in report["requests"][:max_rows]:
        table.add_row(
            str(r["request"]),
            r["expert"],
            "yes" if r["hit"] else "no",
            f"{r['router_s'] * 1e3:.3f} ms",
            f"{r['switch_s'] * 1e3:.3f} ms",
            f"{r['expert_s'] * 1e3:.3f} ms",
            f"{r['latency_s'] * 1e3:.3f} ms",
        )
    t = report["totals"]
    return [
        table,
        f"totals: {t['requests']} requests in {t['total_s'] * 1e3:.2f} ms "
        f"(router {t['router_s'] * 1e3:.2f}, switch {t['switch_s'] * 1e3:.2f}, "
        f"experts {t['expert_s'] * 1e3:.2f}); throughput {t['throughput_rps']:.1f} req/s; "
        f"mean latency {t['mean_latency_s'] * 1e3:.3f} ms; cache hit rate {t['hit_rate']:.0%} "
        f"({t['cache_hits']}/{t['expert_activations']})",
        *(f"  - {a}" for a in report["assumptions"]),
    ]


def route_lines(rows: list[dict]) -> list[str]:
    """``coec coe route``: category, probability and prompt, one line each."""
    return [f"{r['category']:<12} {r['p']:.2f}  {r['prompt']}" for r in rows]


def router_eval(result: dict, model: dict) -> list[str]:
    """``coec coe router-eval``: the encoder, the held-out accuracy, per category, confusions."""
    lines = [
        f"router: {model['model']} ({model['dim']}-d, {model['layers']} layers) "
        f"+ softmax-regression head over {len(result['categories'])} categories",
        f"held-out accuracy {result['accuracy']:.1%} "
        f"({round(result['accuracy'] * result['n_test'])}/{result['n_test']}; "
        f"trained on {result['n_train']})",
    ]
    for category, accuracy in result["per_category"].items():
        lines.append(f"  {category:<12} {accuracy:.1%}")
    for c in result["confusions"]:
        lines.append(f"  confused: {c['category']} -> {c['predicted']} x{c['count']}")
    return lines


def router_cost(rows: list[dict], target: str, seq: int, dtype: str) -> Rendered:
    """``coec coe router-cost``: one row per batch size (fusion: the one the rows used)."""
    fusion = rows[0]["fusion"] if rows else "?"
    table = _table(
        ("batch", "kernels", "time", "GFLOP", "HBM→SRAM MB", "SRAM→HBM MB"),
        title=f"router encoder on {target} (fusion {fusion}, {dtype}, seq {seq})",
    )
    for r in rows:
        table.add_row(
            str(r["batch"]),
            str(r["kernels"]),
            f"{r['seconds'] * 1e6:.1f} µs",
            f"{r['flops'] / 1e9:.2f}",
            f"{r['bytes'].get('hbm->sram', 0) / 1e6:.2f}",
            f"{r['bytes'].get('sram->hbm', 0) / 1e6:.2f}",
        )
    return [table]
