"""Unit tests of backend/target.py: the shipped targets, their numbers and every load error."""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path

import pytest

import coec
from coec.backend.target import FORMAT, LAUNCH_MODES, Target, builtin_targets, load_target

GiB, TiB, MiB = 2**30, 2**40, 2**20


def shipped_text(name: str) -> str:
    return (resources.files("coec.backend") / "targets" / f"{name}.toml").read_text()


SN40L = shipped_text("sn40l")


def numeric_entries(data: dict, prefix: str = "") -> dict[str, object]:
    """Every number in a parsed target, by dotted key, as written (bare or {value, source})."""
    out: dict[str, object] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and "value" in value:
            out[path] = value
        elif isinstance(value, dict):
            out.update(numeric_entries(value, path))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[path] = value
    return out


def variant(tmp_path: Path, old: str, new: str, name: str = "bad.toml") -> Path:
    """A copy of sn40l.toml with one edit, written to tmp_path."""
    assert old in SN40L, f"test edit {old!r} no longer matches sn40l.toml"
    path = tmp_path / name
    path.write_text(SN40L.replace(old, new, 1))
    return path


# -- the built-in sn40l -----------------------------------------------------------------


@pytest.fixture(scope="module")
def sn40l() -> Target:
    return load_target("sn40l")


def test_builtin_targets_lists_sn40l():
    assert "sn40l" in builtin_targets()


def test_sn40l_loads(sn40l):
    assert sn40l.name == "sn40l"
    assert sn40l.description
    assert sn40l.sockets == 1
    assert set(sn40l.memory) == {"sram", "hbm", "ddr"}
    assert sn40l.launch.mode in LAUNCH_MODES
    assert load_target(sn40l) is sn40l  # a Target passes straight through


def test_sn40l_peak_matmul_flops_matches_table_ii(sn40l):
    assert sn40l.compute.peak_matmul_flops == pytest.approx(638e12, rel=0.01)


def test_sn40l_compute(sn40l):
    assert sn40l.compute.pcus == 1040
    assert sn40l.compute.pmus == 1040
    assert isinstance(sn40l.compute.pcus, int)
    assert sn40l.compute.clock_hz == pytest.approx(1.6e9)


def test_sn40l_memory_tiers(sn40l):
    hbm, ddr, sram = sn40l.memory["hbm"], sn40l.memory["ddr"], sn40l.memory["sram"]
    assert hbm.capacity_bytes == 64 * GiB
    assert hbm.bandwidth_Bps == pytest.approx(1.8e12)
    assert ddr.capacity_bytes == int(1.5 * TiB)
    assert ddr.bandwidth_Bps == pytest.approx(200e9)
    assert sram.capacity_bytes == 520 * MiB
    for tier, mem in sn40l.memory.items():
        assert mem.tier == tier
        assert isinstance(mem.capacity_bytes, int)


@pytest.mark.parametrize("name", builtin_targets())
def test_every_shipped_number_has_a_source(name):
    entries = numeric_entries(tomllib.loads(shipped_text(name)))
    assert entries, f"{name}.toml has no numbers?"
    for key, entry in entries.items():
        assert isinstance(entry, dict), f"{name}.toml: {key} has no source"
        assert isinstance(entry.get("source"), str), f"{name}.toml: {key} source is not a string"
        assert entry["source"].strip(), f"{name}.toml: {key} has an empty source"
    # and the loader keeps every one of them
    assert set(load_target(name).sources) == set(entries)


@pytest.mark.parametrize("name", builtin_targets())
def test_every_shipped_target_loads(name):
    t = load_target(name)
    assert t.name == name
    assert t.compute.peak_matmul_flops > 0


def test_with_launch_changes_launch_seconds(sn40l):
    assert sn40l.launch.mode == "software"
    hw = sn40l.with_launch("hardware")
    assert hw.launch.mode == "hardware"
    assert hw.launch.seconds == pytest.approx(1e-6)
    assert sn40l.launch.seconds == pytest.approx(10e-6)
    assert hw.launch.seconds != sn40l.launch.seconds
    assert sn40l.launch.mode == "software"  # the original is unchanged
    assert hw.with_launch("software").launch.seconds == sn40l.launch.seconds


def test_with_launch_rejects_unknown_mode(sn40l):
    with pytest.raises(coec.ConfigError, match="turbo"):
        sn40l.with_launch("turbo")


def test_json_round_trip(sn40l):
    d = sn40l.to_json()
    back = Target.from_json(json.loads(json.dumps(d)))
    assert back.to_json() == d
    assert back.name == sn40l.name
    assert back.sockets == sn40l.sockets
    assert back.compute == sn40l.compute
    assert back.memory == sn40l.memory
    assert back.network == sn40l.network
    assert back.launch == sn40l.launch
    hw = sn40l.with_launch("hardware")
    assert Target.from_json(hw.to_json()).launch.seconds == hw.launch.seconds


# -- user files that load -----------------------------------------------------------------


def test_user_file_with_bare_numbers_loads(tmp_path):
    path = variant(
        tmp_path, 'pcus = { value = 1040, source = "arXiv:2405.07518 Table II" }', "pcus = 512"
    )
    t = load_target(path)
    assert t.compute.pcus == 512
    assert "compute.pcus" not in t.sources
    assert "compute.pmus" in t.sources


def test_user_file_units_are_converted(tmp_path):
    path = variant(tmp_path, "capacity_MiB = { value = 520", "capacity_GiB = { value = 2")
    assert load_target(path).memory["sram"].capacity_bytes == 2 * GiB


