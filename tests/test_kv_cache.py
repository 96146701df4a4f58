"""The KV cache is appended in place: a decode step writes one position, never the cache.

``slice_scatter`` lowers to ``df.update``; when nothing else reads the cache it updates,
the kernel writes only the new rows into the cache's own buffer (the result is a view of
it), under every fusion policy. Byte counts here are computed by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import coec
from coec.models.zoo import instantiate
from coec.pipeline import Options
from coec.regional import compile_zoo
from coec.runtime.executor import Executor

B, H, S, D = 1, 2, 7, 4  # batch, heads, filled positions, head dim: the cache holds S + 1
F32 = 4


class Append(torch.nn.Module):
    """One decode step's attention over a preallocated cache with the new key written in."""

    def forward(self, cache, k, q):
        keys = torch.slice_scatter(cache, k, dim=2, start=S)
        return torch.softmax(q @ keys.transpose(-1, -2), -1) @ keys, keys


def inputs():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(B, H, n, D, generator=gen) for n in (S + 1, 1, 1)]


def kernel_with(schedule: dict, op: str) -> dict:
    return next(k for k in schedule["kernels"] if any(o["op"] == op for o in k["ops"]))


@pytest.mark.parametrize("fusion", ["none", "epilogue", "dataflow"])
def test_append_matches_pytorch_and_leaves_the_callers_cache_alone(fusion):
    cache, k, q = inputs()
    before = cache.clone()
    cm = coec.compile(Append().eval(), (cache, k, q), fusion=fusion, dtype="fp32")
    out, keys = cm(cache, k, q)
    ref_out, ref_keys = Append()(cache, k, q)
    np.testing.assert_allclose(out, ref_out.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(keys, ref_keys.numpy())
    assert torch.equal(cache, before)  # the executor updated its own copy
    # the updated cache is the input's buffer, written in place
    assert cm.schedule["buffers"][cm.schedule["outputs"][1]].get("alias_of") == "cache"
    update = kernel_with(cm.schedule, "update")
    row = B * H * 1 * D * F32  # one position of the cache
    [store] = [d for d in update["stores"] if d["buffer"] == cm.schedule["outputs"][1]]
    assert store["bytes"] == row and store["box"][2] == [S, S + 1]
    loaded = {d["buffer"]: d["bytes"] for d in update["loads"]}
    written = next(o["output"] for o in update["ops"] if o["op"] == "update")
    if any(written in o["inputs"] for o in update["ops"]):  # read in the same kernel
        assert fusion != "none" and loaded["cache"] == B * H * (S + 1) * D * F32
    else:  # the update kernel never reads the cache: it only writes the new row
        assert fusion == "none" and "cache" not in loaded and loaded["k"] == row


def test_unfused_append_moves_one_row_plus_attentions_read():
    """Policy none by hand: the update kernel reads k and writes one row; every later
    kernel reading the cache reads its S + 1 positions (a concat would read the cache,
    write S + 1 positions and read them again)."""
    cache, k, q = inputs()
    cm = coec.compile(Append().eval(), (cache, k, q), fusion="none", dtype="fp32")
    update = kernel_with(cm.schedule, "update")
    assert update["estimate"]["bytes"] == {"hbm->sram": 32, "sram->hbm": 32}
    _, counted = Executor(cm.schedule, count_only=True).run()
    assert counted["bytes"] == cm.report["bytes"]


class ReadsTheOldCache(torch.nn.Module):
    """The old cache is read after the update: it cannot be written in place."""

    def forward(self, cache, k, q):
        keys = torch.slice_scatter(cache, k, dim=2, start=S)
        return keys * 2.0, cache + 1.0


def test_a_cache_read_elsewhere_is_copied_not_overwritten():
    cache, k, q = inputs()
    cm = coec.compile(ReadsTheOldCache().eval(), (cache, k, q), fusion="none", dtype="fp32")
    doubled, old_plus_one = cm(cache, k, q)
    ref = ReadsTheOldCache()(cache, k, q)
    np.testing.assert_array_equal(doubled, ref[0].numpy())
    np.testing.assert_array_equal(old_plus_one, ref[1].numpy())
    update = kernel_with(cm.schedule, "update")
    assert update["stores"][0]["bytes"] == B * H * (S + 1) * D * F32  # a whole new tensor
    assert all(b.get("alias_of") is None for b in cm.schedule["buffers"].values())


class WritesAWeight(torch.nn.Module):
    """An update of a module's buffer: the next run reads the buffer again, so not in place."""

    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.arange(8.0).reshape(1, 8))

    def forward(self, row):
        return torch.slice_scatter(self.table, row, dim=1, start=2, end=3)


