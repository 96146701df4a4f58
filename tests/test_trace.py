"""Chrome/Perfetto traces of executed schedules: valid events, tracks that add up."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from conftest import EXAMPLES

from coec.cli import main


def _trace(tmp_path, argv):
    path = tmp_path / "trace.json"
    main([*argv, "--trace", str(path), "--json"])
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    "argv, sockets",
    [
        (["compile", str(EXAMPLES / "gpt_block.py"), "--run"], 1),
        (["compile", str(EXAMPLES / "llama_block.py"), "--fusion", "dataflow"], 1),
        (["compile", "--zoo", "tiny-llama", "--sockets", "2", "--fusion", "dataflow"], 2),
    ],
)
def test_trace_is_valid_and_adds_up(tmp_path, capsys, argv, sockets):
    trace = _trace(tmp_path, argv)
    report = json.loads(capsys.readouterr().out)
    events = trace["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert slices and all(e["ph"] in ("X", "M") for e in events)
    for e in slices:
        assert {"ph", "ts", "dur", "pid", "tid", "name"} <= set(e) and e["dur"] >= 0
    assert {e["pid"] for e in slices} == set(range(sockets))
    tracks = defaultdict(list)
    for e in slices:
        tracks[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for spans in tracks.values():  # no two slices of one track overlap
        spans.sort()
        assert all(a[1] <= b[0] + 1e-9 for a, b in zip(spans, spans[1:], strict=False))
    pcu = [e for e in slices if e["pid"] == 0 and e["tid"] == 0]
    assert sum(e["dur"] for e in pcu) == pytest.approx(report["seconds"] * 1e6)
    kernels = [e for e in pcu if e["cat"] == "kernel"]
    assert len(kernels) == report["kernels"]
    moved = defaultdict(int)
    for e in kernels:
        for pair, n in e["args"]["bytes"].items():
            moved[pair] += n
    assert dict(moved) == report["bytes"]
    assert sum(e["args"]["flops"] for e in kernels) == report["flops"]


def test_trace_of_a_saved_schedule(tmp_path, capsys):
    schedule = tmp_path / "mlp.json"
    main(["compile", str(EXAMPLES / "mlp.py"), "-o", str(schedule)])
    capsys.readouterr()
    trace = _trace(tmp_path, ["run", str(schedule)])
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert {"socket 0", "PCU array", "HBM", "DDR", "P2P"} <= names


def test_report_plots_are_written(tmp_path, capsys):
    schedule = tmp_path / "gpt.json"
    main(["compile", str(EXAMPLES / "gpt_block.py"), "--fusion", "epilogue", "-o", str(schedule)])
    capsys.readouterr()
    out = tmp_path / "plots"
    main(["report", str(schedule), "--plot", str(out)])
    for name in ("roofline.png", "tiers.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "roofline.svg").read_text().lstrip().startswith("<?xml")
    dot = (out / "kernels.dot").read_text()
    assert dot.startswith("digraph kernels") and dot.count("->") >= 1
    assert "kernels" in capsys.readouterr().out
