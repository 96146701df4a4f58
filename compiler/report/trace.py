"""A Chrome / Perfetto trace of an executed schedule (open it in ui.perfetto.dev).

One process per socket (SPMD: every socket runs the same kernels, so each gets
the same slices); one track (thread) per resource: the PCU array (each kernel's
launch, then the kernel), and the HBM, DDR and P2P tiers (the time that tier is
busy moving the kernel's bytes, from the kernel's start after its launch). The
cost model runs a kernel's DMAs and compute overlapped, so a tier's busy time
lies inside the kernel's span; kernels run back to back, so no two slices of a
track overlap. Times come from the runtime's per-kernel report, in cycles turned
into microseconds, so the PCU track adds up to the report's total time.
"""

from __future__ import annotations

import json

from coec.backend.cost import tier_bytes

FORMAT = "coec.trace/1"
#: the tracks of every socket's process, by thread id
TRACKS = ("PCU array", "HBM", "DDR", "P2P")
_TIER_OF_TRACK = {"HBM": "hbm", "DDR": "ddr", "P2P": "p2p"}


def _metadata(sockets: int, label: str) -> list[dict]:
    events = []
    for pid in range(sockets):
        name = f"socket {pid}" + (f" ({label})" if label else "")
        events += [
            {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}},
            {
                "ph": "M",
                "name": "process_sort_index",
                "pid": pid,
                "tid": 0,
                "args": {"sort_index": pid},
            },
        ]
        for tid, track in enumerate(TRACKS):
            events += [
                {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": track}},
                {
                    "ph": "M",
                    "name": "thread_sort_index",
                    "pid": pid,
                    "tid": tid,
                    "args": {"sort_index": tid},
                },
            ]
    return events


def _kernel_slices(k: dict, start_cycle: int, us_per_cycle: float) -> list[dict]:
    """One kernel's slices on one socket (pid filled in by the caller)."""
    launch = k.get("launch_cycles", 0)
    ts = start_cycle * us_per_cycle
    body_ts = (start_cycle + launch) * us_per_cycle
    end = (start_cycle + k["cycles"]) * us_per_cycle
    slices = []
    if launch:
        slices.append(
            {
                "name": f"launch {k['name']}",
                "cat": "launch",
                "tid": 0,
                "ts": ts,
                "dur": body_ts - ts,
            }
        )
    cycles = {
        key: k[key]
        for key in ("cycles", "launch_cycles", "compute_cycles", "hbm_cycles", "ddr_cycles")
        + ("p2p_cycles", "fill_cycles")
        if key in k
    }
    slices.append(
        {
            "name": k["name"],
            "cat": "kernel",
            "tid": 0,
            "ts": body_ts,
            "dur": end - body_ts,
            "args": {
                "ops": list(k["ops"]),
                "flops": k["flops"],
                "bytes": dict(k["bytes"]),
                "bound": k.get("bound", ""),
                "sram_bytes": k.get("sram_bytes", 0),
                "pmus": k.get("pmus", 0),
                **cycles,
            },
        }
    )
    for tid, track in enumerate(TRACKS[1:], start=1):
        tier = _TIER_OF_TRACK[track]
        busy = min(k.get(f"{tier}_cycles", 0), k["cycles"] - launch)
        if busy <= 0:
            continue
        pairs = {p: n for p, n in k["bytes"].items() if tier in p.split("->")}
        slices.append(
            {
                "name": f"{k['name']} {track}",
                "cat": "dma",
                "tid": tid,
                "ts": body_ts,
                "dur": (start_cycle + launch + busy) * us_per_cycle - body_ts,
                "args": {"kernel": k["name"], "bytes": tier_bytes(pairs, tier), "pairs": pairs},
            }
        )
    return slices


def trace_events(report: dict, sockets: int = 1, label: str = "") -> dict:
    """The trace-event JSON object of ``report`` (``traceEvents``; times in µs).

    ``report`` is the runtime's report (its ``per_kernel`` list); ``sockets`` the
    schedule's socket count (one process each); ``label`` names the processes.
    """
    events = _metadata(sockets, label)
    # one clock for the whole schedule: start times are whole cycles, so they do not drift
    us_per_cycle = report["seconds"] * 1e6 / report["cycles"] if report.get("cycles") else 0.0
    cycle = 0
    for k in report.get("per_kernel", []):
        slices = _kernel_slices(k, cycle, us_per_cycle)
        for pid in range(sockets):
            events += [{"ph": "X", "pid": pid, **s} for s in slices]
        cycle += k["cycles"]
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {
            "format": FORMAT,
            "sockets": sockets,
            "kernels": report.get("kernels", 0),
            "total_us": report.get("seconds", 0.0) * 1e6,
        },
    }


def trace_text(report: dict, sockets: int = 1, label: str = "") -> str:
    """``report``'s trace as the JSON text a trace file holds."""
    return json.dumps(trace_events(report, sockets, label), separators=(",", ":")) + "\n"


def schedule_trace(report: dict, schedule: dict) -> str:
    """The trace of a run of ``schedule`` (a process per socket)."""
    target = schedule["target"]
    return trace_text(report, target["sockets"], target["name"])
