"""The model zoo and regional compilation: one decoder layer compiled, reused per layer."""

from __future__ import annotations

import json

import pytest
import torch
from test_counts import summary

import coec
from coec.api import CompiledModel
from coec.cli import main
from coec.models.zoo import ZOO, instantiate
from coec.pipeline import Options
from coec.regional import compile_zoo
from coec.runtime.executor import Executor


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
    assert report["bytes"]["sram->p2p"] == p2p_bytes(inst, sockets)
    _, counted = Executor(compiled.schedule, count_only=True).run()
    assert summary(counted) == summary(report)


def p2p_bytes(inst, sockets: int, dtype_bytes: int = 4) -> int:
    """What one socket sends its peers, by hand: ring all-reduces of the hidden state
    (2·(N−1)/N of it) after the embedding and after each layer's attention and MLP, and
    a ring all-gather of the logits, padded to N shards of ⌈vocab/N⌉ ((N−1)/N of them)."""
    tokens = inst.batch * inst.ids.shape[1]
    hidden_bytes = tokens * inst.arch.hidden * dtype_bytes
    logits_bytes = tokens * -(-inst.arch.vocab // sockets) * sockets * dtype_bytes
    reduces = 1 + inst.arch.layers * (1 if inst.arch.parallel else 2)
    return (
        reduces * 2 * (sockets - 1) * hidden_bytes // sockets
        + (sockets - 1) * logits_bytes // sockets
    )


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize(
    "name, sockets, vocab",
    [
        ("tiny-llama", 2, 253),
        ("tiny-mistral", 4, 254),
        ("tiny-falcon", 4, 7),
        ("tiny-bloom", 2, 256),
    ],
)
def test_vocab_parallel_embedding_and_head_match_one_socket(name, phase, sockets, vocab):
    """Each socket holds ⌈vocab/N⌉ rows of the embedding and LM head (zero-padded when N
    does not divide the vocabulary); the logits every socket ends with are the model's."""
    from dataclasses import replace

    from coec.api import to_numpy
    from coec.regional import shard_inputs
    from coec.runtime.node import run_node

    arch, rows = replace(ZOO[name], vocab=vocab), -(-vocab // sockets)
    inst = instantiate(arch, phase, seq=8, batch=sockets + 1, device="cpu")
    ids = inst.ids.view(-1)  # among them: every shard's first id and the last id
    ids[: sockets + 1] = torch.tensor([*range(0, sockets * rows, rows), vocab - 1])
    compiled = compile_zoo(inst, Options(fusion="dataflow", dtype="fp32", sockets=sockets))
    table = inst.model.embed.tokens.weight
    for s, w in enumerate(compiled.program.socket_weights):
        assert w["embed.tokens.weight"].shape == w["head.lm_head.weight"].shape == (rows, 64)
        assert w["embed.vocab_start"].tolist() == [s * rows]
    joined = torch.cat([w["embed.tokens.weight"] for w in compiled.program.socket_weights])
    assert torch.equal(joined[:vocab], table) and not joined[vocab:].any()  # padded with zeros
    weights = [{k: to_numpy(v) for k, v in w.items()} for w in compiled.program.socket_weights]
    feeds = [[to_numpy(x) for x in shard_inputs(inst, s, sockets)] for s in range(sockets)]
    outs, report = run_node(compiled.schedule, weights, feeds, step_rows=1)
    with torch.no_grad():
        ref = inst.model(inst.ids, *inst.caches)[0]
    assert ref.shape[-1] == vocab
    for socket_outs in outs:
        logits = torch.from_numpy(socket_outs[0])
        assert logits.shape == ref.shape
        assert (logits - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert report["bytes"]["sram->p2p"] == p2p_bytes(inst, sockets)


def weight_bytes(schedule: dict) -> dict[str, int]:
    """A socket's parameter bytes by name (folded constants left out)."""
    return {
        name: b["bytes"]
        for name, b in schedule["buffers"].items()
        if b["kind"] == "weight" and not name.startswith("const.")
    }


def test_weight_bytes_per_socket_by_hand():
    """tiny-llama with a 253-token vocabulary (hidden 64, 4 heads of 16, 2 KV heads, FFN
    128, 2 layers) in bf16, on 1 and on 2 sockets."""
    from dataclasses import replace

    arch = replace(ZOO["tiny-llama"], vocab=253)
    inst = instantiate(arch, "prefill", seq=8, device="meta")
    one = weight_bytes(compile_zoo(inst, Options(sockets=1)).schedule)
    two = weight_bytes(compile_zoo(inst, Options(sockets=2)).schedule)
    # one socket: embedding and LM head 253 x 64 x 2 = 32,384 bytes each
    assert one["embed.tokens.weight"] == one["head.lm_head.weight"] == 32_384
    # two: ceil(253 / 2) = 127 rows each (socket 1's last row is padding), 127 x 64 x 2
    assert two["embed.tokens.weight"] == two["head.lm_head.weight"] == 16_256
    assert two["embed.vocab_start"] == 8  # the first id a socket holds, one int64
    # a layer on one socket: q, o 64x64; k, v 64x32; gate, up, down 64x128; 2 norms of 64
    # = 36,992 parameters; on each of two: q, o 64x32; k, v 64x16; gate, up, down 64x64;
    # 2 norms = 18,560 (norms replicated)
    assert sum(v for k, v in one.items() if k.startswith("layers.")) == 2 * 36_992 * 2
    assert sum(v for k, v in two.items() if k.startswith("layers.")) == 2 * 18_560 * 2
    # in all: layers + final norm (64 x 2) + embedding + LM head (+ vocab_start)
    assert sum(one.values()) == 147_968 + 128 + 2 * 32_384 == 212_864
    assert sum(two.values()) == 74_240 + 128 + 2 * 16_256 + 8 == 106_888


def test_llama2_7b_on_a_node_holds_an_eighth_of_its_vocabulary_per_socket():
    """The CoE expert of ``coec bench coe``: llama2-7b over 8 sockets, bf16."""
    from coec.commands import compile_zoo_model

    r = compile_zoo_model("llama2-7b", phase="decode", seq=16, target="sn40l-node")
    per_socket = weight_bytes(r.model.schedule)
    # embedding and LM head: 32000 / 8 = 4000 rows x 4096 x 2 bytes each
    assert per_socket["embed.tokens.weight"] == per_socket["head.lm_head.weight"] == 32_768_000
    # 32 layers x (4 x 4096² + 3 x 4096 x 11008) / 8 x 2 = 1,619,001,344, their norms
    # 32 x 2 x 4096 x 2 = 524,288, the final norm 8,192, vocab_start 8
    assert sum(per_socket.values()) == 1_619_001_344 + 524_288 + 8_192 + 2 * 32_768_000 + 8
    # the node holds 13.48 GB of parameters (17.15 GB with the vocabulary on every socket)
    assert 8 * sum(per_socket.values()) == 13_480_558_656


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
    # every socket streams its eighth of the weights (embedding and LM head split by vocabulary)
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

    from coec.models.hf_layers import hf_causal_lm

    inst = instantiate(name, phase, seq=8, batch=2, device="cpu")
    lm = hf_causal_lm(inst.model, inst.arch)
    cache = DynamicCache(config=lm.config) if inst.caches else None
    for i in range(len(inst.caches) // 2):  # HF's cache holds the S filled positions
        cache.update(inst.caches[2 * i][:, :, :-1], inst.caches[2 * i + 1][:, :, :-1], i)
    with torch.no_grad():
        ref = lm(inst.ids, cache=cache).logits
    cm = CompiledModel(compile_zoo(inst, Options(fusion="dataflow", dtype="fp32")))
    logits, *kv = cm(inst.ids, *inst.caches)
    assert logits.shape == ref.shape
    assert (logits - ref).abs().max() <= 1e-4 * ref.abs().max()
    if cache is not None:  # the step wrote the new K/V in place: HF's S + 1 positions
        for i, layer in enumerate(cache.layers):
            for mine, hf in ((kv[2 * i], layer.keys), (kv[2 * i + 1], layer.values)):
                assert mine.shape == hf.shape
                assert (mine - hf).abs().max() <= 1e-5 * hf.abs().max()


def test_tensor_parallel_schedule_is_identical_across_processes():
    import subprocess
    import sys

    script = (
        "import sys, dataclasses;"
        "from coec.backend.schedule import dumps;"
        "from coec.pipeline import Options;"
        "from coec.regional import compile_zoo;"
        "from coec.models.zoo import ZOO, instantiate;"
        "arch = dataclasses.replace(ZOO['tiny-mistral'], vocab=255);"
        "inst = instantiate(arch, 'decode', seq=8, batch=2);"
        "c = compile_zoo(inst, Options(fusion='dataflow', sockets=4));"
        "sys.stdout.write(dumps(c.schedule))"
    )
    outs = []
    for seed in ("1", "2"):
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
        r = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
        )
        outs.append(r.stdout)
    assert outs[0] == outs[1] and '"op": "allgather"' in outs[0]
