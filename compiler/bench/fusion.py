"""``coec bench fusion``: the SN40L paper's fusion experiment (its Table III set), modeled.

Each benchmark is compiled count-only (meta device, no weights) and run four ways,
each one change from the row before it:

- *unfused*: the paper's baseline, every op a kernel, host-launched;
- *fused*: dataflow fusion, host-launched (the change: fusion);
- *fused+HO (same kernels)*: the fused schedule, its kernels unchanged, launched by
  the chip (hardware orchestration, the change: launch alone);
- *fused+HO (re-split)*: compiled for hardware launch, so the fusion's cost model,
  seeing cheap launches, may split the partition differently (the change: re-split).

The modeled times, launches, FLOPs and HBM traffic are compared; ``speedup`` is over
unfused, ``step_speedup`` over the row before (fusion, launch, re-split).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from coec.backend.cost import tier_bytes
from coec.backend.schedule import Schedule, TargetSection, as_schedule, write_files_atomic
from coec.backend.target import Target, load_target
from coec.bench.common import csv_text
from coec.pipeline import Options, compile_program
from coec.runtime.executor import Executor


@dataclass(frozen=True)
class Config:
    """One way to run a benchmark: a fusion policy and a launch mode.

    ``recost`` names an earlier configuration whose schedule (its partition into kernels)
    is kept and only re-costed with this launch mode; None: compiled for it.
    """

    label: str
    fusion: str
    launch: str
    step: str  # what changes from the configuration before
    recost: str | None = None


CONFIGS = (
    Config("unfused", "none", "software", "baseline"),
    Config("fused", "dataflow", "software", "fusion"),
    Config("fused+HO (same kernels)", "dataflow", "hardware", "HO launch", recost="fused"),
    Config("fused+HO (re-split)", "dataflow", "hardware", "re-split"),
)


@dataclass(frozen=True)
class Bench:
    name: str
    phase: str
    seq: int
    target: str = "sn40l-node"


#: the FFT convolution's channels (streamed: the convolution runs channel by channel)
FFTCONV_CHANNELS = 32

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


def compile_bench(
    bench: Bench, target: Target, fusion: str, batch: int = 1, layers: int | None = None
) -> Schedule:
    """One benchmark compiled count-only (meta device): its schedule."""
    options = Options(target=target, fusion=fusion)
    if bench.name == "fftconv":
        from coec.models.fftconv import MonarchFFTConv

        with torch.device("meta"):
            model = MonarchFFTConv(FFTCONV_CHANNELS, bench.seq).eval()
            x = torch.empty(batch, FFTCONV_CHANNELS, bench.seq)
        schedule = compile_program(model, (x,), options).schedule
    else:
        from coec.models.zoo import instantiate
        from coec.regional import compile_zoo

        inst = instantiate(bench.name, bench.phase, bench.seq, batch, layers, device="meta")
        schedule = compile_zoo(inst, options).schedule
    return as_schedule(schedule)


def relaunch(schedule: Schedule, target: Target) -> Schedule:
    """The same kernels (partition, tiles, placement) costed on ``target``: its launch.

    The runtime costs every kernel with the schedule's target, so this changes only
    what a launch costs; the kernels' estimates (the backend's) are left as compiled.
    """
    return replace(
        schedule,
        target=TargetSection.of(target),
        options=replace(schedule.options, launch=target.launch.mode),
    )


#: the target keys each bound's time rests on (besides the kernel's own work and bytes)
BOUND_KEYS = {
    "launch": ("launch.{mode}_us",),
    "p2p": ("network.p2p_bandwidth_GBps", "network.p2p_latency_us"),
    "fill": ("launch.fill_cycles_per_stage", "launch.tile_cycles_per_stage"),
    "hbm": ("memory.hbm.bandwidth_GBps", "memory.hbm.efficiency", "memory.hbm.latency_us"),
    "ddr": ("memory.ddr.bandwidth_GBps", "memory.ddr.efficiency", "memory.ddr.latency_us"),
    "compute": (
        "compute.clock_GHz",
        "compute.matmul_flop_per_cycle_per_pcu",
        "compute.matmul_tile_rows",
        "compute.matmul_tile_cols",
    ),
}


def bound_by(report: dict) -> tuple[str, float]:
    """The term that bounds most of a run's time, and the share of the time it bounds."""
    time: dict[str, int] = {}
    for k in report["per_kernel"]:
        time[k["bound"]] = time.get(k["bound"], 0) + k["cycles"]
    bound = max(sorted(time), key=lambda b: time[b]) if time else "launch"
    return bound, time.get(bound, 0) / max(1, report["cycles"])


