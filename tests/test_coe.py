"""Composition of Experts: coe.toml, placement, the expert cache and serving."""

from __future__ import annotations

import json

import pytest
from conftest import EXAMPLES

from coec.backend.target import load_target
from coec.cli import main
from coec.coe import profile
from coec.coe.config import parse_coe
from coec.coe.driver import compile_coe, load
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
    assert sn.copy_Bps == 8 * 200e9 and sn.fusion == "dataflow"  # DDR->HBM on every socket
    assert a100.copy_Bps == 8 * 32e9 and h100.copy_Bps == 8 * 64e9  # PCIe per GPU
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


def test_serve_from_the_cli_with_a_trace(tmp_path, capsys):
    trace = tmp_path / "requests.jsonl"
    trace.write_text(
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
            "--trace",
            str(trace),
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


def test_serve_needs_a_trace_or_synthetic(capsys):
    with pytest.raises(SystemExit) as e:
        main(["coe", "serve", str(EXAMPLES / "coe.toml")])
    assert e.value.code == 2
    assert "--trace" in capsys.readouterr().err


def test_example_coe_loads():
    coe = load(EXAMPLES / "coe.toml")
    assert len(coe.experts) == 5 and coe.serving.batch == 4
