"""Pictures of a schedule: a roofline, tier occupancy over time, the kernel graph.

``coec report SCHEDULE.json --plot DIR`` writes ``roofline.png/.svg``,
``tiers.png`` and ``kernels.dot`` (and ``kernels.svg/.png`` when Graphviz's
``dot`` is installed), and a short text summary. Every figure comes from the
schedule and the runtime's report of it, never from a second cost model.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from coec.backend.schedule import resident_bytes, write_files_atomic
from coec.backend.target import Target

TIERS = ("sram", "hbm", "ddr")
BOUND_COLORS = {
    "compute": "tab:red",
    "hbm": "tab:blue",
    "ddr": "tab:orange",
    "p2p": "tab:purple",
    "launch": "tab:gray",
    "fill": "tab:brown",
}
KIND_COLORS = {
    "weight": "tab:green",
    "activation": "tab:blue",
    "input": "tab:orange",
    "output": "tab:red",
    "kernel working set": "tab:purple",
}
#: above this many kernels drawn (repeats drawn once) Graphviz is not asked for an SVG
#: (a PNG: MAX_PNG_KERNELS)
MAX_RENDERED_KERNELS = 1000
#: a PNG of a larger graph is too big to look at (dot scales it down to fit cairo)
MAX_PNG_KERNELS = 200
#: name the kernels on a roofline of up to this many points
MAX_LABELLED_POINTS = 16


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "coec"  # stable SVG ids: same schedule, same file
    import matplotlib.pyplot as plt

    return plt


def _figure_bytes(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    # no creation date in the metadata: the same schedule gives the same files
    metadata = {"Date": None} if fmt == "svg" else {}
    fig.savefig(buf, format=fmt, dpi=110, metadata=metadata)
    return buf.getvalue()


def offchip_bytes(pairs: dict[str, int]) -> int:
    """Bytes of the transfers that read or write HBM or DDR, each transfer once."""
    return sum(n for pair, n in pairs.items() if {"hbm", "ddr"} & set(pair.split("->")))


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _unit(n: float) -> tuple[float, str]:
    """A divisor and its name for bytes up to ``n``."""
    for scale, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if n >= scale:
            return scale, unit
    return 1.0, "B"


@dataclass(frozen=True)
class RooflinePoint:
    kernel: str
    intensity: float  # FLOP per HBM/DDR byte
    flops_per_s: float
    bound: str


def roofline_points(report: dict) -> tuple[list[RooflinePoint], list[str]]:
    """Kernels with FLOPs and off-chip bytes as points; the names of the others."""
    points, skipped = [], []
    for k in report["per_kernel"]:
        moved = offchip_bytes(k["bytes"])
        if not (k["flops"] and moved and k["seconds"]):
            skipped.append(k["name"])
            continue
        points.append(
            RooflinePoint(k["name"], k["flops"] / moved, k["flops"] / k["seconds"], k["bound"])
        )
    return points, skipped


def roofline(report: dict, target: Target, title: str = ""):
    """Kernels at FLOP per off-chip byte vs attained FLOP/s, under the target's ceilings."""
    plt = _pyplot()
    c = target.compute
    matmul_peak = c.peak_matmul_flops
    vector_peak = c.pcus * c.vector_flop_per_cycle_per_pcu * c.clock_hz
    points, skipped = roofline_points(report)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    xs = [p.intensity for p in points]
    lo = min([*xs, 1.0]) / 4
    hi = max([*xs, 2 * matmul_peak / target.memory["ddr"].bandwidth_Bps]) * 4
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    for tier, style in (("hbm", "-"), ("ddr", "--")):
        bw = target.memory[tier].bandwidth_Bps
        ax.plot(
            grid,
            [min(matmul_peak, bw * x) for x in grid],
            style,
            color=BOUND_COLORS[tier],
            lw=1.2,
            label=f"{tier.upper()} ceiling, {bw / 1e9:g} GB/s",
        )
    ax.axhline(matmul_peak, color="k", lw=1, label=f"matmul peak {matmul_peak / 1e12:.0f} TFLOP/s")
    ax.axhline(
        vector_peak,
        color="k",
        lw=0.8,
        ls=":",
        label=f"vector peak {vector_peak / 1e12:.0f} TFLOP/s",
    )
    for bound in BOUND_COLORS:
        mine = [p for p in points if p.bound == bound]
        if mine:
            ax.scatter(
                [p.intensity for p in mine],
                [p.flops_per_s for p in mine],
                s=22,
                color=BOUND_COLORS[bound],
                edgecolors="k",
                linewidths=0.4,
                zorder=3,
                label=f"kernels, {bound}-bound ({len(mine)})",
            )
    distinct: dict[tuple[float, float], list[str]] = {}
    for p in points:
        distinct.setdefault((p.intensity, p.flops_per_s), []).append(p.kernel)
    if len(points) <= MAX_LABELLED_POINTS:
        for (x, y), names in distinct.items():
            text = ", ".join(names)
            ax.annotate(text, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("arithmetic intensity (FLOP per HBM+DDR byte)")
    per_socket = " per socket" if target.sockets > 1 else ""
    ax.set_ylabel(f"attained FLOP/s{per_socket} (modeled)")
    ax.set_title(title or f"roofline on {target.name}", fontsize=10)
    if skipped:
        ax.text(
            0.01,
            0.01,
            f"{_count(len(skipped), 'kernel')} without FLOPs or off-chip bytes not shown",
            transform=ax.transAxes,
            fontsize=7,
            color="0.4",
        )
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, which="major", lw=0.3, color="0.85")
    fig.tight_layout()
    return fig