def unpublished(target: Target, bound: str) -> list[str]:
    """The target keys ``bound`` rests on whose source is an assumption (not published)."""
    keys = [k.format(mode=target.launch.mode) for k in BOUND_KEYS.get(bound, ())]
    return [k for k in keys if target.sources.get(k, "assumption").startswith("assumption")]


def count(schedule: Schedule, target: Target | None = None) -> dict:
    """What a schedule costs when run count-only; with the ``target`` it was compiled for,
    the term bounding most of its time and the unpublished constants that term rests on."""
    _, report = Executor(schedule, count_only=True).run()
    hbm = tier_bytes(report["bytes"], "hbm")
    bound, share = bound_by(report)
    return {
        "kernels": report["kernels"],
        "seconds": report["seconds"],
        "flops": report["flops"],
        "hbm_bytes": hbm,
        "p2p_bytes": report["bytes"].get("sram->p2p", 0),
        "hbm_bw_fraction": hbm / report["seconds"] / schedule.target.memory.hbm.bandwidth_Bps,
        "bound": bound,
        "bound_share": share,
        "unpublished": ", ".join(unpublished(target, bound)) if target else "",
    }


def bench_fusion(
    benches=TABLE_III, batch: int = 1, layers: int | None = None, progress=None
) -> list[dict]:
    """Rows of (benchmark, configuration) results; ``progress(step)`` after each one."""
    rows = []
    for bench in benches:
        base = load_target(bench.target)
        schedules: dict[str, Schedule] = {}
        results: dict[str, dict] = {}
        for c in CONFIGS:
            target = base.with_launch(c.launch)
            if c.recost:
                schedules[c.label] = relaunch(schedules[c.recost], target)
            else:
                schedules[c.label] = compile_bench(bench, target, c.fusion, batch, layers)
            results[c.label] = count(schedules[c.label], target)
            if progress:
                progress(f"{bench.name} {bench.phase} {c.label}")
        unfused, before = results[CONFIGS[0].label], None
        for c in CONFIGS:
            r = results[c.label]
            rows.append(
                {
                    "model": bench.name,
                    "phase": bench.phase,
                    "seq": bench.seq,
                    "sockets": base.sockets,
                    "config": c.label,
                    **r,
                    "speedup": unfused["seconds"] / r["seconds"],
                    "step": c.step,
                    "step_speedup": before["seconds"] / r["seconds"] if before else 1.0,
                    "launch_ratio": unfused["kernels"] / r["kernels"],
                }
            )
            before = r
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
        unfused = count(compile_bench(bench, target, "none", 1, layers))
        if progress:
            progress(f"launch sweep {us:g} µs unfused")
        fused = count(compile_bench(bench, target, "dataflow", 1, layers))
        if progress:
            progress(f"launch sweep {us:g} µs fused")
        rows.append({"software_launch_us": us, "speedup": unfused["seconds"] / fused["seconds"]})
    return rows


@dataclass(frozen=True)
class Sweep:
    """One unpublished (or assumed) target constant, varied: ``key`` as the target file
    names it, the ``values`` tried (in the key's unit), and how a value makes a target."""

    key: str
    label: str
    values: tuple[float, ...]
    apply: Callable[[Target, float], Target]


def _network(field: str, scale: float) -> Callable[[Target, float], Target]:
    return lambda t, v: replace(t, network=replace(t.network, **{field: v * scale}))


def _launch(field: str, scale: float = 1.0) -> Callable[[Target, float], Target]:
    def apply(t: Target, v: float) -> Target:
        value = int(v) if field.endswith("cycles_per_stage") else v * scale
        return replace(t, launch=replace(t.launch, **{field: value}))

    return apply


def _hbm(field: str, scale: float = 1.0) -> Callable[[Target, float], Target]:
    def apply(t: Target, v: float) -> Target:
        memory = {**t.memory, "hbm": replace(t.memory["hbm"], **{field: v * scale})}
        return replace(t, memory=memory)

    return apply


