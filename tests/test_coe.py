"""Composition of Experts: coe.toml, placement, the expert cache and serving."""

from __future__ import annotations

import json

import pytest
from conftest import EXAMPLES

from coec.backend.target import load_target
from coec.cli import main
from coec.coe import profile
from coec.coe.commands import compile_coe, load
from coec.coe.config import parse_coe
from coec.coe.profile import Node, place
from coec.coe.serve import ExpertCache, simulate, synthetic_experts
from coec.ir.errors import CapacityError, ConfigError

CATEGORIES = ["coding", "math"]


def _serve(chosen, cache_bytes, policy="lru", nbytes=1_000_000, copy=1e9, batch=1):
    names = sorted(set(chosen))
    return simulate(
        chosen,
        batch=batch,
        router_s=1e-4,
        expert_bytes=dict.fromkeys(names, nbytes),
        expert_s=lambda _n, b: 2e-3 * b,
        copy_Bps=copy,
        cache_bytes=cache_bytes,
        policy=policy,
    )


def test_switch_time_is_expert_bytes_over_copy_bandwidth():
    served = _serve(["a", "b", "a"], cache_bytes=3_000_000, nbytes=1_500_000, copy=3e9)
    switches = [r["switch_s"] for r in served.rows]
    assert switches == [1_500_000 / 3e9, 1_500_000 / 3e9, 0.0]  # a, b copied; a resident
    first = served.rows[0]
    assert first["latency_s"] == pytest.approx(1e-4 + 1_500_000 / 3e9 + 2e-3)
    assert served.totals()["hit_rate"] == pytest.approx(1 / 3)


def test_cache_keeps_a_popular_expert_resident():
    trace = ["pop", "x", "pop", "y", "pop", "z", "pop"]
    served = _serve(trace, cache_bytes=2_000_000)  # room for two experts
    assert [r["hit"] for r in served.rows if r["expert"] == "pop"] == [False, True, True, True]


def test_skewed_traffic_hits_more_than_uniform():
    names = [f"e{i}" for i in range(20)]
    uniform = _serve(synthetic_experts(names, 400, 0.0, seed=1), cache_bytes=4_000_000)
    skewed = _serve(synthetic_experts(names, 400, 1.5, seed=1), cache_bytes=4_000_000)
    assert skewed.totals()["hit_rate"] > uniform.totals()["hit_rate"] + 0.2


def test_lru_and_lfu_differ_as_predicted():
    trace = ["a", "a", "a", "b", "c", "a"]
    # room for two: at "c", LRU evicts a (least recent), LFU evicts b (used once)
    lru = _serve(trace, cache_bytes=2_000_000, policy="lru")
    lfu = _serve(trace, cache_bytes=2_000_000, policy="lfu")
    assert [r["hit"] for r in lru.rows] == [False, True, True, False, False, False]
    assert [r["hit"] for r in lfu.rows] == [False, True, True, False, False, True]


def test_a_batch_runs_the_router_once_and_each_expert_once():
    served = _serve(["a", "b", "a", "a"], cache_bytes=2_000_000, batch=4)
    t = served.totals()
    assert t["router_s"] == pytest.approx(1e-4) and t["expert_activations"] == 2
    assert t["expert_s"] == pytest.approx(2e-3 * 3 + 2e-3 * 1)  # a runs 3 prompts together


def test_cache_rejects_unknown_policy():
    with pytest.raises(ConfigError, match="policy"):
        ExpertCache(10, "fifo")


def _data(**over):
    data = {
        "format": "coec.coe/1",
        "experts": {"coder": {"zoo": "tiny-llama"}, "solver": {"zoo": "tiny-llama", "count": 3}},
        "categories": {"coding": "coder", "math": "solver"},
    }
    data.update(over)
    return data


def test_config_parses_counts_and_groups():
    coe = parse_coe(_data(), "c.toml", CATEGORIES)
    assert [e.name for e in coe.experts] == ["coder", "solver-0", "solver-1", "solver-2"]
    assert coe.categories == {"coding": "coder", "math": "solver-0"}


