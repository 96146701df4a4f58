"""A Chrome / Perfetto trace of an executed schedule (open it in ui.perfetto.dev).

One process per socket. A schedule is SPMD (every socket runs the same kernels on its
own shard), and the runtime reports one socket's counts, so by default every socket's
process shows the same slices; given each socket's report (``socket_reports``), each
process shows its own. The tracks (threads) of a process, by thread id:

- ``PCU array``: each kernel's launch, then the kernel;
- ``HBM``, ``DDR``, ``P2P``: the time the tier is busy moving the kernel's bytes, from
  the kernel's start after its launch (DMAs and compute overlap, so a tier's busy time
  lies inside the kernel's span);
- ``stage 0`` … ``stage N-1`` (N: the most stages of any kernel): the inside of a
  dataflow kernel. Stage i of a kernel is its i-th op with work, a pipeline stage on its
  own PCUs; its slice starts when the fill of the stages before it has passed and lasts
  its own compute cycles (every tile through it), as the cost model counts them
  (``stage_starts``, ``stage_cycles``: see ``coec.backend.cost.kernel_cost``). A fused
  kernel's stages overlap in time; each lies within the kernel.

Counter tracks (``"ph": "C"``), per process, sampled at each kernel's start: ``HBM bytes``
and ``DDR bytes`` resident (the schedule's buffers' live ranges, as
``coec.backend.schedule.resident_bytes`` counts them), ``SRAM bytes`` (the kernel's
working set), and ``HBM B/s``, ``DDR B/s``, ``P2P B/s`` (the bytes the kernel moves
through the tier over its time). Flow events (``"ph": "s"``/``"f"``) link each kernel's
collective on the P2P track of socket s to socket s+1 (mod N), the ring's next hop.

Times come from the runtime's per-kernel report, in cycles turned into microseconds, so
the PCU track adds up to the report's total time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from coec.backend.cost import tier_bytes
from coec.backend.schedule import resident_bytes

FORMAT = "coec.trace/2"
#: the first tracks of every socket's process, by thread id; the stage tracks follow
TRACKS = ("PCU array", "HBM", "DDR", "P2P")
_TIER_OF_TRACK = {"HBM": "hbm", "DDR": "ddr", "P2P": "p2p"}
_P2P_TID = TRACKS.index("P2P")
#: the counters every process has: occupancy (bytes) and bandwidth (bytes/s) per tier
OCCUPANCY_COUNTERS = ("HBM bytes", "DDR bytes", "SRAM bytes")
BANDWIDTH_COUNTERS = ("HBM B/s", "DDR B/s", "P2P B/s")


def stage_count(report: dict) -> int:
    """The stage tracks a trace of ``report`` has: the most stages of any kernel."""
    return max((len(k.get("stage_cycles", ())) for k in report.get("per_kernel", [])), default=0)


def track_names(stages: int) -> list[str]:
    """Every track of a process, by thread id."""
    return [*TRACKS, *(f"stage {i}" for i in range(stages))]


def _metadata(sockets: int, label: str, stages: int) -> list[dict]:
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
        for tid, track in enumerate(track_names(stages)):
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


def _stage_slices(k: dict, body_cycle: int, us_per_cycle: float) -> list[dict]:
    """The slices of ``k``'s pipeline stages, one per stage track."""
    stages = zip(
        k.get("stage_cycles", ()),
        k.get("stage_starts", ()),
        k.get("stage_pcus", ()),
        k.get("stage_phases", ()),
        k.get("stage_ops", ()),
        strict=True,
    )
    slices = []
    for i, (busy, start, pcus, phase, op) in enumerate(stages):
        ts = (body_cycle + start) * us_per_cycle
        slices.append(
            {
                "name": f"{k['name']} {op}",
                "cat": "stage",
                "tid": len(TRACKS) + i,
                "ts": ts,
                "dur": (body_cycle + start + busy) * us_per_cycle - ts,
                "args": {
                    "kernel": k["name"],
                    "op": op,
                    "pcus": pcus,
                    "phase": phase,
                    "start_cycles": start,
                    "cycles": busy,
                },
            }
        )
    return slices


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
    return slices + _stage_slices(k, start_cycle + launch, us_per_cycle)


def _resident_by_tier(schedule: dict | None, kernels: int) -> dict[str, list[int]]:
    """Bytes resident per tier while each kernel runs (HBM, DDR), from the buffers' live
    ranges; empty without a schedule."""
    if schedule is None:
        return {}
    by_tier = {"hbm": [0] * kernels, "ddr": [0] * kernels}
    for (tier, _), series in resident_bytes(schedule).items():
        if tier in by_tier:
            by_tier[tier] = [a + x for a, x in zip(by_tier[tier], series[1:], strict=True)]
    return by_tier


