"""``coec sweep``: a grid over target keys and options, resumable, the same in any worker count."""

from __future__ import annotations

import json

import pytest
from conftest import EXAMPLES

from coec.cli import main
from coec.ir.errors import ConfigError
from coec.sweep import load_sweep, run_sweep

SWEEP = """format = "coec.sweep/1"
name = "tiny"
target = "sn40l-node"
[grid]
model = ["tiny-llama"]
seq = [8]
sockets = [2]
"memory.sram.capacity_MiB" = [0.001, 520]
"network.p2p_latency_us" = [0, 5]
"""


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SWEEP)
    return path


def test_a_grid_reports_every_point_and_why_some_do_not_fit(sweep_file, tmp_path):
    sweep = load_sweep(sweep_file)
    rows = run_sweep(sweep, tmp_path / "out", tmp_path)
    assert len(rows) == 4
    small = [r for r in rows if r["memory.sram.capacity_MiB"] == 0.001]
    assert all(not r["fits"] and "SRAM capacity exceeded" in r["reason"] for r in small)
    fast, slow = (
        next(r for r in rows if r["fits"] and r["network.p2p_latency_us"] == us) for us in (0, 5)
    )
    # every all-reduce pays 2(N-1) = 2 ring steps of 5 µs more: the sweep applied the key
    assert slow["seconds"] > fast["seconds"] and slow["p2p_bytes"] == fast["p2p_bytes"]


def test_two_workers_give_the_rows_of_one_and_a_rerun_resumes(sweep_file, tmp_path):
    sweep = load_sweep(sweep_file)
    one = run_sweep(sweep, tmp_path / "one", tmp_path)
    two = run_sweep(sweep, tmp_path / "two", tmp_path, jobs=2)
    assert one == two
    # a rerun finds every point done; an interrupted last line is run again
    log = tmp_path / "one" / "results.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    seen = []
    again = run_sweep(sweep, tmp_path / "one", tmp_path, progress=lambda d, t: seen.append(d))
    assert again == one
    assert seen[0] == 3  # three points read back, one run again
    assert len([x for x in log.read_text().splitlines() if x.startswith("{")]) >= 4


def test_a_seeded_sample_is_the_same_each_time(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.replace('name = "tiny"', 'name = "tiny"\nsample = 2\nseed = 7'))
    a, b = load_sweep(path).points(), load_sweep(path).points()
    assert a == b and len(a) == 2


