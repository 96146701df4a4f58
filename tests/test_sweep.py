"""``coec sweep``: a grid over target keys and options, resumable, the same in any worker count."""

from __future__ import annotations

import json

import pytest

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
