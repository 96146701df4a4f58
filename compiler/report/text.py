"""Reports for people (a rich table) and programs (JSON with stable keys)."""

from __future__ import annotations

import json

from rich.console import Console, RenderableType
from rich.table import Table

#: keys every report has, in this order
KEYS = ("kernels", "flops", "cycles", "seconds", "bytes", "peak_bytes")
#: the version of ``--json``'s report format (what ``describe`` adds to the figures)
FORMAT = "coec.report/1"
#: one socket's figures (a tensor-parallel schedule is one socket's shard, the same on each)
PER_SOCKET = ("kernels", "flops", "bytes", "peak_bytes", "per_kernel")
#: the node's figures: its time (every socket runs the schedule at once) and its outputs' error
PER_NODE = ("cycles", "seconds", "max_abs_err", "max_rel_err")
#: options of a zoo compile a schedule records, reported as they are
_ZOO_OPTIONS = ("phase", "batch", "seq", "layers")


def describe(schedule: dict, model: str, executed: bool) -> dict:
    """What a report describes: format, model, target, options, and each figure's scope.

    ``model`` is the MODEL.py/.onnx path or zoo name (a zoo schedule records its own);
    the rest comes from the schedule, so a saved schedule describes itself the same way.
    """
    options, target = schedule["options"], schedule["target"]
    about = {
        "format": FORMAT,
        "model": options.get("model", model),
        "target": target["name"],
        "sockets": target["sockets"],
        "fusion": options["fusion"],
        "launch": options["launch"],
        "dtype": options["dtype"],
        "executed": executed,
    }
    about.update({k: options[k] for k in _ZOO_OPTIONS if k in options})
    return about


def header(model: str, target: str, fusion: str, dtype: str, executed: bool) -> str:
    """The first line of a compile report: what was compiled, for what, how."""
    mode = "executed" if executed else "count-only"
    return f"{model}  target {target}  fusion {fusion}  dtype {dtype}  {mode}"


def report_json(report: dict, about: dict | None = None) -> str:
    """The report as JSON: ``about`` (``describe``'s keys) first, then the figures.

    With ``about``, ``per_socket`` and ``per_node`` name which figures are one socket's
    and which the whole node's.
    """
    out = dict(about or {})
    out.update({k: report[k] for k in KEYS})
    for k in ("max_abs_err", "max_rel_err", "reference"):
        if k in report:
            out[k] = report[k]
    out["per_kernel"] = report.get("per_kernel", [])
    if about:
        out["per_socket"] = [k for k in PER_SOCKET if k in out]
        out["per_node"] = [k for k in PER_NODE if k in out]
    return json.dumps(out, indent=1) + "\n"


def _si_seconds(s: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def _ops_label(ops: list[str], limit: int = 6) -> str:
    if len(ops) <= limit:
        return ",".join(ops)
    return ",".join(ops[:limit]) + f",… ({len(ops)} ops)"


def print_report(report: dict, header: str, console: Console, max_rows: int = 20) -> None:
    for part in render_report(report, header, max_rows):
        console.print(part)


def render_report(report: dict, header: str, max_rows: int = 20) -> list[RenderableType]:
    """The report for people: the header, the totals, and a table of the kernels
    (the ``max_rows`` slowest when there are more)."""
    out: list[RenderableType] = [f"[bold]{header}[/bold]"]
    summary = Table.grid(padding=(0, 2))
    summary.add_row("kernels", f"{report['kernels']:,}")
    summary.add_row("FLOPs", f"{report['flops']:,}")
    summary.add_row("cycles", f"{report['cycles']:,}  ({_si_seconds(report['seconds'])})")
    for pair, n in report["bytes"].items():
        summary.add_row(f"bytes {pair}", f"{n:,}")
    for tier, n in report["peak_bytes"].items():
        summary.add_row(f"peak {tier}", f"{n:,}")
    if "max_abs_err" in report:
        summary.add_row(
            f"max |err| vs {report.get('reference', 'PyTorch')}",
            f"{report['max_abs_err']:.3g}  (relative to output scale {report['max_rel_err']:.3g})",
        )
    out.append(summary)

    kernels = report.get("per_kernel", [])
    if not kernels:
        return out
    table = Table(title="kernels (slowest first)" if len(kernels) > max_rows else "kernels")
    for col in (
        "kernel",
        "ops",
        "FLOPs",
        "HBM bytes",
        "DDR bytes",
        "SRAM bytes",
        "PCUs",
        "PMUs",
        "time",
        "bound",
    ):
        table.add_column(col, justify="left" if col in ("kernel", "ops", "bound") else "right")
    shown = kernels
    if len(kernels) > max_rows:
        shown = sorted(kernels, key=lambda k: -k["cycles"])[:max_rows]
    for k in shown:
        hbm = sum(n for p, n in k["bytes"].items() if "hbm" in p.split("->"))
        ddr = sum(n for p, n in k["bytes"].items() if "ddr" in p.split("->"))
        table.add_row(
            k["name"],
            _ops_label(k.get("ops", [])),
            f"{k['flops']:,}",
            f"{hbm:,}",
            f"{ddr:,}",
            f"{k['sram_bytes']:,}",
            f"{sum(k['stage_pcus']):,}",
            f"{k['pmus']:,}",
            _si_seconds(k["seconds"]),
            k["bound"],
        )
    out.append(table)
    if len(kernels) > max_rows:
        out.append(f"... and {len(kernels) - max_rows} more kernels (--all-kernels shows them)")
    return out
