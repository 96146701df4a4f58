"""CoE serving by hand: per-prompt experts in a batch, the copy topology, cold vs steady."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from coec.backend.target import Host, load_target, parse_target
from coec.bench.coe import readings, system_target
from coec.coe.profile import Node
from coec.coe.serve import simulate, synthetic_experts
from coec.ir.errors import ConfigError

GB = 1e9


def _run(trace, *, batch, cache_bytes, nbytes=2 * GB, copy=10 * GB, router=0.1):
    names = sorted(set(trace))
    return simulate(
        trace,
        batch=batch,
        router_s=router,
        expert_bytes=dict.fromkeys(names, nbytes),
        expert_s=lambda _n, b: 0.5 * b,  # 0.5 s per prompt of a sub-batch
        copy_Bps=copy,
        cache_bytes=cache_bytes,
    )


def test_a_batch_with_three_distinct_experts_pays_three_switches():
    # one batch of 5 prompts routed to a, b, a, c, b: three experts, each switched in once
    # (2 GB at 10 GB/s = 0.2 s), each running its own sub-batch (a: 2, b: 2, c: 1 prompts)
    served = _run(["a", "b", "a", "c", "b"], batch=5, cache_bytes=10 * 2 * GB)
    t = served.totals()
    assert t["expert_activations"] == 3 and t["cache_hits"] == 0
    assert t["switch_s"] == pytest.approx(3 * 0.2)
    assert t["expert_s"] == pytest.approx(0.5 * (2 + 2 + 1))
    assert t["total_s"] == pytest.approx(0.1 + 3 * 0.2 + 2.5)
    # groups in order of first appearance: a ends at 0.1 + 0.2 + 1.0, b 1.2 later, c 0.7 later
    assert [r["latency_s"] for r in served.rows] == pytest.approx([1.3, 2.5, 1.3, 3.2, 2.5])
    assert [r["expert"] for r in served.rows] == ["a", "b", "a", "c", "b"]


def test_a_batch_of_one_expert_pays_one_switch():
    served = _run(["a"] * 4, batch=4, cache_bytes=10 * 2 * GB)
    assert served.totals()["switch_s"] == pytest.approx(0.2)
    assert served.totals()["expert_activations"] == 1


def test_cold_and_steady_differ_as_by_hand():
    # room for two experts; batch 1; a and b miss, then four hits on a
    served = _run(["a", "b", "a", "a", "a", "a"], batch=1, cache_bytes=2 * 2 * GB)
    cold, steady = served.split(2)
    # cold: 2 x (router 0.1 + switch 0.2 + expert 0.5) over 2 requests
    assert cold["requests"] == 2 and cold["total_s"] / 2 == pytest.approx(0.8)
    assert cold["hit_rate"] == 0.0
    # steady: 4 x (router 0.1 + expert 0.5), every expert resident
    assert steady["requests"] == 4 and steady["total_s"] / 4 == pytest.approx(0.6)
    assert steady["hit_rate"] == 1.0 and steady["switch_s"] == 0.0
    assert served.filled_at is None  # never had to evict
    whole = served.totals()
    assert whole["total_s"] == pytest.approx(cold["total_s"] + steady["total_s"])


def test_the_batch_the_cache_first_evicts_in():
    # room for one: a fills it, b evicts a in batch 1 (batch 2 prompts each: [a a] [b a])
    served = _run(["a", "a", "b", "a"], batch=2, cache_bytes=2 * GB)
    assert served.filled_at == 1
    cold, steady = served.split(2)
    assert (cold["requests"], steady["requests"]) == (2, 2)
    assert steady["switch_s"] == pytest.approx(2 * 0.2)  # b in, then a back in


def test_stated_popularity_draws_only_the_weighted_experts():
    picks = synthetic_experts(["a", "b", "c"], 50, 0.0, seed=3, popularity=[0, 1, 0])
    assert set(picks) == {"b"}
    with pytest.raises(ConfigError, match="popularity"):
        synthetic_experts(["a", "b"], 5, 0.0, seed=0, popularity=[1.0])


# -- the copy topology -----------------------------------------------------------------------


def test_one_shared_uplink_by_hand():
    # 8 devices through one 32 GB/s uplink, host DRAM 400 GB/s, 80% DMA efficiency:
    # min(32, 32 / 8, 400 / 8) x 0.8 = 3.2 GB/s each, 25.6 GB/s for the node
    host = Host(32 * GB, 8, uplink_Bps=32 * GB, dram_Bps=400 * GB, dma_efficiency=0.8)
    assert host.device_Bps(8) == pytest.approx(3.2 * GB)
    assert host.node_Bps(8) == pytest.approx(25.6 * GB)
    # one device copying alone has the uplink to itself: min(32, 32, 400) x 0.8
    assert host.device_Bps(1) == pytest.approx(25.6 * GB)
    assert host.reading(8) == "one host link"


def test_per_device_links_by_hand():
    # a 32 GB/s link each, no shared uplink, DRAM 400 GB/s: min(32, 400 / 8) x 0.8 = 25.6
    host = Host(32 * GB, dram_Bps=400 * GB, dma_efficiency=0.8)
    assert host.node_Bps(8) == pytest.approx(8 * 25.6 * GB)
    assert host.reading(8) == "link per device"
    # the DRAM binds when it is slower than the links: min(32, 128 / 8) x 0.8 = 12.8
    assert Host(32 * GB, dram_Bps=128 * GB, dma_efficiency=0.8).device_Bps(8) == pytest.approx(
        12.8 * GB
    )


def test_dgx_a100_readings_by_hand():
    # the file: two GPUs per x16 Gen4 uplink: min(32, 32 / 2, 409.6 / 8) x 0.8 = 12.8 GB/s each;
    # bounds: one host link, min(32, 32 / 8, 51.2) x 0.8 = 3.2; a link each, min(32, 51.2) x 0.8
    rates = [Node.of(t).copy_Bps for t in readings(load_target("dgx-a100"))]
    assert rates == pytest.approx([8 * 12.8 * GB, 8 * 3.2 * GB, 8 * 25.6 * GB])
    labels = [Node.of(t).host.reading(8) for t in readings(load_target("dgx-a100"))]
    assert labels == ["2 per uplink", "one host link", "link per device"]
    assert len(readings(load_target("sn40l-node"))) == 1  # its own DDR: nothing shared


def test_the_bench_runs_the_sn40l_with_hardware_launch():
    assert system_target("sn40l-node").launch.mode == "hardware"
    assert Node.of(system_target("sn40l-node")).launch == "hardware"
    assert Node.of(system_target("dgx-h100")).launch == load_target("dgx-h100").launch.mode


def _sn40l_with_host(host: str) -> dict:
    text = (resources.files("coec.backend") / "targets" / "sn40l.toml").read_text()
    start, end = text.index("[host]"), text.index("[network]")
    return tomllib.loads(text[:start] + host + "\n" + text[end:])


def test_a_host_table_with_copy_GBps_alone_still_loads():
    t = parse_target(_sn40l_with_host("[host]\ncopy_GBps = 25"), "old.toml")
    assert t.host == Host(25 * GB)
    assert Node.of(t).copy_Bps == pytest.approx(25 * GB)  # one socket, its own link


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ("dma_efficiency = 1.5", "at most 1"),
        ("devices_per_uplink = 9", "the node has 1"),
        ("copy_from = 'disk'", "copy_from"),
    ],
)
def test_bad_host_keys_are_named(edit, match):
    keys = {
        "copy_from": "'host'",
        "link_GBps": "32",
        "devices_per_uplink": "1",
        "uplink_GBps": "0",
        "dram_GBps": "100",
        "dma_efficiency": "0.8",
    }
    name = edit.split(" = ")[0]
    keys[name] = edit.split(" = ")[1]
    table = "[host]\n" + "\n".join(f"{k} = {v}" for k, v in keys.items())
    with pytest.raises(ConfigError, match=match):
        parse_target(_sn40l_with_host(table), "bad.toml")


def test_a_missing_host_key_is_named():
    table = "[host]\ncopy_from = 'host'\nlink_GBps = 32\ndevices_per_uplink = 1\nuplink_GBps = 0"
    with pytest.raises(ConfigError, match="dram_GBps"):
        parse_target(_sn40l_with_host(table), "bad.toml")
