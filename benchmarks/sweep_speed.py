"""How fast is ``coec sweep``? The first point, every later one, and points per second.

    python benchmarks/sweep_speed.py              # everything (a few minutes on 2 cores)
    python benchmarks/sweep_speed.py --no-ray     # without the Ray cluster
    python benchmarks/sweep_speed.py --no-before  # without the old path's figures
    python benchmarks/sweep_speed.py --search-limit 0   # the greedy partition per point

The point: llama2-70b decode (seq 4096) on the 8-socket SN40L node, hardware launch,
count-only, goals: first point <= 3 s, each later point <= 0.2 s on one core.

1. Before: a point as the sweep compiled it before reuse (the whole model instantiated
   on the meta device, every part exported, 80 layers stitched, placed and counted),
   in a fresh process and then again in the same one.
2. The first point in a fresh process (interpreter start included): with coec's disk
   cache empty (the model is exported and lowered) and with it holding the lowering.
3. Later points in one process: each a new target (SRAM, HBM and P2P bandwidth), only
   the target-dependent passes run and the layers counted once.
4. A sweep of 48 such points with 1 and 2 local processes and on a local two-CPU Ray
   cluster: points per second overall (start-up and the lowering included) and after
   the first point.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POINT = {
    "model": "llama2-70b",
    "phase": "decode",
    "launch": "hardware",
    "memory.sram.capacity_MiB": 520,
}
TARGET = "sn40l-node"
SWEEP = """format = "coec.sweep/1"
name = "speed"
target = "sn40l-node"
[grid]
model = ["llama2-70b"]
phase = ["decode"]
launch = ["hardware"]
"memory.sram.capacity_MiB" = [260, 390, 520, 1040]
"memory.hbm.bandwidth_GBps" = [1800, 2400, 3200, 4000]
"network.p2p_bandwidth_GBps" = [50, 100, 400]
"""

FIRST = """
import json, sys, time
t0 = time.perf_counter()
from coec.sweep.compile import lower, lowering_key, run_point
from coec.sweep.spec import BaseTarget, target_data
point = json.loads(sys.argv[1])
base = BaseTarget("sn40l-node", target_data("sn40l-node", "."))
key = lowering_key(point, base, ".")
t1 = time.perf_counter()
lowered = lower(key)
t2 = time.perf_counter()
row = run_point(point, base, lowered)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "lower": t2 - t1, "point": t3 - t2, "row": row,
                  "torch": "torch" in sys.modules}))
"""

BEFORE = """
import json, sys, time
from coec.models.zoo import instantiate
from coec.regional import compile_zoo
from coec.runtime.executor import Executor
from coec.sweep.spec import BaseTarget, point_options, target_data
point = json.loads(sys.argv[1])
base = BaseTarget("sn40l-node", target_data("sn40l-node", "."))
times = []
for sram in (520, 260):
    t0 = time.perf_counter()
    options = point_options({**point, "memory.sram.capacity_MiB": sram}, base)
    inst = instantiate("llama2-70b", "decode", 4096, 1, device="meta")
    _, report = Executor(compile_zoo(inst, options).schedule, count_only=True).run()
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "seconds": report["seconds"]}))
"""


RUN = """
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from coec.sweep import load_sweep, run_sweep
path, out, jobs, on_ray = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "True"
ray_start = 0.0
if on_ray:
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_start = time.perf_counter() - t0
stamps = []
sweep = load_sweep(path)
rows = run_sweep(sweep, out, Path(path).parent, jobs, lambda d, t: d and stamps.append(time.perf_counter() - t0), ray=on_ray)
from coec.sweep import write_results
write_results(sweep, rows, out)
print(json.dumps({"points": len(rows), "stamps": stamps, "ray_start": ray_start}))
"""


def fresh(script: str, env: dict) -> tuple[float, dict]:
    """Run ``script`` in a new interpreter: its wall time (start-up included) and output."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(POINT)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return time.perf_counter() - t0, json.loads(out.strip().splitlines()[-1])


def before(env: dict) -> None:
    wall, out = fresh(BEFORE, env)
    first, second = out["times"]
    print(f"before: first point {first:.2f} s in a fresh process ({wall:.2f} s with start-up),")
    print(f"        a later point {second:.2f} s (the whole model each time)")


