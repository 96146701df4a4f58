"""The model zoo and regional compilation: one decoder layer compiled, reused per layer."""

from __future__ import annotations

import json

import pytest
import torch
from test_counts import summary

import coec
from coec.api import CompiledModel
from coec.cli import main
from coec.pipeline import Options
from coec.regional import compile_zoo
from coec.runtime.executor import Executor
from coec.zoo import ZOO, instantiate


@pytest.mark.parametrize("fusion", ["none", "dataflow"])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-falcon", "tiny-bloom"])
def test_zoo_models_match_pytorch(name, phase, fusion):
    inst = instantiate(name, phase, seq=8, batch=2, device="cpu")
    options = Options(fusion=fusion, dtype="fp32", max_tile=3)
    cm = CompiledModel(compile_zoo(inst, options), step_rows=1)
    inputs = (inst.ids, *inst.caches)
    outs = cm(*inputs)
    with torch.no_grad():
        refs = inst.model(*inputs)
    assert len(outs) == len(refs) == 1 + 2 * inst.arch.layers
    for out, ref in zip(outs, refs, strict=True):
        assert out.shape == ref.shape
        assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_count_only_equals_execute_on_a_zoo_model():
    inst = instantiate("tiny-llama", "decode", seq=16, batch=2, device="cpu")
    cm = CompiledModel(compile_zoo(inst, Options(fusion="dataflow")))
    _, counted = Executor(cm.schedule, count_only=True).run()
    cm(inst.ids, *inst.caches)
    assert summary(counted) == summary(cm.report) == cm.estimate


def test_meta_device_compile_counts_like_a_real_one():
    real = instantiate("tiny-bloom", "prefill", seq=8, device="cpu")
    meta = instantiate("tiny-bloom", "prefill", seq=8, device="meta")
    a = CompiledModel(compile_zoo(real, Options(fusion="dataflow")))
    b = CompiledModel(compile_zoo(meta, Options(fusion="dataflow")))
    assert summary(a.report) == summary(b.report)
    with pytest.raises(coec.ExecutionError, match="meta device"):
        b(meta.ids)


def counts(layers: int) -> dict:
    inst = instantiate("tiny-llama", "prefill", seq=16, layers=layers)
    report = CompiledModel(compile_zoo(inst, Options(fusion="epilogue"))).report
    flat = {k: report[k] for k in ("kernels", "flops", "cycles")}
    flat.update({f"bytes {p}": n for p, n in report["bytes"].items()})
    return flat


def test_repeated_layers_scale_exactly():
    c2, c4, c8 = counts(2), counts(4), counts(8)
    for key in c2:
        per_layer = (c4[key] - c2[key]) // 2
        assert (c4[key] - c2[key]) % 2 == 0
        assert c8[key] - c2[key] == 6 * per_layer, key  # 8 layers = 2 layers + 6 more
        prologue_epilogue = c2[key] - 2 * per_layer
        assert c8[key] - prologue_epilogue == 4 * (c2[key] - prologue_epilogue), key