def _counters(kernels: list[dict], resident: dict, us_per_cycle: float) -> list[dict]:
    """The counter samples of one process (pid filled in by the caller)."""
    samples, cycle = [], 0
    for i, k in enumerate(kernels):
        values = {"SRAM bytes": k.get("sram_bytes", 0)}
        for tier, series in resident.items():
            values[f"{tier.upper()} bytes"] = series[i]
        for tier in ("hbm", "ddr", "p2p"):
            moved = tier_bytes(k["bytes"], tier)
            values[f"{tier.upper()} B/s"] = moved / k["seconds"] if k["seconds"] else 0.0
        ts = cycle * us_per_cycle
        samples += [
            {"ph": "C", "name": n, "ts": ts, "args": {"value": v}} for n, v in values.items()
        ]
        cycle += k["cycles"]
    if kernels:  # after the last kernel: nothing in SRAM, nothing moving
        ends = ("SRAM bytes", *BANDWIDTH_COUNTERS)
        ts = cycle * us_per_cycle
        samples += [{"ph": "C", "name": n, "ts": ts, "args": {"value": 0}} for n in ends]
    return samples


def _flows(kernels: list[dict], sockets: int, us_per_cycle: float) -> list[dict]:
    """Flow arrows of each kernel's collective: socket s's P2P slice to socket s+1's."""
    if sockets < 2:
        return []
    events, cycle = [], 0
    for i, k in enumerate(kernels):
        launch = k.get("launch_cycles", 0)
        if min(k.get("p2p_cycles", 0), k["cycles"] - launch) > 0:
            ts = (cycle + launch) * us_per_cycle
            for s in range(sockets):
                common = {"name": f"{k['name']} ring", "cat": "p2p", "id": i * sockets + s}
                events += [
                    {"ph": "s", "pid": s, "tid": _P2P_TID, "ts": ts, **common},
                    {
                        "ph": "f",
                        "bp": "e",
                        "pid": (s + 1) % sockets,
                        "tid": _P2P_TID,
                        "ts": ts,
                        **common,
                    },
                ]
        cycle += k["cycles"]
    return events


def trace_events(
    report: dict,
    sockets: int = 1,
    label: str = "",
    schedule: dict | None = None,
    socket_reports: Sequence[dict] | None = None,
) -> dict:
    """The trace-event JSON object of ``report`` (``traceEvents``; times in µs).

    ``report`` is the runtime's report (its ``per_kernel`` list); ``sockets`` the
    schedule's socket count (one process each); ``label`` names the processes;
    ``schedule`` (optional) gives the HBM and DDR occupancy counters; ``socket_reports``
    (optional, one per socket) gives each process its own socket's slices.
    """
    reports = list(socket_reports) if socket_reports is not None else [report] * sockets
    if len(reports) != sockets:
        raise ValueError(f"{len(reports)} socket reports for {sockets} sockets")
    stages = max(stage_count(r) for r in reports) if reports else 0
    events = _metadata(sockets, label, stages)
    resident = _resident_by_tier(schedule, len(report.get("per_kernel", [])))
    for pid, r in enumerate(reports):
        # one clock for the schedule: start times are whole cycles, so they do not drift
        us_per_cycle = r["seconds"] * 1e6 / r["cycles"] if r.get("cycles") else 0.0
        kernels, cycle = r.get("per_kernel", []), 0
        for k in kernels:
            events += [{"ph": "X", "pid": pid, **s} for s in _kernel_slices(k, cycle, us_per_cycle)]
            cycle += k["cycles"]
        events += [{"pid": pid, **c} for c in _counters(kernels, resident, us_per_cycle)]
    us_per_cycle = report["seconds"] * 1e6 / report["cycles"] if report.get("cycles") else 0.0
    events += _flows(report.get("per_kernel", []), sockets, us_per_cycle)
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {
            "format": FORMAT,
            "sockets": sockets,
            "spmd": socket_reports is None,
            "stages": stages,
            "kernels": report.get("kernels", 0),
            "total_us": report.get("seconds", 0.0) * 1e6,
        },
    }


def trace_text(
    report: dict,
    sockets: int = 1,
    label: str = "",
    schedule: dict | None = None,
    socket_reports: Sequence[dict] | None = None,
) -> str:
    """``report``'s trace as the JSON text a trace file holds."""
    data = trace_events(report, sockets, label, schedule, socket_reports)
    return json.dumps(data, separators=(",", ":")) + "\n"


def schedule_trace(
    report: dict, schedule: dict, socket_reports: Sequence[dict] | None = None
) -> str:
    """The trace of a run of ``schedule`` (a process per socket, occupancy from its buffers;
    each socket's own slices given ``socket_reports``, else ``report``'s on every socket)."""
    target = schedule["target"]
    return trace_text(report, target["sockets"], target["name"], schedule, socket_reports)