def kernel_edges_us(report: dict) -> list[float]:
    """Start of every kernel and end of the last, in µs (kernels run back to back)."""
    edges, t = [0.0], 0
    us_per_cycle = report["seconds"] * 1e6 / report["cycles"] if report["cycles"] else 0.0
    for k in report["per_kernel"]:
        t += k["cycles"]
        edges.append(t * us_per_cycle)
    return edges


def occupancy(schedule: dict, report: dict) -> dict[str, dict[str, list[int]]]:
    """Bytes resident per tier and buffer kind while each kernel runs.

    HBM and DDR from the buffers' live ranges; SRAM from what the runtime
    measured each kernel holding at its peak.
    """
    out: dict[str, dict[str, list[int]]] = {tier: {} for tier in TIERS}
    for (tier, kind), series in resident_bytes(schedule).items():
        out.setdefault(tier, {})[kind] = series[1:]  # entry 0 is before the first kernel
    out["sram"] = {"kernel working set": [k["sram_bytes"] for k in report["per_kernel"]]}
    return out


def tiers(schedule: dict, report: dict, target: Target, title: str = ""):
    """Resident bytes in SRAM, HBM and DDR over time, one panel per tier, stacked by kind."""
    plt = _pyplot()
    edges = kernel_edges_us(report)
    scale_t, unit_t = (1e3, "ms") if edges[-1] >= 1e4 else (1.0, "µs")
    edges = [e / scale_t for e in edges]
    resident = occupancy(schedule, report)
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 6.5), sharex=True)
    for ax, tier in zip(axes, TIERS, strict=True):
        kinds = resident[tier]
        totals = [sum(v) for v in zip(*kinds.values(), strict=True)] if kinds else []
        peak = max(totals, default=0)
        scale, unit = _unit(peak)
        base = [0.0] * (len(edges) - 1)
        for kind, series in kinds.items():
            top = [b + x / scale for b, x in zip(base, series, strict=True)]
            if edges[1:]:
                color = KIND_COLORS.get(kind)
                ax.stairs(top, edges, baseline=base, fill=True, alpha=0.75, color=color, label=kind)
            base = top
        capacity = target.memory[tier].capacity_bytes
        ax.set_ylabel(f"{tier.upper()} ({unit})" if peak else tier.upper())
        ax.set_title(
            f"{tier.upper()}: peak {human_bytes(peak)} of {human_bytes(capacity)}"
            + (" (unused)" if not peak else ""),
            fontsize=9,
            loc="left",
        )
        if peak:
            ax.set_ylim(0, peak / scale * 1.15)
            ax.legend(fontsize=7, loc="upper right")
        else:
            ax.set_yticks([])
            ax.text(0.5, 0.5, "nothing resident", transform=ax.transAxes, ha="center", color="0.4")
    axes[-1].set_xlabel(f"time ({unit_t}, modeled; kernels back to back)")
    if edges[-1] > 0:
        axes[-1].set_xlim(0, edges[-1])
    fig.suptitle(title or "tier occupancy over time", fontsize=10)
    fig.tight_layout()
    return fig


