"""``coec sweep``: a design-space sweep over target keys, models and compile options.

A sweep file (TOML, ``format = "coec.sweep/1"``) names a base target and, under
``[grid]``, a list of values per swept name: any target key as a dotted path into the
target file (``memory.hbm.bandwidth_GBps``), or ``model`` (zoo names), ``phase``,
``seq``, ``batch``, ``sockets``, ``fusion``, ``launch``; what is not swept is llama2-7b
decode at 4096 tokens, batch 1, with the target's own sockets, best fusion and launch.
The points are the grid's product, or ``sample = N`` of them drawn with ``seed``. Each point is compiled
count-only (regional: one decoder layer compiled, reused) and reported with the
compile report's figures; a point that does not fit is a row with the reason.

Results are appended to ``results.jsonl`` as points finish, each keyed by a hash of the
point and of coec's version, so an interrupted sweep continues where it stopped and the
same sweep file gives the same rows; ``results.csv`` and one plot per swept name are
written at the end. Points run on local worker processes (``jobs``).
"""

from __future__ import annotations

import copy
import hashlib
import io
import itertools
import json
import random
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from coec.ir.errors import CapacityError, CoecError, ConfigError

FORMAT = "coec.sweep/1"
RESULTS = "coec.sweep-results/1"
#: compile options a sweep may vary (everything else is a target key)
OPTIONS = {"model": "llama2-7b", "phase": "decode", "seq": 4096, "batch": 1}
COMPILE = ("sockets", "fusion", "launch")
#: the figures each row reports
FIGURES = ("seconds", "kernels", "hbm_bytes", "ddr_bytes", "p2p_bytes", "peak_hbm", "peak_sram")


@dataclass(frozen=True)
class Sweep:
    name: str
    target: str  # a built-in target name or a .toml path
    grid: dict[str, list]
    sample: int | None = None
    seed: int = 0

    def points(self) -> list[dict]:
        """The points, in a fixed order (the grid's product, or a seeded sample of it)."""
        names = list(self.grid)
        every = [
            dict(zip(names, values, strict=True))
            for values in itertools.product(*self.grid.values())
        ]
        if self.sample is not None and self.sample < len(every):
            every = random.Random(self.seed).sample(every, self.sample)
        return every


def load_sweep(path: str | Path) -> Sweep:
    """A sweep file, checked: one ConfigError line per problem."""
    from coec.backend.target import read_toml

    path = Path(path)
    data = read_toml(path, "the sweep file")
    if data.get("format") != FORMAT:
        raise ConfigError(f"{path}: format {data.get('format')!r} is not {FORMAT!r}")
    unknown = sorted(set(data) - {"format", "name", "target", "grid", "sample", "seed"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}")
    grid = data.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: [grid] must give at least one name = [values]")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid {name!r} must be a non-empty list")
    sweep = Sweep(
        str(data.get("name", path.stem)),
        str(data.get("target", "sn40l-node")),
        {k: list(v) for k, v in grid.items()},
        data.get("sample"),
        int(data.get("seed", 0)),
    )
    base = _target_data(sweep.target, path.parent)
    for name in grid:
        if name not in OPTIONS and name not in COMPILE:
            _set(copy.deepcopy(base), name, grid[name][0], f"{path}: grid")
    return sweep


def _target_data(spec: str, folder: Path) -> dict:
    """The base target's TOML: a built-in name, or a file relative to the sweep file."""
    from coec.backend.target import builtin_targets, target_data

    local = folder / spec
    return target_data(local if spec not in builtin_targets() and local.exists() else spec)[0]


def _set(data: dict, dotted: str, value, where: str) -> None:
    """Set target key ``dotted`` (e.g. ``memory.hbm.bandwidth_GBps``) in parsed TOML."""
    *tables, key = dotted.split(".")
    node = data
    for t in tables:
        if not isinstance(node.get(t), dict):
            raise ConfigError(f"{where}: {dotted!r} is not a key of the target file")
        node = node[t]
    if key not in node:
        raise ConfigError(f"{where}: {dotted!r} is not a key of the target file")
    if isinstance(node[key], dict) and "value" in node[key]:
        node[key] = {"value": value, "source": "coec sweep"}
    else:
        node[key] = value


