"""``coec bench fusion``: the SN40L paper's fusion experiment (its Table III set), modeled.

Each benchmark is compiled count-only (meta device, no weights) three ways — the
paper's *unfused* baseline (every op a kernel, host-launched), *fused* (dataflow
fusion, host-launched) and *fused+HO* (dataflow fusion, hardware-orchestrated
launch) — and the modeled times, launches and HBM traffic are compared.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from coec.backend.cost import tier_bytes
from coec.backend.schedule import write_files_atomic
from coec.backend.target import Target, load_target
from coec.pipeline import Options, compile_program
from coec.runtime.executor import Executor

CONFIGS = (
    ("unfused", "none", "software"),
    ("fused", "dataflow", "software"),
    ("fused+HO", "dataflow", "hardware"),
)


@dataclass(frozen=True)
class Bench:
    name: str
    phase: str
    seq: int
    target: str = "sn40l-node"


#: the paper's Table III inference set (sequence lengths as there), plus FlashFFTConv
TABLE_III = tuple(
    Bench(m, phase, seq)
    for m, seq in (
        ("llama2-7b", 4096),
        ("llama2-70b", 4096),
        ("mistral-7b", 4096),
        ("falcon-40b", 2048),
        ("bloom-176b", 8192),
    )
    for phase in ("prefill", "decode")
) + (Bench("fftconv", "conv", 1 << 20, "sn40l"),)


def _run(bench: Bench, target: Target, fusion: str, batch: int, layers: int | None) -> dict:
    options = Options(target=target, fusion=fusion)
    if bench.name == "fftconv":
        from coec.models.fftconv import MonarchFFTConv

        n1 = 1 << (bench.seq.bit_length() - 1) // 2
        with torch.device("meta"):
            model = MonarchFFTConv(32, n1, bench.seq // n1)
            x = torch.empty(batch, 32, bench.seq)
        schedule = compile_program(model, (x,), options).schedule
    else:
        from coec.models.zoo import instantiate
        from coec.regional import compile_zoo

        inst = instantiate(bench.name, bench.phase, bench.seq, batch, layers, device="meta")
        schedule = compile_zoo(inst, options).schedule
    _, report = Executor(schedule, count_only=True).run()
    hbm = tier_bytes(report["bytes"], "hbm")
    return {
        "kernels": report["kernels"],
        "seconds": report["seconds"],
        "hbm_bytes": hbm,
        "p2p_bytes": report["bytes"].get("sram->p2p", 0),
        "hbm_bw_fraction": hbm / report["seconds"] / target.memory["hbm"].bandwidth_Bps,
    }


def bench_fusion(
    benches=TABLE_III, batch: int = 1, layers: int | None = None, progress=None
) -> list[dict]:
    """Rows of (benchmark, configuration) results; ``progress(step)`` after each compile."""
    rows = []
    for bench in benches:
        base = load_target(bench.target)
        results = {}
        for label, fusion, launch in CONFIGS:
            results[label] = _run(bench, base.with_launch(launch), fusion, batch, layers)
            if progress:
                progress(f"{bench.name} {bench.phase} {label}")
        unfused = results["unfused"]
        for label, r in results.items():
            rows.append(
                {
                    "model": bench.name,
                    "phase": bench.phase,
                    "seq": bench.seq,
                    "sockets": base.sockets,
                    "config": label,
                    **r,
                    "speedup": unfused["seconds"] / r["seconds"],
                    "launch_ratio": unfused["kernels"] / r["kernels"],
                }
            )
    return rows


#: host launch overheads (µs per kernel) of the sensitivity sweep
SWEEP_US = (1, 2, 5, 10, 20, 50)


def launch_sweep(bench: Bench, overheads_us=SWEEP_US, layers=None, progress=None) -> list[dict]:
    """Fused vs unfused speedup as the host launch overhead varies (sensitivity).

    ``progress(step)`` after each of the two compiles per overhead.
    """
    rows = []
    for us in overheads_us:
        base = load_target(bench.target)
        target = replace(base, launch=replace(base.launch, software_s=us * 1e-6, mode="software"))
        unfused = _run(bench, target, "none", 1, layers)
        if progress:
            progress(f"launch sweep {us:g} µs unfused")
        fused = _run(bench, target, "dataflow", 1, layers)
        if progress:
            progress(f"launch sweep {us:g} µs fused")
        rows.append({"software_launch_us": us, "speedup": unfused["seconds"] / fused["seconds"]})
    return rows


#: per-step P2P latencies (µs) of the second sweep: the SN40L's is not published
P2P_SWEEP_US = (0, 0.6, 2, 5)


def p2p_latency_sweep(
    bench: Bench, latencies_us=P2P_SWEEP_US, layers=None, progress=None
) -> list[dict]:
    """Fused+HO time, and its speedup over unfused, as the P2P link's latency per ring step
    varies (sensitivity to an unpublished figure). ``progress(step)`` after each compile."""
    rows = []
    for us in latencies_us:
        base = load_target(bench.target)
        target = replace(base, network=replace(base.network, p2p_latency_s=us * 1e-6))
        unfused = _run(bench, target.with_launch("software"), "none", 1, layers)
        if progress:
            progress(f"P2P latency sweep {us:g} µs unfused")
        fused = _run(bench, target.with_launch("hardware"), "dataflow", 1, layers)
        if progress:
            progress(f"P2P latency sweep {us:g} µs fused+HO")
        rows.append(
            {
                "p2p_latency_us": us,
                "seconds": fused["seconds"],
                "speedup": unfused["seconds"] / fused["seconds"],
            }
        )
    return rows


def assumptions(target: Target) -> list[str]:
    la, net = target.launch, target.network
    return [
        f"launch: host-orchestrated {la.software_s * 1e6:g} µs, hardware-orchestrated "
        f"{la.hardware_s * 1e6:g} µs per kernel ({target.sources.get('launch.software_us', '')})",
        f"P2P link: {net.p2p_bandwidth_Bps / 1e9:g} GB/s per socket "
        f"({target.sources.get('network.p2p_bandwidth_GBps', '')}), "
        f"{net.p2p_latency_s * 1e6:g} µs per ring step "
        f"({target.sources.get('network.p2p_latency_us', '')})",
        f"pipeline: {la.fill_cycles_per_stage} fill cycles and {la.tile_cycles_per_stage} cycles "
        "of control per tile per stage (assumptions)",
        "LLMs: batch 1, tensor parallel over the node's sockets, bf16, count-only",
        "fftconv: Monarch FFT convolution, 32 channels, one socket",
    ]


def _png(fig) -> bytes:
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=120)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(
    rows: list[dict], sweep: list[dict], out: Path, p2p_sweep: list[dict] = ()
) -> list[Path]:
    """results.csv, results.json, speedups.png, launch_sweep.png — written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[Path, bytes | str] = {}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    files[out / "results.csv"] = buf.getvalue()
    files[out / "results.json"] = json.dumps(
        {"rows": rows, "launch_sweep": sweep, "p2p_latency_sweep": list(p2p_sweep)}, indent=1
    )

    names = list(dict.fromkeys(f"{r['model']}\n{r['phase']}" for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.9), 4))
    width = 0.38
    for i, label in enumerate(("fused", "fused+HO")):
        vals = [r["speedup"] for r in rows if r["config"] == label]
        ax.bar([x + (i - 0.5) * width for x in range(len(names))], vals, width, label=label)
    ax.set_xticks(range(len(names)), names, fontsize=7)
    ax.set_ylabel("speedup over unfused (modeled)")
    ax.axhline(1, color="grey", lw=0.8)
    ax.legend()
    ax.set_title("coec: SN40L fusion benchmark (Table III set)")
    files[out / "speedups.png"] = _png(fig)

    if sweep:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([s["software_launch_us"] for s in sweep], [s["speedup"] for s in sweep], "o-")
        ax.set_xscale("log")
        ax.set_xlabel("host launch overhead per kernel (µs)")
        ax.set_ylabel("fused speedup over unfused")
        ax.set_title("sensitivity to launch overhead")
        files[out / "launch_sweep.png"] = _png(fig)
    write_files_atomic(files)
    return list(files)