@pytest.mark.parametrize(
    "over, message",
    [
        ({"expertz": {}}, "unknown key 'expertz'"),
        ({"categories": {"coding": "coder"}}, "'math' is mapped to no expert"),
        ({"categories": {"coding": "coder", "math": "nobody"}}, "unknown expert 'nobody'"),
        ({"experts": {"coder": {"zoo": "gpt-9"}}}, "'gpt-9' is not in the zoo"),
        ({"serving": {"policy": "fifo"}}, "policy 'fifo'"),
        ({"format": "coec.coe/9"}, "format"),
    ],
)
def test_config_errors_are_one_line(over, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_coe(_data(**over), "c.toml", CATEGORIES)
    assert "c.toml" in str(info.value) and "\n" not in str(info.value)


def test_experts_that_do_not_fit_ddr_are_a_capacity_error():
    coe = parse_coe(_data(), "c.toml", CATEGORIES)
    node = Node(
        "tiny", 1, hbm_bytes=10**9, ddr_bytes=3 * 10**8, copy_Bps=1e9, copy_path="", fusion="none"
    )
    prof = profile.ExpertProfile("tiny-llama", 10**8, 1, (0, 0), ((0, 0), (0, 0)), 1, 1, 1)
    with pytest.raises(CapacityError, match="DDR") as info:
        place(coe, node, {"tiny-llama": prof}, router_bytes=0)
    assert info.value.needed == 4 * 10**8 and info.value.available == 3 * 10**8


def test_node_copy_rates_follow_the_target_files():
    sn, a100, h100 = (Node.of(load_target(n)) for n in ("sn40l-node", "dgx-a100", "dgx-h100"))
    # DDR->HBM on every socket: min(200, 1600 / 8) x 0.8 = 160 GB/s each
    assert sn.copy_Bps == pytest.approx(8 * 160e9) and sn.fusion == "dataflow"
    # PCIe: two GPUs share a switch's x16 uplink: min(32, 32 / 2, 409.6 / 8) x 0.8 = 12.8 GB/s
    assert a100.copy_Bps == pytest.approx(8 * 12.8e9)
    assert h100.copy_Bps == pytest.approx(8 * 25.6e9)  # min(64, 64 / 2, 614.4 / 8) x 0.8
    assert a100.fusion == h100.fusion == "epilogue"
    assert sn.hbm_bytes == 8 * 64 * 2**30 and sn.ddr_bytes == 8 * 1536 * 2**30


def test_identical_experts_compile_once():
    data = _data(experts={"coder": {"zoo": "tiny-llama", "count": 5}})
    data["categories"] = {"coding": "coder", "math": "coder"}
    coe = parse_coe(data, "c.toml", CATEGORIES)
    before = profile.compiles
    coe, node, profiles, router_s, plan = compile_coe(coe, "sn40l", batch=1, tokens=3)
    assert profile.compiles - before == 3  # prefill, decode at KV S and S+T; not 5x
    assert set(profiles) == {"tiny-llama"} and len(plan.expert_bytes) == 5
    assert router_s > 0 and plan.cache_bytes > 0


def test_serve_from_the_cli_with_a_request_file(tmp_path, capsys):
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"prompt": "Write a Python function that sorts a list of tuples by key."},
                {"prompt": "Translate 'where is the station' into German."},
                {"prompt": "anything", "expert": "coder"},
            ]
        )
    )
    out = tmp_path / "report.json"
    main(
        [
            "coe",
            "serve",
            str(EXAMPLES / "coe.toml"),
            "--target",
            "sn40l",
            "--requests",
            str(requests),
            "--batch",
            "1",
            "-o",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert "totals: 3 requests" in text and "cache hit rate" in text
    report = json.loads(out.read_text())
    assert report["format"] == "coec.coe-serve/1"
    assert [r["expert"] for r in report["requests"]] == ["coder", "polyglot", "coder"]
    assert report["requests"][2]["hit"]  # coder was made resident by request 0


def test_serve_needs_requests_or_synthetic(capsys):
    with pytest.raises(SystemExit) as e:
        main(["coe", "serve", str(EXAMPLES / "coe.toml")])
    assert e.value.code == 2
    assert "--requests" in capsys.readouterr().err


def test_example_coe_loads():
    coe = load(EXAMPLES / "coe.toml")
    assert len(coe.experts) == 5 and coe.serving.batch == 4


def _node(hbm, ddr, sockets=1, copy=1e9):
    return Node(
        "n", sockets, hbm_bytes=hbm, ddr_bytes=ddr, copy_Bps=copy, copy_path="", fusion="none"
    )


def _profile(nbytes, kv_per_token=0, sockets=0):
    return profile.ExpertProfile(
        "tiny-llama", nbytes, kv_per_token, (0, 0), ((0, 0), (0, 0)), 1, 1, 1, sockets
    )


def test_footprint_nodes_to_hold_the_experts():
    data = _data(experts={"coder": {"zoo": "tiny-llama", "count": 10}})
    data["categories"] = {"coding": "coder", "math": "coder"}
    coe = parse_coe(data, "c.toml", CATEGORIES)
    # HBM 100 - router 4 - KV 2 x (128 + 20) x 0 = 96 bytes: 3 experts of 30 per node -> 4 nodes;
    # DDR 1000 holds all 10 (300 bytes) -> 1 node
    plan = place(coe, _node(100, 1000), {"tiny-llama": _profile(30)}, router_bytes=4)
    assert plan.cache_bytes == 96 and (plan.nodes_in_hbm, plan.nodes_in_ddr) == (4, 1)
    assert profile.nodes_to_hold([30] * 10, 96) == 4 and profile.nodes_to_hold([97], 96) == 0


def test_dgx_footprint_for_850_experts_by_hand():
    # 850 llama2-7b-sized experts of 13.5 GB on DGX H100 (8 x 80 GB HBM, 8 x 238.4 GiB host):
    # HBM 8 x 79,993,765,888 = 639,950,127,104 B holds 47 (47 x 13.5e9 = 634.5e9) -> 19 nodes;
    # host memory 8 x 255,980,050,841 = 2,047,840,406,728 B holds 151 -> ceil(850/151) = 6 nodes
    node = Node.of(load_target("dgx-h100"))
    assert node.hbm_bytes == 639_950_127_104 and node.ddr_bytes == 2_047_840_406_728
    sizes = [13_500_000_000] * 850
    assert profile.nodes_to_hold(sizes, node.hbm_bytes) == 19
    assert profile.nodes_to_hold(sizes, node.ddr_bytes) == 6
    data = _data(experts={"e": {"zoo": "llama2-7b", "count": 850}})
    data["categories"] = {"coding": "e", "math": "e"}
    coe = parse_coe(data, "c.toml", CATEGORIES)
    with pytest.raises(CapacityError, match="they take 6 nodes") as info:
        place(coe, node, {"llama2-7b": _profile(13_500_000_000)}, router_bytes=0)
    assert info.value.needed == 850 * 13_500_000_000 and info.value.available == node.ddr_bytes
    assert "\n" not in str(info.value)


def test_switch_time_from_the_node_copy_rate_by_hand():
    # sn40l-node: 8 sockets x 200 GB/s DDR->HBM x 0.8 = 1.28e12 B/s;
    # dgx-a100: 8 x (32 GB/s uplink / 2 GPUs) x 0.8 = 1.024e11 B/s
    for target, rate in (("sn40l-node", 1.28e12), ("dgx-a100", 1.024e11)):
        node = Node.of(load_target(target))
        served = simulate(
            ["a", "a"],
            batch=1,
            router_s=0.0,
            expert_bytes={"a": 13_476_839_424},
            expert_s=lambda _n, b: 0.0,
            copy_Bps=node.copy_Bps,
            cache_bytes=node.hbm_bytes,
        )
        assert [r["switch_s"] for r in served.rows] == pytest.approx([13_476_839_424 / rate, 0.0])


def test_the_expert_cache_rejects_an_expert_larger_than_itself():
    with pytest.raises(CapacityError, match="HBM") as info:
        ExpertCache(10, "lru").access("big", 11)
    assert (info.value.needed, info.value.available) == (11, 10)


def test_a_model_file_expert_compiles_once_on_one_socket(tmp_path):
    data = _data(
        experts={
            "mlp": {"file": str(EXAMPLES / "mlp.py"), "count": 3},
            "other": {"file": str(EXAMPLES / "mlp.py")},
        }
    )
    data["categories"] = {"coding": "mlp", "math": "other"}
    coe = parse_coe(data, str(tmp_path / "c.toml"), CATEGORIES)
    assert len({e.arch for e in coe.experts}) == 1 and coe.categories["coding"] == "mlp-0"
    before = profile.compiles
    coe, node, profiles, _router_s, plan = compile_coe(coe, "sn40l-node", batch=1, tokens=4)
    assert profile.compiles - before == 1
    (prof,) = profiles.values()
    # fc1 64x128 + 128, fc2 128x32 + 32 in bf16
    assert prof.weight_bytes == 2 * (64 * 128 + 128 + 128 * 32 + 32)
    assert prof.seconds(2, 4) == pytest.approx(2 * 5 * prof.forward_s)
    # one socket's DDR (200 GB/s x 0.8), not the node's eight
    assert plan.copy_Bps["mlp-0"] == pytest.approx(160e9)


def test_zoo_layers_option_is_its_own_architecture():
    data = _data(
        experts={
            "a": {"zoo": "llama2-7b", "layers": 2, "count": 2},
            "b": {"zoo": "llama2-7b"},
        }
    )
    data["categories"] = {"coding": "a", "math": "b"}
    coe = parse_coe(data, "c.toml", CATEGORIES)
    assert [e.arch for e in coe.experts] == ["llama2-7b/2L", "llama2-7b/2L", "llama2-7b"]


@pytest.mark.parametrize(
    "experts, message",
    [
        ({"coder": {"zoo": "tiny-llama", "file": "m.py"}}, "exactly one of 'zoo'"),
        ({"coder": {"file": "nowhere.py"}}, "no such MODEL.py"),
        ({"coder": {"zoo": "tiny-llama", "entry": "f"}}, "'entry' names a MODEL.py"),
        ({"coder": {"zoo": "tiny-llama", "layers": 9}}, "'layers' 9 > tiny-llama's 2"),
        ({"coder": {"zoo": "tiny-llama", "count": 0}}, "'count' must be a positive"),
        ({"coder": "tiny-llama"}, "must be a table"),
    ],
)
def test_expert_errors_are_one_line(experts, message):
    data = _data(experts=experts)
    data["categories"] = {"coding": "coder", "math": "coder"}
    with pytest.raises(ConfigError, match=message) as info:
        parse_coe(data, "c.toml", CATEGORIES)
    assert "c.toml" in str(info.value) and "[experts.coder]" in str(info.value)
    assert "\n" not in str(info.value)


def test_router_model_is_checked():
    assert parse_coe(_data(router={"model": "all-MiniLM-L6-v2"}), "c.toml", CATEGORIES)
    with pytest.raises(ConfigError, match=r"c.toml: \[router\]: model 'bert-large'"):
        parse_coe(_data(router={"model": "bert-large"}), "c.toml", CATEGORIES)
    with pytest.raises(ConfigError, match="not a router category"):
        parse_coe(
            _data(categories={"coding": "coder", "math": "solver", "cooking": "coder"}),
            "c.toml",
            CATEGORIES,
        )


def test_cli_config_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "coe.toml"
    bad.write_text('format = "coec.coe/1"\n[experts.a]\nzoo = "tiny-llama"\nsize = 3\n')
    with pytest.raises(SystemExit) as e:
        main(["coe", "compile", str(bad)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err
    assert str(bad) in err and "[experts.a]: unknown key 'size'" in err


def test_serve_synthetic_from_the_cli(capsys):
    # the trace test's target and batch: its compiles are reused (cached per architecture)
    main(
        [
            "coe",
            "serve",
            str(EXAMPLES / "coe.toml"),
            "--target",
            "sn40l",
            "--batch",
            "1",
            "--synthetic",
            "16",
            "--skew",
            "1.2",
            "--seed",
            "3",
            "--policy",
            "lfu",
        ]
    )
    text = capsys.readouterr().out
    assert "totals: 16 requests" in text and "throughput" in text and "cache hit rate" in text
    assert "interpolated" in text  # the decode interpolation is stated


@pytest.mark.parametrize(
    "argv",
    [
        ["compile", "--zoo", "tiny-llama"],
        ["coe", "compile", str(EXAMPLES / "coe.toml")],
        ["coe", "serve", str(EXAMPLES / "coe.toml"), "--synthetic", "4"],
    ],
)
def test_gpu_target_rejects_dataflow_fusion(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--target", "dgx-h100", "--fusion", "dataflow"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err
    assert "target dgx-h100 runs fusion none, epilogue, not 'dataflow'" in err


def test_bench_ratios_follow_the_rows():
    from coec.bench.coe import summary

    def row(system, switch, expert, total, cold, reading="own DDR"):
        return {
            "system": system,
            "copy_reading": reading,
            "batch": 1,
            "tokens": 20,
            "switch_s": switch,
            "expert_per_request_s": expert,
            "per_request_s": total,
            "cold_per_request_s": cold,
        }

    sn = row("sn40l-node", 0.01, 0.04, 0.05, 0.06)
    one, own = (
        row("dgx-h100", 0.4, 0.05, 0.3, 0.36, "one host link"),
        row("dgx-h100", 0.05, 0.05, 0.1, 0.12, "link per device"),
    )
    r1, r2 = summary([sn, one, own])  # one ratio line per DGX reading
    assert (r1["vs"], r1["copy_reading"]) == ("dgx-h100", "one host link")
    assert (r1["switch_ratio"], r1["expert_speedup"], r1["overall_speedup"]) == pytest.approx(
        (40, 1.25, 6.0)
    )
    assert r1["cold_speedup"] == pytest.approx(6.0)
    assert (r2["switch_ratio"], r2["overall_speedup"]) == pytest.approx((5, 2.0))


def test_bench_outputs_written(tmp_path):
    from coec.bench.coe import SYSTEMS, footprint, summary, write_outputs

    def row(system, batch, tokens, experts=150):
        k = 1 + SYSTEMS.index(system)
        return {
            "system": system,
            "copy_reading": "",
            "topology": "target file",
            "skew": 0.8,
            "cold_per_request_s": 0.06,
            "experts": experts,
            "batch": batch,
            "tokens": tokens,
            "expert_bytes": 10**9,
            "nodes_all_in_hbm": 3 * k,
            "nodes_all_in_ddr": k,
            "switch_s": 0.01 * k,
            "router_per_request_s": 1e-4,
            "switch_per_request_s": 0.005 * k,
            "expert_per_request_s": 0.04,
            "per_request_s": 0.0451 + 0.005 * k,
        }

    rows = [row(s, b, t) for s in SYSTEMS for b in (1, 8) for t in (20, 200)]
    curve = [row(s, 1, 20, n) for s in SYSTEMS for n in (10, 850)]
    files = write_outputs(tmp_path, rows, curve, summary(rows))
    assert {f.name for f in files} == {
        "results.csv",
        "results.json",
        "breakdown.png",
        "experts_sweep.png",
    }
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["format"] == "coec.bench.fusion-coe/2" and report["assumptions"]
    assert report["footprint"] == footprint(curve) and len(report["ratios"]) == 8
    assert (tmp_path / "breakdown.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_bench_point_switch_is_bytes_over_copy_rate():
    from coec.bench.coe import run_config, system_target

    r = run_config(system_target("sn40l-node"), 10, 1, 20, 20)
    assert r["switch_s"] == pytest.approx(r["expert_bytes"] / 1.28e12)  # 8 x 200 GB/s x 0.8
    assert r["launch"] == "hardware" and r["copy_reading"] == "own DDR"
    assert r["nodes_all_in_ddr"] == 1 and r["per_request_s"] > r["expert_per_request_s"] > 0


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "hi", "expret": "coder"}', "2: unknown key 'expret'"),
        ('{"expert": "coder"}', '2: expected {"prompt"'),
        ("not json", "2: not a JSON object"),
    ],
)
def test_request_file_errors_name_the_line(tmp_path, line, message):
    from coec.coe.commands import read_requests

    requests = tmp_path / "t.jsonl"
    requests.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(ConfigError, match=message) as info:
        read_requests(requests)
    assert str(requests) in str(info.value) and "\n" not in str(info.value)


# -- serving with arrivals from the CLI ---------------------------------------------------------


def _serve_json(capsys, *extra):
    # the synthetic-CLI test's target and batch: its compiles are reused
    argv = ["coe", "serve", str(EXAMPLES / "coe.toml"), "--target", "sn40l", "--batch", "1"]
    main([*argv, *extra, "--json"])
    return json.loads(capsys.readouterr().out)


def test_serve_with_a_rate_from_the_cli(capsys, tmp_path):
    argv = ["--synthetic", "24", "--rate", "40", "--cv", "3", "--seed", "5", "--skew", "1"]
    report = _serve_json(capsys, *argv)
    assert report["format"] == "coec.coe-serve/2"
    assert report["arrivals"] == {
        "source": "gamma",
        "rate_rps": 40.0,
        "cv": 3.0,
        "seed": 5,
        "requests": 24,
    }
    rows = report["requests"]
    assert [r["request"] for r in rows] == list(range(24))
    for r in rows:  # each request's times in the order they happen
        assert (
            r["arrival_s"] <= r["routed_s"] <= r["admitted_s"] < r["first_token_s"] <= r["done_s"]
        )
        assert r["latency_s"] == pytest.approx(r["done_s"] - r["arrival_s"])
    m = report["metrics"]
    assert m["requests"] == 24 and m["latency_s"]["p50"] <= m["latency_s"]["p99"]
    assert m["copies"] == len({r["expert"] for r in rows})  # every expert fits: one copy each
    assert report["hbm_occupancy"][0] == [0.0, 0]
    assert _serve_json(capsys, *argv) == report  # the same seed: the same report
    main(["coe", "serve", str(EXAMPLES / "coe.toml"), "--target", "sn40l", "--batch", "1", *argv])
    text = capsys.readouterr().out
    assert "time to first token" in text and "goodput" in text and "cache hit rate" in text


def test_serve_a_timed_trace_from_the_cli(capsys, tmp_path):
    trace = tmp_path / "trace.jsonl"
    rows = [
        {"t": 0.0, "prompt": "x", "expert": "coder", "prompt_tokens": 40, "output_tokens": 3},
        {"t": 0.5, "prompt": "y", "expert": "writer", "prompt_tokens": 64, "output_tokens": 20},
        {"t": 0.5, "prompt": "z", "expert": "coder"},
    ]
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = _serve_json(capsys, "--requests", str(trace), "--policy", "belady")
    assert report["arrivals"] == {"source": "trace", "requests": 3}
    got = report["requests"]
    assert [r["arrival_s"] for r in got] == [0.0, 0.5, 0.5]
    # lengths from the rows, else coe.toml's [serving] (prompt 64, 20 tokens)
    assert [(r["prompt_tokens"], r["output_tokens"]) for r in got] == [(40, 3), (64, 20), (64, 20)]
    assert report["lengths"]["prompt_tokens"] == {"min": 40, "mean": 56.0, "max": 64}
    assert report["policy"] == "belady"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--synthetic", "4", "--cv", "2"], "--cv applies to a run with arrival times"),
        (["--synthetic", "4", "--warmup", "1"], "--warmup applies to a run with arrival"),
        (
            ["--synthetic", "4", "--rate", "1", "--prefetch", "next", "--no-overlap"],
            "needs overlap",
        ),
    ],
)
def test_serve_arrival_options_refused_where_they_do_not_apply(capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        main(["coe", "serve", str(EXAMPLES / "coe.toml"), "--target", "sn40l", *extra])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and message in err


def test_a_trace_keeps_its_own_times(capsys, tmp_path):
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"t": 0.0, "prompt": "x", "expert": "coder"}\n')
    with pytest.raises(SystemExit) as e:
        main(["coe", "serve", str(EXAMPLES / "coe.toml"), "--requests", str(trace), "--rate", "2"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "the trace has its own ('t')" in err


def test_example_serving_coe_loads():
    coe = load(EXAMPLES / "coe_serving.toml")
    assert len(coe.experts) == 8 and len({e.arch for e in coe.experts}) == 6
    assert coe.traffic.rate == 0.5 and sum(coe.traffic.mix.values()) == 100
    assert set(coe.traffic.mix) == set(coe.categories)