def point_key(point: dict, sweep: Sweep) -> str:
    """A point's identity: its values, the sweep's base target and coec's version."""
    from coec import __version__

    blob = json.dumps([sweep.target, point, __version__], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_point(point: dict, target_spec: str, folder: str) -> dict:
    """One point compiled count-only: its figures, or that it does not fit and why."""
    from coec.backend.target import parse_target
    from coec.models.zoo import instantiate
    from coec.pipeline import Options
    from coec.regional import compile_zoo
    from coec.runtime.executor import Executor

    data = _target_data(target_spec, Path(folder))
    for name, value in point.items():
        if name not in OPTIONS and name not in COMPILE:
            _set(data, name, value, "point")
    opts = {**OPTIONS, **{k: v for k, v in point.items() if k in OPTIONS}}
    row = {"fits": True, "reason": ""}
    try:
        target = parse_target(data, f"{target_spec} (swept)")
        options = Options(
            target=target,
            fusion=point.get("fusion"),
            launch=point.get("launch"),
            sockets=point.get("sockets"),
        )
        inst = instantiate(opts["model"], opts["phase"], opts["seq"], opts["batch"], device="meta")
        schedule = compile_zoo(inst, options).schedule
        _, report = Executor(schedule, count_only=True).run()
    except CapacityError as e:
        return {**row, "fits": False, "reason": str(e)}
    except CoecError as e:
        return {**row, "fits": False, "reason": f"{type(e).__name__}: {e}"}
    nbytes = report["bytes"]
    row.update(
        seconds=report["seconds"],
        kernels=report["kernels"],
        hbm_bytes=sum(n for p, n in nbytes.items() if "hbm" in p),
        ddr_bytes=sum(n for p, n in nbytes.items() if "ddr" in p),
        p2p_bytes=nbytes.get("sram->p2p", 0),
        peak_hbm=report["peak_bytes"]["hbm"],
        peak_sram=report["peak_bytes"]["sram"],
    )
    return row


def run_sweep(sweep: Sweep, out: Path, folder: Path, jobs: int = 1, progress=None) -> list[dict]:
    """Every point's row, in the points' order; finished points in ``out`` are reused."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    done: dict[str, dict] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption: that point runs again
            done[row["key"]] = row
    points = sweep.points()
    todo = [(point_key(p, sweep), p) for p in points]
    todo = [(k, p) for k, p in todo if k not in done]
    if progress:
        progress(len(points) - len(todo), len(points))

    def record(key: str, point: dict, result: dict) -> None:
        row = {"key": key, **point, **result}
        done[key] = row
        with log.open("a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        if progress:
            progress(len(done), len(points))

    if jobs <= 1:
        for key, point in todo:
            record(key, point, run_point(point, sweep.target, str(folder)))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {
                pool.submit(run_point, point, sweep.target, str(folder)): (key, point)
                for key, point in todo
            }
            for future in as_completed(futures):
                key, point = futures[future]
                record(key, point, future.result())
    return [done[point_key(p, sweep)] for p in points]


def write_results(sweep: Sweep, rows: list[dict], out: Path) -> list[Path]:
    """results.csv (one column per swept name and per figure) and a plot per swept name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from coec.backend.schedule import write_files_atomic
    from coec.bench.common import csv_text

    names = list(sweep.grid)
    columns = ["key", *names, "fits", "reason", *FIGURES]
    files: dict[Path, str | bytes] = {
        out / "results.csv": csv_text([{c: r.get(c, "") for c in columns} for r in rows]),
        out / "results.json": json.dumps(
            {"format": RESULTS, "sweep": sweep.name, "rows": rows}, indent=1
        ),
    }
    fitting = [r for r in rows if r["fits"]]
    for name in names:
        values = sorted({r[name] for r in fitting}, key=str)
        if len(values) < 2 or not all(isinstance(v, int | float) for v in values):
            continue
        fig, ax = plt.subplots(figsize=(7.5, 3.8))
        others = [n for n in names if n != name]
        series: dict[tuple, list] = {}
        for r in fitting:
            series.setdefault(tuple(r[n] for n in others), []).append((r[name], r["seconds"]))
        for label, pts in sorted(series.items(), key=lambda kv: str(kv[0])):
            pts.sort()
            ax.plot(
                [p[0] for p in pts],
                [p[1] * 1e3 for p in pts],
                "o-",
                label=", ".join(map(str, label)) or None,
            )
        ax.set_xlabel(name)
        ax.set_ylabel("modeled time (ms)")
        ax.set_yscale("log")
        if others and len(series) <= 32:  # one line per combination of the others
            ax.legend(
                title=", ".join(others),
                fontsize=5,
                title_fontsize=5,
                loc="upper left",
                bbox_to_anchor=(1.01, 1),
            )
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, dpi=110)
        plt.close(fig)
        files[out / f"time_vs_{name.replace('.', '_')}.png"] = buf.getvalue()
    write_files_atomic(files)
    return list(files)
