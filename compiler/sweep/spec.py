"""The sweep file: its grid, its points, each point's identity and its compile options.

A sweep file (TOML, ``format = "coec.sweep/1"``) names a base target and, under
``[grid]``, a list of values per swept name: any target key as a dotted path into the
target file (``memory.hbm.bandwidth_GBps``), or ``model`` (a zoo name, or a MODEL.py path
relative to the sweep file), ``phase``, ``seq``, ``batch``, ``dtype``, ``sockets``,
``fusion``, ``launch``, ``search_limit`` (the dataflow partition search's, as
``--search-limit``: 0 keeps the greedy partition, several times faster a point). What is
not swept is llama2-7b decode at 4096 tokens, batch 1, bf16, with the target's own
sockets, best fusion and launch, and the compile's search limit. The points are the grid's
product, or ``sample = N`` of them drawn with ``seed``. ``pareto = [A, B]`` names two
objectives (figures or swept numbers), both minimised: the points no other beats on both
are reported, for each workload (each swept model, phase, seq, batch and dtype).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

from coec.ir.errors import ConfigError

FORMAT = "coec.sweep/1"
#: the model options a sweep may vary, and their values where a sweep does not
OPTIONS = {"model": "llama2-7b", "phase": "decode", "seq": 4096, "batch": 1, "dtype": "bf16"}
#: what a point runs, rather than what it runs on: a Pareto front is drawn for each
WORKLOAD = ("model", "phase", "seq", "batch", "dtype")
#: compile options a sweep may vary (the target's own where it does not)
COMPILE = ("sockets", "fusion", "launch", "search_limit")
#: the figures each row reports
FIGURES = ("seconds", "kernels", "hbm_bytes", "ddr_bytes", "p2p_bytes", "peak_hbm", "peak_sram")
#: each figure's unit, as the tables record it
UNITS = {
    "seconds": "s",
    "kernels": "kernels",
    "hbm_bytes": "bytes",
    "ddr_bytes": "bytes",
    "p2p_bytes": "bytes",
    "peak_hbm": "bytes",
    "peak_sram": "bytes",
}
#: a figure as people read it: its label, and the factor that scales it to that unit
AXES = {
    "seconds": ("modeled time (ms)", 1e3),
    "kernels": ("kernels", 1),
    "hbm_bytes": ("HBM traffic (GB)", 1e-9),
    "ddr_bytes": ("DDR traffic (GB)", 1e-9),
    "p2p_bytes": ("P2P sent (MB)", 1e-6),
    "peak_hbm": ("peak HBM (GB)", 1e-9),
    "peak_sram": ("peak SRAM (MiB)", 2**-20),
}
KEYS = {"format", "name", "target", "grid", "sample", "seed", "pareto"}


@dataclass(frozen=True)
class Sweep:
    name: str
    target: str  # a built-in target name or a .toml path (relative to the sweep file)
    grid: dict[str, list]
    sample: int | None = None
    seed: int = 0
    #: two objectives to minimise together (figures or swept names), or none
    pareto: tuple[str, str] | None = None

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
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}")
    grid = data.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: [grid] must give at least one name = [values]")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid {name!r} must be a non-empty list")
    sample = data.get("sample")
    if sample is not None and (not isinstance(sample, int) or sample < 1):
        raise ConfigError(f"{path}: sample must be a whole number of points, at least 1")
    sweep = Sweep(
        str(data.get("name", path.stem)),
        str(data.get("target", "sn40l-node")),
        {k: list(v) for k, v in grid.items()},
        sample,
        int(data.get("seed", 0)),
        check_pareto(data.get("pareto"), grid, f"{path}: pareto"),
    )
    base = target_data(sweep.target, path.parent)
    for name in grid:
        if name not in OPTIONS and name not in COMPILE:
            _set(copy.deepcopy(base), name, grid[name][0], f"{path}: grid")
    return sweep


def check_pareto(value, grid: dict, where: str) -> tuple[str, str] | None:
    """Two objectives, each a figure or a swept name; None when none are asked for."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2 or value[0] == value[1]:
        raise ConfigError(f"{where}: give two different objectives, e.g. ['seconds', 'peak_hbm']")
    for name in value:
        if name not in FIGURES and name not in grid:
            raise ConfigError(
                f"{where}: {name!r} is neither a figure ({', '.join(FIGURES)}) nor a swept name"
            )
        if name in grid and not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in grid[name]
        ):
            raise ConfigError(f"{where}: {name!r} takes values that are not numbers")
    return str(value[0]), str(value[1])


def workload(sweep: Sweep) -> list[str]:
    """The swept names that say what a point runs (a Pareto front is drawn for each)."""
    return [n for n in sweep.grid if n in WORKLOAD and n not in (sweep.pareto or ())]


def target_data(spec: str, folder: Path) -> dict:
    """The base target's TOML: a built-in name, or a file relative to the sweep file."""
    from coec.backend.target import builtin_targets
    from coec.backend.target import target_data as read

    local = Path(folder) / spec
    return read(local if spec not in builtin_targets() and local.exists() else spec)[0]


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


def model_file(model: str, folder: str | Path) -> Path | None:
    """A MODEL.py a point names (relative to the sweep file), or None for a zoo name."""
    return Path(folder) / model if str(model).endswith(".py") else None


@dataclass(frozen=True)
class BaseTarget:
    """The sweep's base target as data (its TOML, parsed): what every point starts from,
    sent to the workers whole, so that they read no target file."""

    name: str
    data: dict


def base_target(sweep: Sweep, folder: str | Path) -> BaseTarget:
    return BaseTarget(sweep.target, target_data(sweep.target, Path(folder)))


def point_options(point: dict, base: BaseTarget):
    """The compile ``Options`` of a point: the base target with its swept keys set."""
    from coec.backend.target import parse_target
    from coec.pipeline import Options

    data = copy.deepcopy(base.data)
    for name, value in point.items():
        if name not in OPTIONS and name not in COMPILE:
            _set(data, name, value, "point")
    return Options(
        target=parse_target(data, f"{base.name} (swept)"),
        fusion=point.get("fusion"),
        launch=point.get("launch"),
        sockets=point.get("sockets"),
        dtype=point.get("dtype", OPTIONS["dtype"]),
        search_limit=point.get("search_limit"),
    )


def model_options(point: dict) -> dict:
    """The point's model, phase, seq, batch and dtype (the defaults where not swept)."""
    return {**OPTIONS, **{k: v for k, v in point.items() if k in OPTIONS}}


def point_key(point: dict, sweep: Sweep, folder: str | Path = ".") -> str:
    """A point's identity: its values, the sweep's base target, coec's version and, for a
    MODEL.py, the file's bytes (an edited model runs again)."""
    from coec import __version__
    from coec.cache import file_digest

    path = model_file(point.get("model", ""), folder)
    digest = [file_digest(path)] if path is not None and path.is_file() else []
    blob = json.dumps([sweep.target, point, __version__, *digest], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