def test_zero_launch_cost_is_allowed(tmp_path):
    path = variant(tmp_path, "hardware_us = { value = 1.0", "hardware_us = { value = 0")
    assert load_target(path).with_launch("hardware").launch.seconds == 0


# -- errors: each one ConfigError naming the file and the key -------------------------------

BAD_EDITS = {
    "wrong format": (
        'format = "coec.target/1"',
        'format = "coec.target/2"',
        ["format", "coec.target/2"],
    ),
    "missing format": ('format = "coec.target/1"\n', "", ["format"]),
    "missing table": ("[network]\n", "[netwerk]\n", ["network"]),
    "missing memory tier": ("[memory.ddr]\n", "[memory.dram]\n", ["ddr"]),
    "missing key": (
        "bandwidth_GBps = { value = 1800",
        "bw_GBps = { value = 1800",
        ["bandwidth_GBps"],
    ),
    "unknown key in table": ("[compute]\n", "[compute]\nfrobs = 1\n", ["frobs"]),
    "unknown top-level key": ('name = "sn40l"\n', 'name = "sn40l"\nfrobs = 1\n', ["frobs"]),
    "unknown key in inline table": (
        "{ value = 64,",
        '{ value = 64, unit = "GiB",',
        ["capacity_GiB"],
    ),
    "inline table without value": ("{ value = 64,", "{", ["capacity_GiB"]),
    "string number": ("pcus = { value = 1040", 'pcus = { value = "1040"', ["pcus"]),
    "boolean number": ("pcus = { value = 1040", "pcus = { value = true", ["pcus"]),
    "array number": ("pcus = { value = 1040", "pcus = { value = [1040]", ["pcus"]),
    "zero": ("clock_GHz = { value = 1.6", "clock_GHz = { value = 0", ["clock_GHz", "positive"]),
    "negative": (
        "bandwidth_GBps = { value = 200",
        "bandwidth_GBps = { value = -200",
        ["bandwidth_GBps"],
    ),
    "negative capacity": (
        "capacity_MiB = { value = 520",
        "capacity_MiB = { value = -520",
        ["capacity_MiB"],
    ),
    "negative launch cost": (
        "software_us = { value = 10.0",
        "software_us = { value = -1.0",
        ["software_us"],
    ),
    "fractional count": ("pcus = { value = 1040", "pcus = { value = 1040.5", ["pcus", "whole"]),
    "bad launch mode": ('mode = "software"', 'mode = "turbo"', ["mode", "turbo"]),
    "non-string launch mode": ('mode = "software"', "mode = 1", ["mode"]),
    "non-string name": ('name = "sn40l"', "name = 7", ["name"]),
}


@pytest.mark.parametrize("case", sorted(BAD_EDITS))
def test_malformed_target_file(tmp_path, case):
    old, new, needles = BAD_EDITS[case]
    path = variant(tmp_path, old, new)
    with pytest.raises(coec.ConfigError) as info:
        load_target(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message
    assert "\n" not in message


def test_not_toml(tmp_path):
    path = tmp_path / "garbage.toml"
    path.write_text("this is [[ not toml\n")
    with pytest.raises(coec.ConfigError, match="not valid TOML") as info:
        load_target(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(coec.ConfigError) as info:
        load_target(path)
    assert str(path) in str(info.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(coec.ConfigError) as info:
        load_target(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_unknown_target_name():
    with pytest.raises(coec.ConfigError) as info:
        load_target("sn99")
    message = str(info.value)
    assert "'sn99'" in message
    assert "sn40l" in message  # lists what is available


def test_config_error_is_a_coec_error():
    assert issubclass(coec.ConfigError, coec.CoecError)
    assert FORMAT == "coec.target/1"


# -- regressions: bugs found by review, fixed -------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_number_is_rejected(tmp_path, value):
    path = variant(
        tmp_path, "bandwidth_GBps = { value = 200", f"bandwidth_GBps = {{ value = {value}"
    )
    with pytest.raises(coec.ConfigError, match="bandwidth_GBps"):
        load_target(path)


@pytest.mark.parametrize("key", ["capacity_KiB", "capacity_GB"])
def test_unknown_capacity_unit_is_rejected(tmp_path, key):
    path = variant(tmp_path, "capacity_MiB = { value = 520", f"{key} = {{ value = 520")
    with pytest.raises(coec.ConfigError, match=key):
        load_target(path)


def test_gpu_targets_allow_epilogue_fusion_only():
    from coec.pipeline import Options

    for name, copy_gbps in (("dgx-a100", 32), ("dgx-h100", 64)):
        target = load_target(name)
        assert target.fusion_policies == ("none", "epilogue")
        assert target.host_copy_Bps == copy_gbps * 1e9
        assert Target.from_json(target.to_json()).host_copy_Bps == copy_gbps * 1e9
        assert Target.from_json(target.to_json()).fusion_policies == ("none", "epilogue")
        Options(target=name, fusion="epilogue").resolve_target()
        with pytest.raises(coec.ConfigError, match="not 'dataflow'"):
            Options(target=name, fusion="dataflow").resolve_target()
    assert "dataflow" in load_target("sn40l").fusion_policies


def test_bad_fusion_list_is_named(tmp_path):
    from conftest import ROOT

    text = (ROOT / "backend" / "targets" / "dgx-a100.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('value = ["none", "epilogue"]', 'value = ["fast"]'))
    with pytest.raises(coec.ConfigError, match="'fusion' must be a non-empty list"):
        load_target(bad)
