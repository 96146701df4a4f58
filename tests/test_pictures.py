"""Pictures of schedules: Chrome/Perfetto traces that add up to the report, report --plot
files (roofline, tier occupancy, kernel graph), and progress bars for long compiles."""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict

import pytest
from conftest import EXAMPLES

from coec.backend.cost import tier_bytes
from coec.backend.schedule import load as load_schedule
from coec.backend.schedule import peak_occupancy, resident_bytes
from coec.backend.target import load_target
from coec.cli import main
from coec.report.plots import (
    collapse_repeats,
    kernel_graph,
    occupancy,
    repeated_runs,
    roofline_points,
)
from coec.report.trace import (
    BANDWIDTH_COUNTERS,
    OCCUPANCY_COUNTERS,
    TRACKS,
    stage_count,
    trace_events,
    track_names,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _run(argv, capsys) -> tuple[str, str]:
    main([str(a) for a in argv])
    return capsys.readouterr()


def _one_error(argv, capsys, *needles) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code != 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err
    return err


@pytest.fixture(scope="module")
def two_sockets(tmp_path_factory):
    """tiny-llama on 2 sockets, count-only: its schedule and the trace `coec compile` wrote."""
    out = tmp_path_factory.mktemp("tl2")
    schedule, trace = out / "tl2.json", out / "trace.json"
    argv = ["compile", "--zoo", "tiny-llama", "--sockets", "2", "--fusion", "dataflow"]
    main([*argv, "-o", str(schedule), "--trace", str(trace), "--json", "--quiet"])
    return schedule, trace


def check_trace(trace: dict, report: dict, sockets: int) -> None:
    """Everything the trace promises, against the runtime's report."""
    assert trace["displayTimeUnit"] == "ns"
    events = trace["traceEvents"]
    assert trace["otherData"]["format"] == "coec.trace/2"
    assert {"X", "M", "C"} <= {e["ph"] for e in events} <= {"X", "M", "C", "s", "f"}
    slices = [e for e in events if e["ph"] == "X"]
    for e in slices:
        assert {"ph", "ts", "dur", "pid", "tid", "name"} <= set(e) and e["dur"] >= 0
    names = {(e["pid"], e["tid"], e["args"]["name"]) for e in events if e["name"] == "thread_name"}
    tracks_of_a_socket = list(enumerate(track_names(stage_count(report))))
    assert names == {(p, t, track) for p in range(sockets) for t, track in tracks_of_a_socket}
    assert stage_count(report) == max(len(k["stage_pcus"]) for k in report["per_kernel"])
    processes = {e["pid"] for e in events if e["name"] == "process_name"}
    assert processes == {e["pid"] for e in slices} == set(range(sockets))
    tracks = defaultdict(list)
    for e in slices:
        tracks[(e["pid"], e["tid"])].append(e)
    for spans in tracks.values():  # no two slices of one track overlap
        spans.sort(key=lambda e: e["ts"])
        for a, b in zip(spans, spans[1:], strict=False):
            assert a["ts"] + a["dur"] <= b["ts"] + 1e-6, (a["name"], b["name"])
    total_us = report["seconds"] * 1e6
    for pid in range(sockets):  # SPMD: every socket shows the same schedule
        pcu = tracks[(pid, 0)]
        assert sum(e["dur"] for e in pcu) == pytest.approx(total_us, rel=1e-9)
        assert pcu[-1]["ts"] + pcu[-1]["dur"] == pytest.approx(total_us, rel=1e-9)
        kernels = [e for e in pcu if e["cat"] == "kernel"]
        assert [e["name"] for e in kernels] == [k["name"] for k in report["per_kernel"]]
        launches = [e for e in pcu if e["cat"] == "launch"]
        assert len(launches) == sum(1 for k in report["per_kernel"] if k["launch_cycles"])
        moved = defaultdict(int)
        for e in kernels:
            for pair, n in e["args"]["bytes"].items():
                moved[pair] += n
        assert dict(moved) == report["bytes"]
        assert sum(e["args"]["flops"] for e in kernels) == report["flops"]
        assert [e["args"]["ops"] for e in kernels] == [k["ops"] for k in report["per_kernel"]]
        span = {e["name"]: (e["ts"], e["ts"] + e["dur"]) for e in kernels}
        for tid, track in enumerate(TRACKS[1:], start=1):
            tier = track.lower()
            dmas = tracks.get((pid, tid), [])
            assert sum(e["args"]["bytes"] for e in dmas) == tier_bytes(report["bytes"], tier)
            for e in dmas:  # a kernel's DMAs lie within the kernel
                start, end = span[e["args"]["kernel"]]
                assert start - 1e-6 <= e["ts"] and e["ts"] + e["dur"] <= end + 1e-6
        check_stages(tracks, pid, report)
        check_counters(events, pid, report)


def check_stages(tracks: dict, pid: int, report: dict) -> None:
    """Each kernel's stage slices: one per stage, on its own track, with its op and PCUs,
    within the kernel's compute and fill; per phase, the slowest stage is the kernel's
    compute (the cost model's ``compute_cycles`` is the sum of each phase's slowest)."""
    us = report["seconds"] * 1e6 / report["cycles"]
    kernels = {e["name"]: e for e in tracks[(pid, 0)] if e["cat"] == "kernel"}
    stages = defaultdict(list)
    for (p, tid), spans in tracks.items():
        if p == pid and tid >= len(TRACKS):
            for e in spans:
                assert e["cat"] == "stage"
                stages[e["args"]["kernel"]].append(e)
    for k in report["per_kernel"]:
        mine = sorted(stages[k["name"]], key=lambda e: e["tid"])
        assert [e["tid"] - len(TRACKS) for e in mine] == list(range(len(k["stage_pcus"])))
        assert [e["args"]["pcus"] for e in mine] == k["stage_pcus"]
        assert [e["args"]["op"] for e in mine] == k["stage_ops"]
        assert all(op in k["ops"] for op in k["stage_ops"])
        body = kernels[k["name"]]["ts"]
        slowest = defaultdict(float)
        for e in mine:
            assert e["ts"] >= body - 1e-6
            end = e["ts"] + e["dur"] - body
            assert end <= (k["compute_cycles"] + k["fill_cycles"]) * us * (1 + 1e-9) + 1e-6
            phase = e["args"]["phase"]
            slowest[phase] = max(slowest[phase], e["dur"])
        assert sum(slowest.values()) == pytest.approx(k["compute_cycles"] * us, rel=1e-9)


def check_counters(events: list, pid: int, report: dict) -> None:
    """A sample of every counter at each kernel's start: SRAM its working set, the bandwidths
    the bytes it moves through each tier over its time."""
    samples = defaultdict(list)
    for e in events:
        if e["ph"] == "C" and e["pid"] == pid:
            samples[e["name"]].append(e["args"]["value"])
    assert set(samples) == {*OCCUPANCY_COUNTERS, *BANDWIDTH_COUNTERS}
    kernels = report["per_kernel"]
    assert samples["SRAM bytes"] == [k["sram_bytes"] for k in kernels] + [0]
    for name in BANDWIDTH_COUNTERS:
        tier = name.split()[0].lower()
        rates = [tier_bytes(k["bytes"], tier) / k["seconds"] for k in kernels]
        assert samples[name] == pytest.approx([*rates, 0])
    assert len(samples["HBM bytes"]) == len(samples["DDR bytes"]) == len(kernels)


@pytest.mark.parametrize(
    "argv",
    [
        ["compile", EXAMPLES / "gpt_block.py", "--run"],
        ["compile", EXAMPLES / "llama_block.py", "--fusion", "dataflow"],  # count-only
    ],
)
def test_trace_is_valid_and_adds_up(tmp_path, capsys, argv):
    path = tmp_path / "trace.json"
    out, _ = _run([*argv, "--trace", path, "--json"], capsys)
    check_trace(json.loads(path.read_text()), json.loads(out), sockets=1)


def test_trace_of_two_sockets_has_a_process_per_socket(two_sockets, capsys):
    schedule, trace = two_sockets
    out, _ = _run(["run", schedule, "--count-only", "--json"], capsys)
    report = json.loads(out)
    assert report["bytes"]["sram->p2p"] > 0  # the all-reduces: the P2P track has slices
    check_trace(json.loads(trace.read_text()), report, sockets=2)


def test_trace_flows_pair_each_collective_across_sockets(two_sockets):
    """Every kernel with a P2P slice has one flow per socket, from its P2P slice on socket s
    to the same kernel's P2P slice on socket s+1: the ring's next hop."""
    _, trace = two_sockets
    events = json.loads(trace.read_text())["traceEvents"]
    p2p = {
        (e["pid"], e["args"]["kernel"]): e
        for e in events
        if e["ph"] == "X" and e["tid"] == TRACKS.index("P2P")
    }
    assert p2p
    ends = defaultdict(dict)
    for e in events:
        if e["ph"] in ("s", "f"):
            assert e["tid"] == TRACKS.index("P2P") and e["name"].endswith(" ring")
            ends[e["id"]][e["ph"]] = e
    assert len(ends) == len(p2p)  # one flow per (socket, kernel with a collective)
    starts = set()
    for pair in ends.values():
        assert set(pair) == {"s", "f"}
        s, f = pair["s"], pair["f"]
        assert f["pid"] == (s["pid"] + 1) % 2 and f["bp"] == "e" and s["name"] == f["name"]
        kernel = s["name"].removesuffix(" ring")
        for end in (s, f):  # each end lies on its socket's P2P slice of that kernel
            slice_ = p2p[(end["pid"], kernel)]
            assert slice_["ts"] <= end["ts"] <= slice_["ts"] + slice_["dur"]
        starts.add((s["pid"], kernel))
    assert starts == set(p2p)


def test_trace_of_a_two_socket_run_shows_each_sockets_own_report(tmp_path, capsys):
    """Executed on 2 sockets, each socket's process comes from that socket's own report."""
    trace = tmp_path / "trace.json"
    argv = ["compile", "--zoo", "tiny-llama", "--sockets", "2", "--phase", "decode", "--run"]
    out, _ = _run([*argv, "--trace", trace, "--json", "--quiet"], capsys)
    data = json.loads(trace.read_text())
    assert data["otherData"]["spmd"] is False
    check_trace(data, json.loads(out), sockets=2)


def test_trace_occupancy_counters_by_hand(tmp_path, capsys):
    """The MLP unfused (matmul, bias add, relu, matmul, bias add), bf16: the weights and the
    input stay in HBM throughout; each kernel's result lives from it to the kernel after."""
    schedule, trace = tmp_path / "mlp.json", tmp_path / "trace.json"
    argv = ["compile", EXAMPLES / "mlp.py", "--fusion", "none", "-o", schedule, "--json"]
    out, _ = _run([*argv, "--trace", trace], capsys)
    report = json.loads(out)
    events = json.loads(trace.read_text())["traceEvents"]
    hbm = [e["args"]["value"] for e in events if e["ph"] == "C" and e["name"] == "HBM bytes"]
    bf16 = 2
    resident = bf16 * (8 * 64 + 128 * 64 + 128 + 32 * 128 + 32)  # x, fc1, fc2
    hidden, out_ = bf16 * 8 * 128, bf16 * 8 * 32  # fc1's result (and relu's), fc2's
    expected = [hidden, 2 * hidden, 2 * hidden, hidden + out_, 2 * out_]
    assert hbm == [resident + x for x in expected]
    ddr = [e["args"]["value"] for e in events if e["ph"] == "C" and e["name"] == "DDR bytes"]
    assert ddr == [0] * 5
    assert max(hbm) == peak_occupancy(load_schedule(schedule))["hbm"]
    check_trace(json.loads(trace.read_text()), report, sockets=1)


def test_trace_of_each_sockets_own_report():
    """Given each socket's report, each process shows its own kernels (not SPMD copies)."""

    def report(name: str, cycles: int) -> dict:
        k = {"name": name, "ops": ["add"], "flops": 1, "bytes": {}, "cycles": cycles}
        k |= {"seconds": cycles / 1e9, "launch_cycles": 0, "sram_bytes": 0}
        return {"kernels": 1, "cycles": cycles, "seconds": cycles / 1e9, "per_kernel": [k]}

    a, b = report("a", 100), report("b", 300)
    trace = trace_events(a, sockets=2, socket_reports=[a, b])
    kernels = {(e["pid"], e["name"], e["dur"]) for e in trace["traceEvents"] if e["ph"] == "X"}
    assert {(p, n) for p, n, _ in kernels} == {(0, "a"), (1, "b")}
    assert trace["otherData"]["spmd"] is False
    assert trace_events(a, sockets=2)["otherData"]["spmd"] is True
    with pytest.raises(ValueError, match="1 socket reports for 2 sockets"):
        trace_events(a, sockets=2, socket_reports=[a])


def test_trace_of_a_saved_schedule_executed(tmp_path, capsys):
    schedule, trace = tmp_path / "mlp.json", tmp_path / "trace.json"
    _run(["compile", EXAMPLES / "mlp.py", "-o", schedule], capsys)
    out, _ = _run(["run", schedule, "--trace", trace, "--json"], capsys)
    check_trace(json.loads(trace.read_text()), json.loads(out), sockets=1)


def test_trace_times_by_hand():
    """Two kernels on a 1 GHz clock (1 cycle = 0.001 µs): every slice's place, exactly."""
    kernels = [
        {
            "name": "a",
            "ops": ["matmul"],
            "flops": 10,
            "bytes": {"hbm->sram": 64},
            "bound": "compute",
        }
        | {"cycles": 1000, "seconds": 1e-6, "launch_cycles": 200, "compute_cycles": 800}
        | {"hbm_cycles": 500, "ddr_cycles": 0, "p2p_cycles": 0, "fill_cycles": 0},
        {"name": "b", "ops": ["add"], "flops": 4, "bytes": {"ddr->sram": 96, "sram->hbm": 32}}
        | {"bound": "ddr", "cycles": 3000, "seconds": 3e-6, "launch_cycles": 200}
        | {"compute_cycles": 100, "hbm_cycles": 1000, "ddr_cycles": 2700, "p2p_cycles": 0}
        | {"fill_cycles": 100},
    ]
    report = {"kernels": 2, "cycles": 4000, "seconds": 4e-6, "flops": 14, "per_kernel": kernels}
    got = {
        (e["tid"], e["name"]): (
            round(e["ts"], 9),
            round(e["dur"], 9),
            e.get("args", {}).get("bytes"),
        )
        for e in trace_events(report)["traceEvents"]
        if e["ph"] == "X"
    }
    assert got == {
        (0, "launch a"): (0.0, 0.2, None),
        (0, "a"): (0.2, 0.8, {"hbm->sram": 64}),
        (1, "a HBM"): (0.2, 0.5, 64),
        (0, "launch b"): (1.0, 0.2, None),
        (0, "b"): (1.2, 2.8, {"ddr->sram": 96, "sram->hbm": 32}),
        (1, "b HBM"): (1.2, 1.0, 32),
        (2, "b DDR"): (1.2, 2.7, 96),
    }


def test_trace_to_an_unwritable_place_is_one_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    _one_error(
        ["compile", EXAMPLES / "mlp.py", "--trace", blocker / "trace.json"], capsys, "cannot write"
    )


def _dot_counts(dot: str) -> tuple[set[str], int]:
    nodes = set(re.findall(r'^  "([^"]+)" \[', dot, re.M))
    return nodes, len(re.findall(r"^  .* -> .*;$", dot, re.M))


def check_plots(out, schedule_path, stdout: str) -> None:
    schedule = load_schedule(schedule_path)
    for name in ("roofline.png", "tiers.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000
    svg = (out / "roofline.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "arithmetic intensity" in svg
    dot = (out / "kernels.dot").read_text()
    assert dot.startswith("digraph kernels {") and dot.rstrip().endswith("}")
    nodes, _ = _dot_counts(dot)
    kernels = {k["name"] for k in schedule["kernels"]}
    assert {n for n in nodes if ":" not in n} <= kernels
    # repeated kernels drawn once: every other kernel is a node of its own
    runs = re.findall(r'label="×(\d+): (\d+) kernels?, repeated"', dot)
    folded = sum((int(reps) - 1) * int(period) for reps, period in runs)
    assert len(kernels & nodes) == len(kernels) - folded
    buffers, roots = schedule["buffers"], set()
    for name in schedule["outputs"]:
        while "alias_of" in buffers[name]:
            name = buffers[name]["alias_of"]
        roots.add(f"out:{name}")
    assert {n for n in nodes if n.startswith("out:")} <= roots
    if shutil.which("dot"):
        assert (out / "kernels.png").read_bytes()[:8] == PNG
        assert "<svg" in (out / "kernels.svg").read_text()
    else:
        assert "Graphviz 'dot' not found" in stdout
    n = len(schedule["kernels"])
    assert f": {n} kernel{'s' if n != 1 else ''}, " in stdout and "peak resident" in stdout


def test_report_plots_for_an_example(tmp_path, capsys):
    schedule = tmp_path / "mlp.json"
    _run(["compile", EXAMPLES / "mlp.py", "--fusion", "dataflow", "-o", schedule], capsys)
    out = tmp_path / "plots"
    stdout, _ = _run(["report", schedule, "--plot", out], capsys)
    check_plots(out, schedule, stdout)
    nodes, edges = _dot_counts((out / "kernels.dot").read_text())
    assert nodes == {"k0", "in:x", "out:linear"} and edges == 2  # x -> k0 -> output
    executed, _ = _run(["report", schedule, "--run"], capsys)  # executed: the same figures
    headline = [line for line in stdout.splitlines() if "kernels," in line]
    assert headline == [line for line in executed.splitlines() if "kernels," in line]
    assert "wrote" not in executed  # no --plot: the summary only


def test_report_plots_for_two_sockets(two_sockets, tmp_path, capsys):
    schedule, _ = two_sockets
    out = tmp_path / "plots"
    stdout, _ = _run(["report", schedule, "--plot", out], capsys)
    check_plots(out, schedule, stdout)
    assert "×2 sockets" in stdout and "per socket" in stdout
    dot = (out / "kernels.dot").read_text()
    # embedding -> layer 0 -> layer 1 -> head, each layer also giving its K/V cache out
    # (the two layers' kernels are alike: drawn once, the second's edges folded onto it)
    for edge in ('"k0" -> "k1"', '"k1" -> "k1"', '"k1" -> "k3"', '"in:input_ids" -> "k0"'):
        assert edge in dot
    assert '"k2"' not in dot and '"k1" [label="k1 ×2\\n' in dot
    _one_error(["report", schedule, "--run"], capsys, "2 sockets", "count-only")


def test_report_without_graphviz_writes_the_dot_and_says_so(
    two_sockets, tmp_path, capsys, monkeypatch
):
    schedule, _ = two_sockets
    out = tmp_path / "plots"
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "dot" else real_which(name))
    stdout, _ = _run(["report", schedule, "--plot", out], capsys)
    assert "Graphviz 'dot' not found" in stdout
    assert (out / "kernels.dot").exists() and not (out / "kernels.svg").exists()


def test_report_of_a_missing_schedule_is_one_error(tmp_path, capsys):
    _one_error(["report", tmp_path / "absent.json", "--plot", tmp_path], capsys, "absent.json")


def test_roofline_points_and_occupancy_add_up(two_sockets, capsys):
    schedule_path, _ = two_sockets
    schedule = load_schedule(schedule_path)
    out, _ = _run(["run", schedule_path, "--count-only", "--json"], capsys)
    report = json.loads(out)
    points, skipped = roofline_points(report)
    # on 2 sockets the embedding's kernel masks the ids outside its vocabulary shard: every
    # kernel does arithmetic; on one socket the embedding is a lone gather, with none
    assert skipped == []
    argv = ["compile", "--zoo", "tiny-llama", "--layers", "1", "--fusion", "dataflow"]
    one, _ = _run([*argv, "--json", "--quiet"], capsys)
    assert roofline_points(json.loads(one))[1] == ["k0"]
    for p, k in zip(points, report["per_kernel"], strict=True):
        moved = sum(n for pair, n in k["bytes"].items() if "hbm" in pair or "ddr" in pair)
        assert p.intensity == k["flops"] / moved
        assert p.flops_per_s == pytest.approx(k["flops"] / k["seconds"])
        assert p.flops_per_s <= load_target("sn40l").compute.peak_matmul_flops
    resident = occupancy(schedule, report)
    n = len(schedule["kernels"])
    for i in range(n):  # by brute force over the buffers' live ranges
        live = sum(
            b["bytes"]
            for b in schedule["buffers"].values()
            if b["tier"] == "hbm" and "alias_of" not in b and b["live"][0] <= i <= b["live"][1]
        )
        assert sum(series[i] for series in resident["hbm"].values()) == live
    assert resident["sram"]["kernel working set"] == [k["sram_bytes"] for k in report["per_kernel"]]
    assert (
        max(map(sum, zip(*resident["hbm"].values(), strict=True)))
        == peak_occupancy(schedule)["hbm"]
    )
    assert set(resident_bytes(schedule)) == {
        ("hbm", "activation"),
        ("hbm", "input"),
        ("hbm", "weight"),
    }
    g = kernel_graph(schedule, report)
    # the hidden state the embedding's all-reduce hands the first layer
    assert g.edges["k0", "k1"]["buffers"] == ["all_reduce"]
    assert g.edges["k0", "k1"]["bytes"] == schedule["buffers"]["all_reduce"]["bytes"]


def test_zoo_compile_reports_progress_step_by_step():
    from coec.commands import compile_zoo_model

    calls = []
    compile_zoo_model(
        "tiny-llama", layers=3, fusion="dataflow", progress=lambda *a: calls.append(a)
    )
    done = [d for d, _, _ in calls]
    totals = {t for _, t, _ in calls}
    assert done == sorted(done) and done[0] == 0
    assert totals == {done[-1]} == {2 + 3 + 3 + 2}  # build, 3 parts, 3 layers, place+emit, count
    whats = [w for _, _, w in calls]
    for what in ("building tiny-llama", "layer 1/3", "layer 3/3", "placing memory", "counting"):
        assert any(what in w for w in whats), what


def test_progress_only_on_a_terminal_and_not_when_quiet(tmp_path, capsys, monkeypatch):
    import coec.cli

    argv = ["compile", "--zoo", "tiny-llama", "--layers", "1", "--json"]
    _, err = _run(argv, capsys)  # stderr is not a terminal here
    assert err == ""
    monkeypatch.setattr(coec.cli, "_stderr_is_terminal", lambda: True)
    _, err = _run([*argv, "--quiet"], capsys)
    assert err == ""
    _, err = _run(argv, capsys)
    assert "tiny-llama" in err  # the bar, drawn on stderr (stdout keeps the JSON)


def test_repeated_runs_find_the_layers():
    assert repeated_runs(["embed", "L", "L", "L", "head"]) == [(1, 1, 3)]
    assert repeated_runs(list("eabababh")) == [(1, 2, 3)]  # a two-kernel layer, three times
    assert repeated_runs(list("abc")) == []
    assert repeated_runs(list("aabcbc")) == [(0, 1, 2), (2, 2, 2)]


@pytest.mark.parametrize("fusion", ["dataflow", "none"])
def test_kernel_graph_collapses_repeated_layers(tmp_path, capsys, fusion):
    """tiny-llama decode with 4 layers and with 3: the layer's kernels (those 4 layers have
    one layer more of than 3) are drawn once each, with their repeat count; the rest
    (embedding, head) once, as they are."""

    def compile_(layers: int):
        path = tmp_path / f"tl{layers}.json"
        argv = ["compile", "--zoo", "tiny-llama", "--phase", "decode", "--fusion", fusion]
        _run([*argv, "--layers", layers, "-o", path, "--quiet"], capsys)
        return load_schedule(path)

    three, four = compile_(3), compile_(4)
    per_layer = len(four["kernels"]) - len(three["kernels"])
    assert per_layer >= 1
    out = tmp_path / "plots"
    stdout, _ = _run(["report", tmp_path / "tl4.json", "--plot", out], capsys)
    check_plots(out, tmp_path / "tl4.json", stdout)
    dot = (out / "kernels.dot").read_text()
    nodes, _ = _dot_counts(dot)
    kernels = [k["name"] for k in four["kernels"]]
    drawn = [k for k in kernels if k in nodes]
    assert len(drawn) == len(kernels) - 3 * per_layer  # one layer of four drawn
    assert len(re.findall(r'\[label="k\d+ ×4\\n', dot)) == per_layer
    assert f'label="×4: {per_layer} kernel' in dot
    report = json.loads(_run(["run", tmp_path / "tl4.json", "--count-only", "--json"], capsys)[0])
    g = collapse_repeats(kernel_graph(four, report))
    assert g.graph["runs"][-1][1:] == (per_layer, 4)
    layer = [n for n, a in g.nodes(data=True) if a.get("repeats", 1) == 4]
    assert len(layer) == per_layer
    signatures = [(tuple(k["ops"]), k["flops"], k["bytes"]) for k in report["per_kernel"]]
    for n in layer:  # each stands for four alike kernels, one a layer apart
        i = kernels.index(n)
        assert all(signatures[i + j * per_layer] == signatures[i] for j in range(4))