def _root(buffers: dict, name: str) -> str:
    while "alias_of" in buffers[name]:
        name = buffers[name]["alias_of"]
    return name


def kernel_graph(schedule: dict, report: dict) -> nx.DiGraph:
    """Kernels as nodes; an edge where buffers one kernel stores another kernel loads.

    Each model input and output is a node of its own (``in:NAME``, ``out:NAME``),
    next to the kernels that use it: one node for all of them would tie every
    layer to it and make the graph slow to lay out. Weights are left out (each
    layer has its own: they would drown the graph). An edge carries the names
    and bytes of every buffer that flows along it.
    """
    buffers = schedule["buffers"]
    g = nx.DiGraph()
    writer: dict[str, str] = {}
    for name, b in buffers.items():
        if b["kind"] == "input" and "alias_of" not in b:
            writer[name] = f"in:{name}"

    def flow(src: str, dst: str, buffer: str) -> None:
        if src == dst:
            return
        for node in (src, dst):
            if node not in g and ":" in node:
                g.add_node(node, kind="io", bytes=buffers[buffer]["bytes"])
        if not g.has_edge(src, dst):
            g.add_edge(src, dst, buffers=[], bytes=0)
        edge = g.edges[src, dst]
        if buffer not in edge["buffers"]:
            edge["buffers"].append(buffer)
            edge["bytes"] += buffers[buffer]["bytes"]

    for k, r in zip(schedule["kernels"], report["per_kernel"], strict=True):
        g.add_node(
            k["name"],
            kind="kernel",
            ops=list(r["ops"]),
            flops=r["flops"],
            offchip_bytes=offchip_bytes(r["bytes"]),
            us=r["seconds"] * 1e6,
            bound=r["bound"],
        )
        for d in k["loads"]:
            root = _root(buffers, d["buffer"])
            if root in writer:
                flow(writer[root], k["name"], root)
        for d in k["stores"]:
            writer[_root(buffers, d["buffer"])] = k["name"]
    for out in schedule["outputs"]:
        root = _root(buffers, out)
        if root in writer:
            flow(writer[root], f"out:{root}", root)
    return g


#: the longest repeated block (in kernels) ``repeated_runs`` looks for
MAX_REPEAT_PERIOD = 256