def first_point(env: dict) -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {**env, "COEC_CACHE": "1", "COEC_CACHE_DIR": cache}
        for state in ("empty", "holding the lowering"):
            wall, out = fresh(FIRST, env)
            print(
                f"first point, disk cache {state}: {wall:.2f} s from interpreter start "
                f"(imports {out['import']:.2f} s, lowering {out['lower']:.2f} s, the point "
                f"{out['point']:.2f} s; torch imported: {out['torch']}); modeled "
                f"{out['row']['seconds'] * 1e3:.3f} ms"
            )


def later_points(n: int = 48) -> None:
    from coec.sweep.compile import lower, lowering_key, run_point
    from coec.sweep.spec import BaseTarget, target_data

    base = BaseTarget(TARGET, target_data(TARGET, "."))
    lowered = lower(lowering_key(POINT, base, "."))
    run_point(POINT, base, lowered)  # the first: parses the lowered text
    times, cpu, rows = [], [], []
    for i in range(n):
        point = {
            **POINT,
            "memory.sram.capacity_MiB": (260, 390, 520, 1040)[i % 4],
            "memory.hbm.bandwidth_GBps": 1800 + 100 * i,
            "network.p2p_bandwidth_GBps": (50, 100, 400)[i % 3],
        }
        t0, c0 = time.perf_counter(), time.process_time()
        rows.append(run_point(point, base, lowered))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    assert all(r["fits"] for r in rows)
    times.sort()
    print(
        f"later points ({n}, one process, one core): median {statistics.median(times):.3f} s, "
        f"mean {statistics.mean(times):.3f} s, 90th percentile {times[int(0.9 * n)]:.3f} s, "
        f"max {times[-1]:.3f} s per point (CPU time: median {statistics.median(cpu):.3f} s, "
        f"max {max(cpu):.3f} s)"
    )


def sweep_rates(jobs_list: list[int], ray: bool, env: dict) -> None:
    """Each sweep in a fresh process, as ``coec sweep`` runs it: nothing warm, the disk
    cache off (so every run exports and lowers the model once)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speed.toml"
        limit = POINT.get("search_limit")
        path.write_text(SWEEP + ("" if limit is None else f"search_limit = [{limit}]\n"))
        runs = [(f"{j} local process{'es' if j > 1 else ''}", j, False) for j in jobs_list]
        if ray:
            runs.append(("Ray (local cluster, 2 CPUs)", 1, True))
        rows_by = {}
        for label, jobs, on_ray in runs:
            out = Path(tmp) / label.split()[0]
            t0 = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-c", RUN, str(path), str(out), str(jobs), str(on_ray)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            wall = time.perf_counter() - t0
            r = json.loads(result.strip().splitlines()[-1])
            n, stamps = r["points"], r["stamps"]
            after = (stamps[-1] - stamps[0]) / (n - 1)
            ray_note = f" (of which starting Ray {r['ray_start']:.1f} s)" if on_ray else ""
            print(
                f"{label}: {n} points in {wall:.1f} s from interpreter start = "
                f"{n / wall:.2f} points/s; first point after {stamps[0]:.1f} s{ray_note}, "
                f"then {1 / after:.2f} points/s ({after:.3f} s a point)"
            )
            rows_by[label] = json.loads((out / "results.json").read_text())["rows"]
        first = next(iter(rows_by.values()))
        print(f"every run gave the same rows: {all(rows == first for rows in rows_by.values())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray cluster")
    ap.add_argument("--no-before", action="store_true", help="skip the old path's figures")
    ap.add_argument(
        "--search-limit",
        type=int,
        help="the points' partition search limit (default: the compile's; 0: greedy)",
    )
    args = ap.parse_args()
    if args.search_limit is not None:
        POINT["search_limit"] = args.search_limit
    env = {**os.environ, "COEC_CACHE": "0", "HF_HUB_OFFLINE": "1"}
    os.environ.update({"COEC_CACHE": "0", "HF_HUB_OFFLINE": "1"})  # every run lowers anew
    limit = POINT.get("search_limit", "the compile's")
    print(
        f"llama2-70b decode, seq 4096, {TARGET} (8 sockets), hardware launch, count-only, "
        f"search limit {limit}"
    )
    if not args.no_before:
        before(env)
    first_point(env)
    later_points()
    sweep_rates([1, 2], not args.no_ray, env)


if __name__ == "__main__":
    main()
