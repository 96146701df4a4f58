"""Running a sweep: the points not yet in the log, each model lowered once, every point
compiled on a runner, each row logged the moment it comes back.

Per distinct lowering (``compile.lowering_key``) one task lowers the model; as soon as it
is back, one task per point of it compiles that point from the lowered text, shared
among them (``Runner.share``). Rows come back in whatever order they finish and are
returned in the points' order, so one, two or any number of workers, local or on Ray,
give the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from coec.ir.errors import CoecError
from coec.sweep.compile import failed, lower, lowering_key, run_point
from coec.sweep.results import append_log, read_log
from coec.sweep.runners import Runner, make_runner
from coec.sweep.spec import Sweep, base_target, point_key

#: ``progress(done, total)``: points finished (read back or compiled) of all
Progress = Callable[[int, int], None]


def run_sweep(
    sweep: Sweep,
    out: Path,
    folder: Path,
    jobs: int = 1,
    progress: Progress | None = None,
    *,
    ray: bool = False,
    ray_address: str | None = None,
    runner: Runner | None = None,
) -> list[dict]:
    """Every point's row, in the points' order; rows already in ``out`` are reused.

    Points run on ``runner``, or: as Ray tasks with ``ray`` (or ``ray_address``), else
    on ``jobs`` local processes (1: in this process).
    """
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    done = read_log(log)
    points = sweep.points()
    keys = [point_key(p, sweep, folder) for p in points]
    todo = {k: p for k, p in zip(keys, points, strict=True) if k not in done}
    if todo and runner is None:  # first, so a Ray that is missing or away is the one error
        runner = make_runner(jobs, ray, ray_address)
    if progress:
        progress(len(points) - len(todo), len(points))

    def record(key: str, result: dict) -> None:
        row = {"key": key, **todo[key], **result}
        done[key] = row
        append_log(log, row)
        if progress:
            progress(len(done), len(points))

    base = base_target(sweep, folder)
    groups: dict[str, tuple[dict, list[str]]] = {}  # lowering -> (its key, its points)
    for key, point in todo.items():
        try:
            lowering = lowering_key(point, base, folder)
        except CoecError as e:  # the point's options or target are not a compile
            record(key, failed(e))
            continue
        name = json.dumps(lowering, sort_keys=True)
        groups.setdefault(name, (lowering, []))[1].append(key)
    if runner is None:
        return [done[k] for k in keys]
    with runner as pool:
        shared = pool.share(base)  # Ray: in its object store once, not with every task
        for name, (lowering, _) in groups.items():
            pool.submit(("lower", name), lower, lowering)
        while pool.pending:
            (kind, name), result = pool.next_done()
            if kind == "point":
                record(name, result)
                continue
            lowered = pool.share(result)
            for key in groups[name][1]:
                pool.submit(("point", key), run_point, todo[key], shared, lowered)
    return [done[k] for k in keys]