def repeated_runs(signatures: list) -> list[tuple[int, int, int]]:
    """Runs of a repeated block in a sequence: ``(start, period, repeats)``, repeats ≥ 2.

    Left to right, at each place the block (up to ``MAX_REPEAT_PERIOD`` long) repeated
    back to back over the most items, the shortest such block on a tie; a place no
    block repeats from is passed by. Decoder layers made of identical kernels are the
    runs this is for: ``[embed, L, L, L, head]`` gives ``[(1, 1, 3)]``.
    """
    n, runs, i = len(signatures), [], 0
    while i < n:
        best = (0, 0, 0)  # (covered, period, repeats)
        for period in range(1, min(MAX_REPEAT_PERIOD, (n - i) // 2) + 1):
            block = signatures[i : i + period]
            reps = 1
            while signatures[i + reps * period : i + (reps + 1) * period] == block:
                reps += 1
            if reps >= 2 and reps * period > best[0]:
                best = (reps * period, period, reps)
        if best[0]:
            runs.append((i, best[1], best[2]))
            i += best[0]
        else:
            i += 1
    return runs


def collapse_repeats(g: nx.DiGraph) -> nx.DiGraph:
    """``g`` with each run of repeated kernels (the same ops, FLOPs and off-chip bytes,
    kernel after kernel, as the layers of a model are) drawn once: the first repeat's kernels stand for every repeat
    (attribute ``repeats``), the others' edges are folded onto them (an edge from one
    repeat to the next becomes an edge from the block's end back to its start, attribute
    ``loop``), and model inputs and outputs only the other repeats use are left out.
    Attribute ``runs`` of the graph lists ``(first kernel, period, repeats)``."""
    kernels = [n for n, a in g.nodes(data=True) if a["kind"] == "kernel"]
    signature = ("ops", "flops", "offchip_bytes")  # alike: the same ops on the same sizes
    runs = repeated_runs([tuple(str(g.nodes[k][key]) for key in signature) for k in kernels])
    home = {k: k for k in g}  # node -> the node that stands for it
    repeats: dict[str, int] = {}
    for start, period, reps in runs:
        for j in range(start, start + period * reps):
            rep = kernels[start + (j - start) % period]
            home[kernels[j]] = rep
            repeats[rep] = reps
    for n, a in g.nodes(data=True):  # io nodes only copies use go with their copies
        if a["kind"] == "io" and all(home[m] != m for m in nx.all_neighbors(g, n)):
            home[n] = None
    order = {k: i for i, k in enumerate(kernels)}
    c = nx.DiGraph(runs=[(kernels[s], p, r) for s, p, r in runs])
    for n, a in g.nodes(data=True):
        if home[n] == n:
            c.add_node(n, **a, repeats=repeats.get(n, 1))
    for u, v, a in g.edges(data=True):
        hu, hv = home[u], home[v]
        if hu is None or hv is None or c.has_edge(hu, hv):
            continue  # a copy's edge: the first repeat's stands for it
        loop = (hu, hv) != (u, v) and g.nodes[u]["kind"] == g.nodes[v]["kind"] == "kernel"
        c.add_edge(hu, hv, **a, loop=loop and order[hv] <= order[hu])
    return c


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _ops_text(ops: list[str]) -> str:
    head = ",".join(ops[:4])
    return head + (f",… ({len(ops)} ops)" if len(ops) > 4 else "")


def to_dot(g: nx.DiGraph) -> str:
    """Graphviz DOT text of a kernel graph (written directly: no pydot needed)."""
    lines = [
        "digraph kernels {",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontsize=10];',
        "  edge [fontsize=8];",
    ]
    for n, a in g.nodes(data=True):
        if a["kind"] == "io":
            label = f"{n}\n{human_bytes(a['bytes'])}"
            lines.append(
                f"  {_quote(n)} [label={_quote(label)}, shape=ellipse, fillcolor=lightgrey];"
            )
            continue
        times = f" ×{a['repeats']}" if a.get("repeats", 1) > 1 else ""
        label = (
            f"{n}{times}\n{_ops_text(a['ops'])}\n{a['flops']:,} FLOP, "
            f"{human_bytes(a['offchip_bytes'])} off-chip\n{a['us']:.2f} µs, {a['bound']}-bound"
        )
        color = BOUND_COLORS.get(a["bound"], "black").removeprefix("tab:")
        lines.append(f"  {_quote(n)} [label={_quote(label)}, color={_quote(color)}];")
    for u, v, a in g.edges(data=True):
        if g.nodes[u]["kind"] == "io" or g.nodes[v]["kind"] == "io":
            lines.append(f"  {_quote(u)} -> {_quote(v)};")  # the io node names its buffer
            continue
        names = a["buffers"]
        shown = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
        label = f"{shown}\n{human_bytes(a['bytes'])}"
        if a.get("loop"):  # one repeat's output feeding the next
            label = f"next repeat: {label}"
            lines.append(
                f"  {_quote(u)} -> {_quote(v)} [label={_quote(label)}, style=dashed, "
                "constraint=false];"
            )
            continue
        lines.append(f"  {_quote(u)} -> {_quote(v)} [label={_quote(label)}];")
    kernels = [n for n, a in g.nodes(data=True) if a["kind"] == "kernel"]
    for i, (first, period, reps) in enumerate(g.graph.get("runs", [])):
        start = kernels.index(first)
        members = kernels[start : start + period]
        lines.append(f"  subgraph cluster_{i} {{")
        label = f"×{reps}: {_count(period, 'kernel')}, repeated"
        lines.append(f"    label={_quote(label)};")
        lines.append('    style="dashed";')
        lines += [f"    {_quote(n)};" for n in members]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_dot(dot: str, fmt: str, timeout_s: float = 60.0) -> tuple[bytes | None, str]:
    """``dot -T<fmt>`` of ``dot``; (output, "") or (None, why it was not rendered)."""
    exe = shutil.which("dot")
    if exe is None:
        return None, "Graphviz 'dot' not found: kernels.dot written, not rendered"
    try:
        done = subprocess.run(
            [exe, f"-T{fmt}"], input=dot.encode(), capture_output=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return None, f"Graphviz 'dot' took over {timeout_s:g} s: kernels.{fmt} not rendered"
    if done.returncode != 0:
        why = (done.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[0]
        return None, f"Graphviz 'dot' failed ({why}): kernels.{fmt} not rendered"
    return done.stdout, ""


def describe(schedule: dict, name: str = "") -> str:
    """A one-line title for a schedule's pictures: model (or ``name``), phase, fusion, target."""
    o = schedule.get("options", {})
    t = schedule["target"]
    parts = [o.get("model", name), o.get("phase", ""), f"fusion {o.get('fusion', '?')}"]
    where = t["name"] + (f" ×{t['sockets']} sockets" if t.get("sockets", 1) > 1 else "")
    return "  ".join(p for p in parts if p) + f"  on {where}"


def _rate(x: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _share(x: float) -> str:
    """A fraction as a percentage that does not round small shares to 0%."""
    return f"{x:.0%}" if x >= 0.1 or x == 0 else f"{x * 100:.2g}%"


def summary(schedule: dict, report: dict, target: Target, name: str = "") -> list[str]:
    """A few lines people read: time, what bounds the kernels, where the time goes."""
    kernels = report["per_kernel"]
    seconds = report["seconds"]
    lines = [
        f"{describe(schedule, name)}: {_count(report['kernels'], 'kernel')}, {seconds * 1e6:,.1f} µs modeled"
        + (" per socket" if target.sockets > 1 else "")
    ]
    if seconds:
        flops = report["flops"] / seconds
        hbm = sum(n for p, n in report["bytes"].items() if "hbm" in p.split("->")) / seconds
        lines.append(
            f"  attained {_rate(flops, 'FLOP/s')} "
            f"({_share(flops / target.compute.peak_matmul_flops)} of matmul peak), "
            f"HBM {_rate(hbm, 'B/s')} ({_share(hbm / target.memory['hbm'].bandwidth_Bps)} "
            "of its bandwidth)"
        )
    bounds = Counter(k["bound"] for k in kernels)
    time_by_bound = Counter()
    for k in kernels:
        time_by_bound[k["bound"]] += k["seconds"]
    lines.append(
        "  bound by: "
        + ", ".join(
            f"{b} {_count(n, 'kernel')} {_share(time_by_bound[b] / seconds)} of time"
            for b, n in bounds.most_common()
        )
        if seconds
        else "  no kernels"
    )
    launch = sum(k.get("launch_cycles", 0) for k in kernels)
    if report["cycles"]:
        lines.append(f"  launch overhead {_share(launch / report['cycles'])} of time")
    top = sorted(kernels, key=lambda k: -k["seconds"])[:3]
    for k in top:
        lines.append(
            f"  {k['name']}: {k['seconds'] * 1e6:,.2f} µs ({_share(k['seconds'] / seconds)}), "
            f"{_ops_text(list(k['ops']))}, {k['bound']}-bound"
        )
    peak = report.get("peak_bytes", {})
    lines.append(
        "  peak resident: "
        + ", ".join(
            f"{t.upper()} {human_bytes(peak.get(t, 0))} of "
            f"{human_bytes(target.memory[t].capacity_bytes)}"
            for t in TIERS
        )
    )
    return lines


def write_plots(
    out: Path, schedule: dict, report: dict, target: Target, name: str = ""
) -> list[str]:
    """Write every picture into ``out`` atomically; returns what was written or skipped."""
    plt = _pyplot()
    title = describe(schedule, name)
    files: dict[Path, bytes | str] = {}
    fig = roofline(report, target, f"roofline: {title}")
    files[out / "roofline.png"] = _figure_bytes(fig, "png")
    files[out / "roofline.svg"] = _figure_bytes(fig, "svg")
    plt.close(fig)
    fig = tiers(schedule, report, target, f"tier occupancy: {title}")
    files[out / "tiers.png"] = _figure_bytes(fig, "png")
    plt.close(fig)
    graph = collapse_repeats(kernel_graph(schedule, report))
    dot = to_dot(graph)
    files[out / "kernels.dot"] = dot
    notes = []
    drawn = sum(1 for _, a in graph.nodes(data=True) if a["kind"] == "kernel")
    for fmt, most in (("svg", MAX_RENDERED_KERNELS), ("png", MAX_PNG_KERNELS)):
        if drawn > most:
            notes.append(f"{drawn} kernels drawn (over {most}): kernels.{fmt} not rendered")
            continue
        data, why = render_dot(dot, fmt)
        if data is None:
            notes.append(why)
            break
        files[out / f"kernels.{fmt}"] = data
    write_files_atomic(files)
    return [f"wrote {p}" for p in sorted(files)] + notes


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
