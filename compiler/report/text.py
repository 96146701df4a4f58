"""Reports for people (a rich table) and programs (JSON with stable keys)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

#: keys every report has, in this order
KEYS = ("kernels", "flops", "cycles", "seconds", "bytes", "peak_bytes")


def report_json(report: dict, extra: dict | None = None) -> str:
    out = {k: report[k] for k in KEYS}
    for k in ("max_abs_err", "max_rel_err", "reference"):
        if k in report:
            out[k] = report[k]
    out["per_kernel"] = report.get("per_kernel", [])
    if extra:
        out.update(extra)
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
    console.print(f"[bold]{header}[/bold]")
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
    console.print(summary)

    kernels = report.get("per_kernel", [])
    if not kernels:
        return
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
    console.print(table)
    if len(kernels) > max_rows:
        console.print(f"... and {len(kernels) - max_rows} more kernels (--all-kernels shows them)")
