"""A sweep's results: the log rows are appended to as points finish, and the tables, the
Pareto front and the plots made of the rows.

``results.jsonl`` holds one JSON row per finished point, keyed by the point's hash (so a
rerun reads finished points back, and a line an interruption cut short runs again).
From the rows, in the points' order: ``results.parquet`` and ``results.csv``, one column
per swept name and per figure (the Parquet schema records the results format, the sweep,
its grid and coec's version, and each figure's unit), ``results.json``, the Pareto front
of the sweep's two objectives (``pareto.csv``) and the pictures (``coec.report.sweep_plots``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from coec.sweep.spec import FIGURES, UNITS, Sweep, workload

RESULTS = "coec.sweep-results/1"


def read_log(path: Path) -> dict[str, dict]:
    """The rows of finished points by key; a line cut short is skipped (its point reruns)."""
    done: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "key" in row:
                done[row["key"]] = row
    return done


def append_log(path: Path, row: dict) -> None:
    """One finished point's row, appended as one line."""
    with path.open("a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def columns(sweep: Sweep) -> list[str]:
    return ["key", *sweep.grid, "fits", "reason", *FIGURES]


def pareto_front(rows: list[dict], a: str, b: str, by: Sequence[str] = ()) -> list[dict]:
    """The fitting rows no other fitting row beats on both ``a`` and ``b`` (each minimised;
    beaten: no worse on either and better on one), in order of ``a``; with ``by``, the
    front of each group of rows alike in ``by`` (each workload), groups in row order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["fits"]:
            groups.setdefault(tuple(r[n] for n in by), []).append(r)
    front = []
    for group in groups.values():
        best, by_a = float("inf"), {}
        for r in group:
            by_a.setdefault(r[a], []).append(r)
        for value in sorted(by_a):
            low = min(r[b] for r in by_a[value])
            if low < best:  # a smaller a with a b as low beats every row here
                front += [r for r in by_a[value] if r[b] == low]
                best = low
    return front


def _arrow_column(values: list):
    """A swept name's values as one Arrow type: integers, floats, booleans, else text."""
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, pa.int64())
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def parquet_bytes(sweep: Sweep, rows: list[dict]) -> bytes:
    """The rows as a Parquet table, versioned in its schema's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from coec import __version__

    fields, arrays = [], []
    for name in columns(sweep):
        values = [r.get(name) for r in rows]
        if name in FIGURES:
            kind = pa.float64() if name == "seconds" else pa.int64()
            arrays.append(pa.array(values, kind))
            fields.append(pa.field(name, kind, metadata={"unit": UNITS[name]}))
        elif name == "fits":
            arrays.append(pa.array(values, pa.bool_()))
            fields.append(pa.field(name, pa.bool_()))
        elif name in ("key", "reason"):
            arrays.append(pa.array(values, pa.string()))
            fields.append(pa.field(name, pa.string()))
        else:
            arrays.append(_arrow_column(values))
            fields.append(pa.field(name, arrays[-1].type, metadata={"swept": "true"}))
    meta = {
        "format": RESULTS,
        "sweep": sweep.name,
        "target": sweep.target,
        "grid": json.dumps(sweep.grid, sort_keys=True),
        "coec": __version__,
    }
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def write_results(sweep: Sweep, rows: list[dict], out: Path) -> list[Path]:
    """The tables, the Pareto front and the plots of ``rows``; the paths written."""
    from coec.backend.schedule import write_files_atomic
    from coec.bench.common import csv_text
    from coec.report.sweep_plots import sweep_plots

    names = columns(sweep)

    def csv(some: list[dict]) -> str:
        if not some:  # the header alone
            return csv_text([dict.fromkeys(names)]).splitlines(keepends=True)[0]
        return csv_text([{c: r.get(c, "") for c in names} for r in some])

    files: dict[Path, str | bytes] = {
        out / "results.parquet": parquet_bytes(sweep, rows),
        out / "results.csv": csv(rows),
        out / "results.json": json.dumps(
            {"format": RESULTS, "sweep": sweep.name, "target": sweep.target, "rows": rows},
            indent=1,
        ),
    }
    front = pareto_front(rows, *sweep.pareto, workload(sweep)) if sweep.pareto else None
    if front is not None:
        files[out / "pareto.csv"] = csv(front)
    for name, png in sweep_plots(sweep, rows, front).items():
        files[out / name] = png
    write_files_atomic(files)
    return list(files)
