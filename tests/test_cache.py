"""The disk cache of compile results: a hit equals a fresh compile, and anything that
decides a result (arguments, the target file's contents, a model file's bytes) misses."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

from coec import cache
from coec.coe import profile


@pytest.fixture
def disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COEC_CACHE", "1")
    monkeypatch.setenv("COEC_CACHE_DIR", str(tmp_path / "cache"))
    profile._compiled.cache_clear()
    profile._compiled_file.cache_clear()
    profile.router_profile.cache_clear()
    yield tmp_path / "cache"
    profile._compiled.cache_clear()
    profile._compiled_file.cache_clear()
    profile.router_profile.cache_clear()


def _fresh_process():
    """What a new run sees: nothing in memory, the disk as it is."""
    profile._compiled.cache_clear()
    profile._compiled_file.cache_clear()


def test_a_hit_is_the_compile_it_replaces(disk_cache):
    args = ("tiny-llama", "decode", 16, 1, "sn40l", "dataflow")
    before = profile.compiles
    first = profile._compiled(*args)
    assert profile.compiles == before + 1
    _fresh_process()
    again = profile._compiled(*args)
    assert profile.compiles == before + 1 and again == first
    entries = list(disk_cache.rglob("*.json"))
    assert len(entries) == 1
    entry = json.loads(entries[0].read_text())
    assert entry["format"] == "coec.cache/1" and entry["value"] == first
    assert entry["key"]["zoo"] == "tiny-llama" and entry["key"]["target"]["name"] == "sn40l"


def test_what_decides_a_result_misses(disk_cache, tmp_path):
    base = ("tiny-llama", "decode", 16, 1)
    profile._compiled(*base, "sn40l", "dataflow")
    before = profile.compiles
    profile._compiled(*base, "sn40l", "epilogue")  # another fusion
    profile._compiled("tiny-llama", "decode", 32, 1, "sn40l", "dataflow")  # another shape
    # a user's target file, then the same file with its HBM bandwidth edited
    text = (ROOT / "backend" / "targets" / "sn40l.toml").read_text()
    chip = tmp_path / "chip.toml"
    chip.write_text(text)
    slow = profile._compiled(*base, str(chip), "dataflow")
    assert profile.compiles == before + 2  # a copy of sn40l.toml: the same parameters, a hit
    _fresh_process()
    chip.write_text(text.replace("value = 1800,", "value = 900,"))
    slower = profile._compiled(*base, str(chip), "dataflow")
    assert profile.compiles == before + 3
    assert slower["seconds"] > slow["seconds"]


def test_a_model_file_expert_misses_when_the_file_changes(disk_cache, tmp_path):
    model = tmp_path / "m.py"
    mlp = (ROOT / "examples" / "mlp.py").read_text()
    model.write_text(mlp)
    before = profile.compiles
    first = profile._compiled_file(str(model), None, "sn40l", "dataflow")
    _fresh_process()
    assert profile._compiled_file(str(model), None, "sn40l", "dataflow") == first
    assert profile.compiles == before + 1
    _fresh_process()
    model.write_text(mlp.replace("d_hidden: int = 128", "d_hidden: int = 256"))
    bigger = profile._compiled_file(str(model), None, "sn40l", "dataflow")
    assert profile.compiles == before + 2
    assert bigger["weight_bytes"] > first["weight_bytes"]


def test_a_corrupt_entry_is_recomputed_and_off_means_off(disk_cache, monkeypatch):
    args = ("tiny-llama", "decode", 16, 1, "sn40l", "dataflow")
    first = profile._compiled(*args)
    (entry,) = disk_cache.rglob("*.json")
    entry.write_text("{not json")
    _fresh_process()
    before = profile.compiles
    assert profile._compiled(*args) == first and profile.compiles == before + 1
    assert json.loads(entry.read_text())["value"] == first  # rewritten whole

    monkeypatch.setenv("COEC_CACHE", "0")
    _fresh_process()
    profile._compiled(*args)
    assert profile.compiles == before + 2


def test_the_fingerprint_covers_coecs_own_source():
    fingerprint = cache.toolchain_fingerprint()
    assert len(fingerprint) == 64
    roots = cache._subpackage_roots()
    assert {p.name for p in roots} >= {"ir", "passes", "backend", "runtime"}
