"""Pictures of a schedule: a roofline, tier occupancy over time, the kernel graph.

``coec report SCHEDULE.json --plot DIR`` writes ``roofline.png/.svg``,
``tiers.png`` and ``kernels.dot`` (and ``kernels.svg`` when Graphviz's ``dot``
is installed).
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import networkx as nx

from coec.backend.schedule import write_files_atomic
from coec.backend.target import Target


def _figure_bytes(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110)
    return buf.getvalue()


def roofline(report: dict, target: Target):
    """Kernels at FLOP per off-chip byte vs attained FLOP/s, under the target's ceilings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak = target.compute.peak_matmul_flops
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs, ys = [], []
    for k in report["per_kernel"]:
        moved = sum(n for pair, n in k["bytes"].items() if "hbm" in pair or "ddr" in pair)
        if k["flops"] and moved and k["seconds"]:
            xs.append(k["flops"] / moved)
            ys.append(k["flops"] / k["seconds"])
    lo, hi = min(xs + [0.1]) / 2, max(xs + [1e4]) * 2
    grid = [lo * (hi / lo) ** (i / 100) for i in range(101)]
    for tier, style in (("hbm", "-"), ("ddr", "--")):
        bw = target.memory[tier].bandwidth_Bps
        ax.plot(
            grid,
            [min(peak, bw * x) for x in grid],
            style,
            label=f"{tier.upper()} {bw / 1e9:g} GB/s",
        )
    ax.axhline(peak, color="k", lw=0.8, label=f"peak {peak / 1e12:.0f} TFLOP/s")
    ax.scatter(xs, ys, s=14, color="tab:red", zorder=3, label="kernels")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per HBM/DDR byte)")
    ax.set_ylabel("attained FLOP/s (modeled)")
    ax.set_title(f"roofline on {target.name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def tiers(schedule: dict, report: dict):
    """Bytes resident in HBM and DDR (buffers' live ranges) and SRAM per kernel, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kernels = report["per_kernel"]
    starts, t = [], 0.0
    for k in kernels:
        starts.append(t)
        t += k["seconds"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for tier in ("hbm", "ddr"):
        resident = [
            sum(
                b["bytes"]
                for b in schedule["buffers"].values()
                if b["tier"] == tier and "alias_of" not in b and b["live"][0] <= i <= b["live"][1]
            )
            for i in range(len(kernels))
        ]
        ax.step(
            [s * 1e6 for s in starts], [r / 1e6 for r in resident], where="post", label=tier.upper()
        )
    ax.step(
        [s * 1e6 for s in starts],
        [k["sram_bytes"] / 1e6 for k in kernels],
        where="post",
        label="SRAM",
    )
    ax.set_xlabel("time (µs, modeled)")
    ax.set_ylabel("resident MB")
    ax.set_title("tier occupancy over time")
    ax.legend()
    fig.tight_layout()
    return fig


def kernel_graph(schedule: dict, report: dict) -> nx.DiGraph:
    """Kernels as nodes; an edge where a buffer one kernel stores another kernel loads."""
    g = nx.DiGraph()
    writer: dict[str, str] = {}
    for k, r in zip(schedule["kernels"], report["per_kernel"], strict=True):
        g.add_node(
            k["name"],
            ops=",".join(r["ops"][:4]) + ("…" if len(r["ops"]) > 4 else ""),
            us=r["seconds"] * 1e6,
        )
        for d in k["loads"]:
            src = writer.get(d["buffer"])
            if src and src != k["name"]:
                g.add_edge(src, k["name"], buffer=d["buffer"])
        for d in k["stores"]:
            writer[d["buffer"]] = k["name"]
    return g


def to_dot(g: nx.DiGraph) -> str:
    lines = ["digraph kernels {", "  node [shape=box, fontsize=10];"]
    for n, a in g.nodes(data=True):
        lines.append(f'  "{n}" [label="{n}\\n{a["ops"]}\\n{a["us"]:.2f} µs"];')
    for u, v, a in g.edges(data=True):
        lines.append(f'  "{u}" -> "{v}" [label="{a["buffer"]}", fontsize=8];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_plots(out: Path, schedule: dict, report: dict, target: Target) -> list[str]:
    """Write every picture into ``out``; returns notes on what was written or skipped."""
    import matplotlib.pyplot as plt

    files: dict[Path, bytes | str] = {}
    fig = roofline(report, target)
    files[out / "roofline.png"] = _figure_bytes(fig, "png")
    files[out / "roofline.svg"] = _figure_bytes(fig, "svg")
    plt.close(fig)
    fig = tiers(schedule, report)
    files[out / "tiers.png"] = _figure_bytes(fig, "png")
    plt.close(fig)
    dot = to_dot(kernel_graph(schedule, report))
    files[out / "kernels.dot"] = dot
    notes = []
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, check=False)
        if svg.returncode == 0:
            files[out / "kernels.svg"] = svg.stdout
    else:
        notes.append("Graphviz 'dot' not found: kernels.dot written, not rendered")
    write_files_atomic(files)
    return [f"wrote {p}" for p in sorted(files)] + notes