def test_a_weight_is_never_updated_in_place():
    cm = coec.compile(WritesAWeight().eval(), (torch.zeros(1, 1),), fusion="none", dtype="fp32")
    for value in (5.0, 6.0):  # a second run sees the weight unchanged
        out = cm(torch.full((1, 1), value))
        assert out.tolist() == [[0.0, 1.0, value, 3.0, 4.0, 5.0, 6.0, 7.0]]


def test_llama2_7b_decode_appends_one_position_per_layer():
    """llama2-7b decode at 4k, TP8, bf16, unfused: each layer's K and V updates write one
    position of their socket's 4 KV heads (4 · 128 · 2 bytes), not the 4 MiB cache."""
    inst = instantiate("llama2-7b", "decode", seq=4096, layers=1)
    sched = compile_zoo(inst, Options(fusion="none", target="sn40l-node")).schedule
    updates = [k for k in sched["kernels"] if any(o["op"] == "update" for o in k["ops"])]
    assert len(updates) == 2  # K and V
    for k in updates:
        assert k["estimate"]["bytes"]["sram->hbm"] == 4 * 128 * 2
        assert k["estimate"]["bytes"]["hbm->sram"] == 4 * 128 * 2  # the new row in
    cache_bytes = 4 * 4097 * 128 * 2
    for i, name in enumerate(sched["outputs"][1:]):
        assert sched["buffers"][name]["alias_of"] == sched["inputs"][1 + i]
        assert sched["buffers"][sched["inputs"][1 + i]]["bytes"] == cache_bytes


class WritesItsCache(torch.nn.Module):
    """A decode step as users write it: the new key assigned into the caller's cache."""

    def forward(self, cache, k, q):
        cache[:, :, S : S + 1] = k
        return torch.softmax(q @ cache.transpose(-1, -2), -1) @ cache


@pytest.mark.parametrize("fusion", ["none", "dataflow"])
def test_an_input_written_in_place_is_written_back_as_eager_does(fusion):
    """torch.export makes ``cache[...] = k`` a slice_scatter whose result is the cache's new
    value; coec writes it in place (one row of bytes) and, like eager PyTorch, leaves the
    new value in the caller's tensor; the call returns the model's own output."""
    cache, k, q = inputs()
    eager_cache = cache.clone()
    ref = WritesItsCache()(eager_cache, k, q)
    cm = coec.compile(WritesItsCache().eval(), (cache.clone(), k, q), fusion=fusion, dtype="fp32")
    mine = cache.clone()
    out = cm(mine, k, q)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(mine, eager_cache)
    assert cm.schedule["buffers"][cm.schedule["outputs"][0]]["alias_of"] == "cache"
    update = kernel_with(cm.schedule, "update")
    assert update["estimate"]["bytes"]["sram->hbm"] <= B * H * D * F32 + B * H * 1 * D * F32


def test_run_compares_a_model_that_writes_its_input(tmp_path, capsys):
    from coec.cli import main

    src = tmp_path / "writes.py"
    src.write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, cache, k):\n"
        "        cache[:, 3:4] = k\n"
        "        return cache.sum(-1)\n"
        "def model():\n"
        "    return M()\n"
        "def example_inputs():\n"
        "    return (torch.randn(2, 4, 8), torch.randn(2, 1, 8))\n"
    )
    assert main(["compile", str(src), "--run", "--json", "--dtype", "fp32"]) in (None, 0)
    report = json.loads(capsys.readouterr().out)
    assert report["executed"] and report["max_abs_err"] < 1e-5


class UpdatesAnActivation(torch.nn.Module):
    def forward(self, cache, k):
        doubled = cache * 2.0
        return torch.slice_scatter(doubled, k, dim=2, start=S).sum(-1)


def test_an_activation_nothing_else_reads_is_updated_in_place():
    """The dest is another kernel's result (unfused): the update writes one row into it."""
    cache, k, _ = inputs()
    cm = coec.compile(UpdatesAnActivation().eval(), (cache, k), fusion="none", dtype="fp32")
    torch.testing.assert_close(cm(cache, k), UpdatesAnActivation()(cache, k))
    update = kernel_with(cm.schedule, "update")
    assert update["estimate"]["bytes"] == {"hbm->sram": 32, "sram->hbm": 32}
    (store,) = update["stores"]
    assert cm.schedule["buffers"][store["buffer"]]["alias_of"] is not None
