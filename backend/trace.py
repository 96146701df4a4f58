"""A Chrome / Perfetto trace of an executed schedule (open it in ui.perfetto.dev).

One process per socket (SPMD: every socket runs the same kernels); one track per
resource: the PCU array (each kernel as a slice, its launch as a slice before
it), HBM, DDR and P2P (the time that tier is busy for the kernel, inside the
kernel's span). Times come from the runtime's per-kernel report, so the PCU
track's kernel slices add up to the report's total time.
"""

from __future__ import annotations

import json

TRACKS = ("PCU array", "HBM", "DDR", "P2P")
_TIER_OF = {"HBM": "hbm", "DDR": "ddr", "P2P": "p2p"}


def _tier_bytes(pairs: dict[str, int], tier: str) -> int:
    return sum(n for pair, n in pairs.items() if tier in pair.split("->"))


def trace_events(report: dict, sockets: int = 1, clock_hz: float | None = None) -> dict:
    """The trace-event JSON object (``traceEvents``, times in µs) of ``report``."""
    events: list[dict] = []
    for s in range(sockets):
        events.append(
            {"ph": "M", "name": "process_name", "pid": s, "tid": 0, "args": {"name": f"socket {s}"}}
        )
        for tid, track in enumerate(TRACKS):
            events.append(
                {"ph": "M", "name": "thread_name", "pid": s, "tid": tid, "args": {"name": track}}
            )
    t = 0.0
    for k in report.get("per_kernel", []):
        dur = k["seconds"] * 1e6
        per_cycle = dur / k["cycles"] if k["cycles"] else 0.0
        launch = k.get("launch_cycles", 0) * per_cycle
        args = {
            "ops": ",".join(k["ops"]),
            "flops": k["flops"],
            "bytes": k["bytes"],
            "bound": k.get("bound", ""),
            "sram_bytes": k.get("sram_bytes", 0),
        }
        for s in range(sockets):
            if launch:
                events.append(
                    {
                        "ph": "X",
                        "name": f"launch {k['name']}",
                        "cat": "launch",
                        "pid": s,
                        "tid": 0,
                        "ts": t,
                        "dur": launch,
                    }
                )
            events.append(
                {
                    "ph": "X",
                    "name": k["name"],
                    "cat": "kernel",
                    "pid": s,
                    "tid": 0,
                    "ts": t + launch,
                    "dur": dur - launch,
                    "args": args,
                }
            )
            for tid, track in enumerate(TRACKS[1:], start=1):
                tier = _TIER_OF[track]
                busy = min(k.get(f"{tier}_cycles", 0) * per_cycle, dur - launch)
                if busy > 0:
                    events.append(
                        {
                            "ph": "X",
                            "name": f"{k['name']} {tier}",
                            "cat": "dma",
                            "pid": s,
                            "tid": tid,
                            "ts": t + launch,
                            "dur": busy,
                            "args": {"bytes": _tier_bytes(k["bytes"], tier), "kernel": k["name"]},
                        }
                    )
        t += dur
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {"format": "coec.trace/1", "total_us": t},
    }


def write_trace(path, report: dict, sockets: int = 1) -> None:
    from pathlib import Path

    from coec.backend.schedule import write_files_atomic

    write_files_atomic({Path(path): json.dumps(trace_events(report, sockets)) + "\n"})