@pytest.mark.parametrize(
    "edit, message",
    [
        ('"network.p2p_latency_us"', '"network.p2p_latencyus"'),
        ('format = "coec.sweep/1"', 'format = "coec.sweep/9"'),
        ("[grid]", "colour = 3\n[grid]"),
    ],
)
def test_a_bad_sweep_file_is_one_clear_error(tmp_path, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(SWEEP.replace(edit, message))
    with pytest.raises(ConfigError):
        load_sweep(path)


def test_sweep_cli_writes_csv_json_and_plots(sweep_file, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--quiet"]) in (None, 0)
    assert "4 points, 2 fit, 2 do not" in capsys.readouterr().out
    data = json.loads((out / "results.json").read_text())
    assert data["format"] == "coec.sweep-results/1" and len(data["rows"]) == 4
    header = (out / "results.csv").read_text().splitlines()[0]
    assert "memory.sram.capacity_MiB" in header and "seconds" in header
    assert (out / "time_vs_network_p2p_latency_us.png").read_bytes()[:4] == b"\x89PNG"


def _exit(args) -> int:
    """The exit code of ``coec ARGS``."""
    try:
        main(args)
    except SystemExit as e:
        return e.code
    return 0


# -- reuse: a model lowered once, its layers counted once and multiplied -----------------------
def _full_and_fast(name, phase, seq, layers, **options):
    """The count-only report of ``layers`` layers compiled whole (compile_zoo) and the
    sweep's (the parts lowered once, through their text, stitches of one and two layers)."""
    from coec.models.zoo import instantiate
    from coec.pipeline import Options, Pipeline
    from coec.regional import compile_zoo, lower_parts
    from coec.runtime.executor import Executor
    from coec.stitch import Parts
    from coec.sweep.compile import zoo_report

    opts = Options(**options)
    pipeline = Pipeline(opts)
    lowered = lower_parts(instantiate(name, phase, seq, layers=1), pipeline.target.sockets, "bf16")
    fast = zoo_report(Parts.from_json(lowered.to_json()), layers, pipeline)
    whole = compile_zoo(instantiate(name, phase, seq, layers=layers), opts).schedule
    _, full = Executor(whole, count_only=True).run()
    return {k: full[k] for k in fast}, fast


@pytest.mark.parametrize(
    "name, phase, seq, layers, options",
    [
        ("tiny-llama", "decode", 8, 6, {"target": "sn40l-node", "sockets": 2}),
        ("tiny-falcon", "prefill", 16, 5, {"target": "sn40l", "fusion": "epilogue"}),
        (
            "tiny-bloom",
            "decode",
            16,
            4,
            {"target": "sn40l-node", "sockets": 4, "launch": "hardware"},
        ),
        ("small-llama", "prefill", 32, 3, {"target": "sn40l-node", "fusion": "dataflow"}),
        ("tiny-mistral", "decode", 16, 3, {"target": "sn40l", "fusion": "none"}),
    ],
)
def test_the_multiplied_counts_are_the_full_compiles(name, phase, seq, layers, options):
    full, fast = _full_and_fast(name, phase, seq, layers, **options)
    assert fast == full  # every figure: kernels, FLOPs, cycles, seconds, bytes, peaks


def test_where_hbm_would_spill_the_full_model_is_compiled(tmp_path):
    # 6 tiny-llama layers (about 74 KB of weights each) in 300 KiB of HBM: placement moves
    # buffers to DDR, the layers stop being alike, and the sweep compiles all six
    from coec.backend.target import parse_target, target_data
    from coec.sweep.spec import _set

    data = target_data("sn40l")[0]
    _set(data, "memory.hbm.capacity_GiB", 300 / 2**20, "test")
    full, fast = _full_and_fast("tiny-llama", "decode", 8, 6, target=parse_target(data, "small"))
    assert full["bytes"].get("ddr->sram", 0) > 0  # it did spill
    assert fast == full


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, phase, options",
    [
        ("llama2-70b", "decode", {"target": "sn40l-node", "launch": "hardware"}),
        ("llama2-7b", "prefill", {"target": "sn40l-node"}),
        ("llama2-70b", "decode", {"target": "sn40l", "fusion": "epilogue"}),  # spills to DDR
    ],
)
def test_the_multiplied_counts_are_the_full_compiles_at_full_size(name, phase, options):
    from coec.models.zoo import get_arch

    full, fast = _full_and_fast(name, phase, 4096, get_arch(name).layers, **options)
    assert fast == full


def test_a_sweep_lowers_each_model_once(tmp_path, monkeypatch):
    import coec.sweep.compile as compile_mod

    calls = []
    real = compile_mod._lower
    monkeypatch.setattr(compile_mod, "_lower", lambda key: calls.append(key) or real(key))
    path = tmp_path / "s.toml"
    path.write_text(
        SWEEP.replace('model = ["tiny-llama"]', 'model = ["tiny-llama", "tiny-falcon"]')
    )
    rows = run_sweep(load_sweep(path), tmp_path / "out", tmp_path)
    assert len(rows) == 8 and len(calls) == 2  # 8 points, two models: two lowerings
    assert {c["model"] for c in calls} == {"tiny-llama", "tiny-falcon"}


# -- where points run -----------------------------------------------------------------------
def test_ray_gives_the_rows_of_a_local_run(sweep_file, tmp_path):
    ray = pytest.importorskip("ray")
    local = run_sweep(load_sweep(sweep_file), tmp_path / "local", tmp_path, jobs=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        seen = []
        on_ray = run_sweep(
            load_sweep(sweep_file),
            tmp_path / "ray",
            tmp_path,
            progress=lambda d, t: seen.append(d),
            ray=True,
        )
    finally:
        ray.shutdown()
    assert on_ray == local  # point for point: the same keys, values and figures
    assert seen == [0, 1, 2, 3, 4]  # streamed back one by one
    lines = (tmp_path / "ray" / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["key"] for x in lines) == sorted(r["key"] for r in local)


def test_without_ray_installed_ray_is_one_clear_error(sweep_file, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert _exit(["sweep", str(sweep_file), "--out", str(tmp_path / "o"), "--ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'coec[ray]'" in err[0]


def test_an_unreachable_ray_address_is_one_clear_error(sweep_file, tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["sweep", str(sweep_file), "--out", str(tmp_path / "o")]
    assert _exit([*args, "--ray-address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Ray cluster answers" in err[0]


# -- models given as MODEL.py files ------------------------------------------------------------
def test_a_model_file_is_swept_like_a_zoo_model(tmp_path):
    from coec.commands import compile_model_file

    model = tmp_path / "mlp.py"
    model.write_text((EXAMPLES / "mlp.py").read_text())
    path = tmp_path / "m.toml"
    path.write_text(
        'format = "coec.sweep/1"\ntarget = "sn40l"\n[grid]\nmodel = ["mlp.py"]\n'
        'fusion = ["none", "dataflow"]\nsockets = [1, 2]\n'
    )
    rows = run_sweep(load_sweep(path), tmp_path / "out", tmp_path)
    for r in rows:
        if r["sockets"] == 2:  # a model file compiles for one socket
            assert not r["fits"] and "tensor parallelism" in r["reason"]
            continue
        report = compile_model_file(model, fusion=r["fusion"], target="sn40l").report
        assert r["fits"] and r["seconds"] == report["seconds"]
        assert r["kernels"] == report["kernels"] and r["peak_hbm"] == report["peak_bytes"]["hbm"]
    # an edited model file is a new point: its rows run again
    keys = {r["key"] for r in rows}
    model.write_text(model.read_text() + "\n# edited\n")
    assert keys.isdisjoint(
        r["key"] for r in run_sweep(load_sweep(path), tmp_path / "out", tmp_path)
    )


# -- results people use ---------------------------------------------------------------------
def test_results_are_a_versioned_parquet_table_with_a_column_per_value(sweep_file, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from coec.sweep import write_results

    sweep = load_sweep(sweep_file)
    rows = run_sweep(sweep, tmp_path / "out", tmp_path)
    write_results(sweep, rows, tmp_path / "out")
    table = pq.read_table(tmp_path / "out" / "results.parquet")
    meta = table.schema.metadata
    assert meta[b"format"] == b"coec.sweep-results/1" and json.loads(meta[b"grid"]) == sweep.grid
    assert table.schema.field("seconds").metadata == {b"unit": b"s"}
    assert table.column_names[1:6] == list(sweep.grid)
    assert table.to_pylist() == [{c: r.get(c) for c in table.column_names} for r in rows]
    csv_rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert csv_rows[0].split(",") == table.column_names and len(csv_rows) == 1 + len(rows)


def test_the_pareto_front_keeps_only_the_points_nothing_beats():
    from coec.sweep import pareto_front

    rows = [
        {"fits": True, "t": t, "m": m, "i": i}
        for i, (t, m) in enumerate(
            [(1, 9), (2, 5), (2, 7), (3, 5), (4, 1), (4, 1), (5, 0.5), (6, 2)]
        )
    ] + [{"fits": False, "t": None, "m": None, "i": 99}]
    front = [r["i"] for r in pareto_front(rows, "t", "m")]
    assert front == [0, 1, 4, 5, 6]
    for r in (r for r in rows if r["fits"]):  # a point is off the front iff another beats it
        beaten = any(
            o["t"] <= r["t"] and o["m"] <= r["m"] and (o["t"], o["m"]) != (r["t"], r["m"])
            for o in rows
            if o["fits"]
        )
        assert beaten == (r["i"] not in front)


def test_a_pareto_front_is_drawn_for_each_workload():
    from coec.sweep import pareto_front

    rows = [
        {"fits": True, "model": m, "t": t, "m": mem}
        for m, t, mem in [("a", 1, 5), ("a", 2, 1), ("a", 3, 3), ("b", 10, 9), ("b", 20, 2)]
    ]
    # across workloads "a" beats every "b"; for each, b's two points are its front
    assert [(r["model"], r["t"]) for r in pareto_front(rows, "t", "m")] == [("a", 1), ("a", 2)]
    front = pareto_front(rows, "t", "m", by=["model"])
    assert [(r["model"], r["t"]) for r in front] == [("a", 1), ("a", 2), ("b", 10), ("b", 20)]


def test_sweep_cli_lists_and_plots_the_pareto_front(sweep_file, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["sweep", str(sweep_file), "--out", str(out), "--quiet"]
    assert main([*args, "--pareto", "seconds,network.p2p_latency_us"]) in (None, 0)
    printed = capsys.readouterr().out
    assert "Pareto front of seconds and network.p2p_latency_us" in printed
    front = (out / "pareto.csv").read_text().splitlines()
    assert len(front) == 2 and ",0," in front[1]  # latency 0 is faster: it alone is the front
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "figures_vs_network_p2p_latency_us.png").read_bytes()[:4] == b"\x89PNG"
    assert _exit([*args, "--pareto", "seconds,colour"]) == 2


def test_off_a_terminal_progress_is_a_plain_line(sweep_file, tmp_path, capsys):
    assert main(["sweep", str(sweep_file), "--out", str(tmp_path / "o")]) in (None, 0)
    err = capsys.readouterr().err.splitlines()
    assert err and all(line.startswith("sweep tiny: ") for line in err)
    assert err[-1].startswith("sweep tiny: 4/4 points")


def test_on_a_terminal_progress_is_a_bar_with_the_time_left(
    sweep_file, tmp_path, capsys, monkeypatch
):
    import coec.cli

    monkeypatch.setattr(coec.cli, "_stderr_is_terminal", lambda: True)
    assert main(["sweep", str(sweep_file), "--out", str(tmp_path / "o")]) in (None, 0)
    err = capsys.readouterr().err
    assert "sweep tiny" in err and "points/s" not in err  # rich's bar, not the plain line
    assert "-:--:--" in err  # the time left, not yet known as the bar starts


def test_the_partition_search_limit_is_swept_like_any_option(tmp_path):
    """search_limit = 0 keeps the greedy partition; the searched one is never slower."""
    path = tmp_path / "search.toml"
    path.write_text(
        'format = "coec.sweep/1"\ntarget = "sn40l"\n[grid]\nmodel = ["tiny-llama"]\n'
        'phase = ["prefill"]\nseq = [64]\nsearch_limit = [0, 2000]\n'
    )
    rows = run_sweep(load_sweep(path), tmp_path / "out", tmp_path)
    greedy, searched = sorted(rows, key=lambda r: r["search_limit"])
    assert greedy["search_limit"] == 0 and searched["search_limit"] == 2000
    assert searched["seconds"] <= greedy["seconds"]