#: the sensitivity sweeps beyond launch overhead: each the SN40L's value and around it
SWEEPS = (
    Sweep(
        "network.p2p_latency_us",
        "P2P latency per ring step (µs)",
        (0, 0.6, 2, 5),
        _network("p2p_latency_s", 1e-6),
    ),
    Sweep(
        "network.p2p_bandwidth_GBps",
        "P2P bandwidth per socket (GB/s)",
        (25, 50, 100, 200, 400),
        _network("p2p_bandwidth_Bps", 1e9),
    ),
    Sweep(
        "launch.hardware_us",
        "hardware-orchestrated launch (µs)",
        (0.25, 0.5, 1, 2, 5),
        _launch("hardware_s", 1e-6),
    ),
    Sweep(
        "memory.hbm.efficiency",
        "achievable fraction of HBM bandwidth",
        (0.6, 0.7, 0.84, 0.95, 1.0),
        _hbm("efficiency"),
    ),
    Sweep(
        "memory.hbm.latency_us",
        "HBM latency per kernel (µs)",
        (0, 0.2, 0.4, 1, 2),
        _hbm("latency_s", 1e-6),
    ),
    Sweep(
        "launch.fill_cycles_per_stage",
        "pipeline fill cycles per stage",
        (0, 32, 64, 128, 256),
        _launch("fill_cycles_per_stage"),
    ),
)


def assumption_sweep(bench: Bench, sweep: Sweep, layers=None, progress=None) -> list[dict]:
    """Fused+HO time, and its speedup over unfused, as one target constant varies (each
    value compiled afresh, so fusion may partition differently). ``progress(step)`` after
    each compile."""
    rows = []
    for v in sweep.values:
        target = sweep.apply(load_target(bench.target), v)
        unfused = count(compile_bench(bench, target.with_launch("software"), "none", 1, layers))
        if progress:
            progress(f"{sweep.key} {v:g} unfused")
        fused = count(compile_bench(bench, target.with_launch("hardware"), "dataflow", 1, layers))
        if progress:
            progress(f"{sweep.key} {v:g} fused+HO")
        rows.append(
            {
                "value": v,
                "seconds": fused["seconds"],
                "kernels": fused["kernels"],
                "speedup": unfused["seconds"] / fused["seconds"],
            }
        )
    return rows


def assumption_sweeps(bench: Bench, sweeps=SWEEPS, layers=None, progress=None) -> dict:
    """Every sweep of ``sweeps`` on ``bench``: key -> its rows."""
    return {sw.key: assumption_sweep(bench, sw, layers, progress) for sw in sweeps}


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
        f"fftconv: FlashFFTConv-style Monarch FFT convolution, {FFTCONV_CHANNELS} channels, "
        "filter spectrum precomputed, one socket",
        "fused+HO (same kernels): the fused schedule re-costed with hardware launch; "
        "(re-split): compiled for hardware launch, so fusion may partition differently",
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
    rows: list[dict], sweep: list[dict], out: Path, sweeps: dict = None
) -> list[Path]:
    """results.csv, results.json, speedups.png, launch_sweep.png and, with ``sweeps``,
    sweeps.png (one panel per swept constant) — written atomically."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[Path, bytes | str] = {}
    files[out / "results.csv"] = csv_text(rows)
    configs = [asdict(c) for c in CONFIGS]
    files[out / "results.json"] = json.dumps(
        {
            "configs": configs,
            "rows": rows,
            "launch_sweep": sweep,
            "sweeps": sweeps or {},
        },
        indent=1,
    )

    names = list(dict.fromkeys(f"{r['model']}\n{r['phase']}" for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.9), 4))
    labels = [c.label for c in CONFIGS[1:]]
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        vals = [r["speedup"] for r in rows if r["config"] == label]
        offset = (i - (len(labels) - 1) / 2) * width
        ax.bar([x + offset for x in range(len(names))], vals, width, label=label)
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
    if sweeps:
        labels = {sw.key: sw.label for sw in SWEEPS}
        fig, axes = plt.subplots(1, len(sweeps), figsize=(3.2 * len(sweeps), 3.2), squeeze=False)
        for ax, (key, pts) in zip(axes[0], sweeps.items(), strict=True):
            ax.plot([p["value"] for p in pts], [p["seconds"] * 1e3 for p in pts], "o-")
            ax.set_xlabel(labels.get(key, key), fontsize=8)
            ax.set_ylabel("fused+HO time (ms)", fontsize=8)
            ax.set_title(key, fontsize=8)
            ax.set_ylim(bottom=0)
        fig.suptitle("sensitivity to unpublished constants (fused+HO, modeled)")
        files[out / "sweeps.png"] = _png(fig)
    write_files_atomic(files)
    return list(files)