def test_full_size_decode_from_the_cli(capsys):
    main(
        [
            "compile",
            "--zoo",
            "llama2-7b",
            "--phase",
            "decode",
            "--seq",
            "4096",
            "--layers",
            "2",
            "--fusion",
            "dataflow",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    weights_7b_2_layers = 2 * 2 * (4 * 4096 * 4096 + 3 * 4096 * 11008)  # bf16 bytes
    assert report["bytes"]["hbm->sram"] > weights_7b_2_layers
    assert report["seconds"] > 0 and report["kernels"] >= 3


def test_unknown_zoo_model_is_one_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compile", "--zoo", "gpt-5"])
    assert exit_info.value.code == coec.ConfigError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown zoo model 'gpt-5'" in err[0]


def test_zoo_lists_every_model(capsys):
    main(["zoo"])
    out = capsys.readouterr().out
    assert all(name in out for name in ZOO)
    assert "69.0 B params" in out  # llama2-70b from its published shape


@pytest.mark.parametrize("fusion", ["none", "dataflow"])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-falcon", "tiny-bloom"])
def test_tensor_parallel_sockets_match_pytorch(name, phase, fusion):
    from coec.api import to_numpy
    from coec.regional import shard_inputs
    from coec.runtime.node import run_node

    sockets = 2
    inst = instantiate(name, phase, seq=8, batch=2, device="cpu")
    compiled = compile_zoo(inst, Options(fusion=fusion, dtype="fp32", sockets=sockets, max_tile=3))
    weights = [{k: to_numpy(v) for k, v in w.items()} for w in compiled.program.socket_weights]
    feeds = [[to_numpy(x) for x in shard_inputs(inst, s, sockets)] for s in range(sockets)]
    outs, report = run_node(compiled.schedule, weights, feeds, step_rows=1)
    with torch.no_grad():
        refs = inst.model(inst.ids, *inst.caches)
    for socket_outs in outs:  # every socket ends with the whole logits
        logits = torch.from_numpy(socket_outs[0])
        assert (logits - refs[0]).abs().max() <= 1e-4 * refs[0].abs().max()
    if inst.arch.kv_heads % sockets == 0:  # each socket holds its share of the new K/V
        for i, ref in enumerate(refs[1:]):
            whole = torch.cat([torch.from_numpy(o[1 + i]) for o in outs], dim=1)
            assert (whole - ref).abs().max() <= 1e-4 * ref.abs().max()
    # all-reduces after attention and MLP: 2·(N−1)/N of the hidden state each
    hidden_bytes = inst.batch * inst.ids.shape[1] * inst.arch.hidden * 4
    per_layer = 1 if inst.arch.parallel else 2
    expected = inst.arch.layers * per_layer * 2 * (sockets - 1) * hidden_bytes // sockets
    assert report["bytes"]["sram->p2p"] == expected
    _, counted = Executor(compiled.schedule, count_only=True).run()
    assert summary(counted) == summary(report)


def test_llama2_70b_decode_on_an_8_socket_node(capsys):
    main(
        [
            "compile",
            "--zoo",
            "llama2-70b",
            "--phase",
            "decode",
            "--seq",
            "4096",
            "--target",
            "sn40l-node",
            "--fusion",
            "dataflow",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    weights_per_socket = ZOO["llama2-70b"].params() * 2 / 8
    # every socket streams its eighth of the weights (and the replicated embedding/head)
    assert report["bytes"]["hbm->sram"] > weights_per_socket
    assert report["bytes"]["sram->p2p"] > 0
    assert report["peak_bytes"]["ddr"] == 0  # an eighth of 70B fits one socket's HBM


def test_model_file_on_several_sockets_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compile", "examples/mlp.py", "--sockets", "2"])
    assert exit_info.value.code == coec.ConfigError.exit_code
    assert "zoo models" in capsys.readouterr().err


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-mistral"])
def test_llama_family_zoo_models_are_transformers_models(name, phase):
    """The zoo's Llama/Mistral are transformers' classes: compiled logits match the HF CausalLM."""
    from transformers import DynamicCache

    from coec.hf_layers import hf_causal_lm

    inst = instantiate(name, phase, seq=8, batch=2, device="cpu")
    lm = hf_causal_lm(inst.model, inst.arch)
    cache = DynamicCache(config=lm.config) if inst.caches else None
    for i in range(len(inst.caches) // 2):
        cache.update(inst.caches[2 * i], inst.caches[2 * i + 1], i)
    with torch.no_grad():
        ref = lm(inst.ids, cache=cache).logits
    cm = CompiledModel(compile_zoo(inst, Options(fusion="dataflow", dtype="fp32")))
    logits = cm(inst.ids, *inst.caches)[0]
    assert logits.shape == ref.shape
    assert (logits - ref).abs().max() <= 1e-4 * ref.abs().max()
