"""The sharding pass: layouts propagated through the graph, checked against transformers
on every socket's shard, and the Megatron pattern it should find, counted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coec.frontend.export import export_module
from coec.frontend.lower import lower_program
from coec.ir import ops as df
from coec.ir import verify
from coec.passes.sharding import R, join_parts, shard_function, slice_for, weight_layout
from coec.pipeline import Options, Pipeline
from coec.runtime.node import run_node

transformers = pytest.importorskip("transformers")

SMALL = dict(
    num_hidden_layers=2,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    vocab_size=128,
)


def configs():
    T = transformers
    return {
        "llama": T.LlamaConfig(num_key_value_heads=2, **SMALL),
        "qwen2": T.Qwen2Config(num_key_value_heads=2, **SMALL),
        "gemma2": T.Gemma2Config(num_key_value_heads=2, head_dim=16, sliding_window=4, **SMALL),
        "bloom": T.BloomConfig(n_layer=2, hidden_size=64, n_head=4, vocab_size=128),
        "gpt2": T.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128),
        "phi3": T.Phi3Config(num_key_value_heads=2, pad_token_id=0, **SMALL),
        "falcon": T.FalconConfig(
            num_hidden_layers=2,
            hidden_size=64,
            num_attention_heads=4,
            new_decoder_architecture=True,
            num_kv_heads=2,
            vocab_size=128,
        ),
    }


def layout(lay) -> tuple[int, int]:
    return (lay.dim, lay.parts) if lay.kind == "S" else (-1, 1)


def sharded_run(name: str, phase: str, sockets: int):
    """The model's step sharded by the pass, run on every socket; with transformers'
    outputs, the updated caches, the layouts and the collectives."""
    from coec.models.hf_config import HFModel, step_and_inputs

    torch.manual_seed(0)
    hf = HFModel.of(configs()[name], device="cpu")
    step, inputs = step_and_inputs(hf, hf.model, phase, 8, 1, device="cpu")
    program = lower_program(export_module(step, tuple(x.clone() for x in inputs)), "f32")
    fn, mutated = program.func, program.mutated_inputs
    in_place = {i: program.input_names.index(m) for i, m in enumerate(mutated)}
    args, results = shard_function(fn, sockets, [R] + [None] * (len(inputs) - 1), in_place)
    verify(program.module)
    weights_ops = [op for op in fn.walk() if isinstance(op, df.WeightOp)]
    weights = [
        {
            op.sym_name.data: np.ascontiguousarray(
                slice_for(
                    program.weights[op.sym_name.data].detach().numpy(),
                    weight_layout(op),
                    s,
                    sockets,
                )
            )
            for op in weights_ops
        }
        for s in range(sockets)
    ]
    feeds = [
        [
            np.ascontiguousarray(slice_for(x.numpy(), layout(a), s, sockets))
            for x, a in zip(inputs, args, strict=True)
        ]
        for s in range(sockets)
    ]
    target = "sn40l-node" if sockets == 8 else "sn40l"
    pipeline = Pipeline(Options(target, "dataflow", "fp32", sockets=sockets))
    pipeline.run(program.module)
    outs, _ = run_node(pipeline.emit(program.module), weights, feeds)
    copies = [x.clone() for x in inputs]
    with torch.no_grad():
        reference = step(*copies)
    caches = [join_parts([o[i] for o in outs], layout(results[i])) for i in range(len(mutated))]
    want = [copies[in_place[i]].numpy() for i in range(len(mutated))]
    collectives = [op.name for op in fn.walk() if isinstance(op, df.AllReduceOp | df.AllGatherOp)]
    return outs[0][len(mutated)], reference.numpy(), caches, want, args, collectives


@pytest.mark.parametrize("name", ["llama", "qwen2", "gemma2", "bloom", "phi3"])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_the_megatron_pattern_is_found_and_computes_what_transformers_does(name, phase):
    """Two sockets: logits and every cache equal transformers' (caches joined from the
    sockets' heads); the collectives are Megatron's: the embedding's rows gathered, an
    all-reduce after each layer's attention and MLP, the LM head's logits gathered; the
    KV caches split by heads. Phi-3's fused QKV and gate/up projections split block by
    block (each socket its part of q, of k, of v)."""
    logits, reference, caches, want, args, collectives = sharded_run(name, phase, 2)
    np.testing.assert_allclose(logits, reference, atol=1e-5)
    for got, expected in zip(caches, want, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert collectives.count("df.allreduce") == 2 * 2
    assert collectives.count("df.allgather") == 2
    assert all(layout(a) == (1, 2) for a in args[1:])  # [batch, heads, positions, dim]


def test_kv_heads_fewer_than_sockets_repeat_on_sockets():
    """Llama with 2 KV heads on 4 sockets: the K/V projections and caches are cut in 2
    parts, each on 2 sockets (the query heads in 4); the numerics hold."""
    logits, reference, caches, want, args, _ = sharded_run("llama", "decode", 4)
    np.testing.assert_allclose(logits, reference, atol=1e-5)
    for got, expected in zip(caches, want, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert all(layout(a) == (1, 2) for a in args[1:])


@pytest.mark.parametrize(
    ("name", "reduces", "gathers"),
    [
        ("gpt2", 4, 3),  # two embedding tables (tokens, positions) gathered; fused QKV
        ("falcon", 2, 2),  # attention and MLP side by side: one all-reduce a layer
    ],
)
def test_fused_projections_and_parallel_blocks_shard_too(name, reduces, gathers):
    """GPT-2's fused QKV (sliced into q, k, v) and Falcon's grouped QKV (reshaped into
    groups of heads) split by heads; Falcon's parallel attention and MLP share one
    all-reduce a layer."""
    logits, reference, caches, want, args, collectives = sharded_run(name, "decode", 2)
    np.testing.assert_allclose(logits, reference, atol=1e-5)
    for got, expected in zip(caches, want, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert collectives.count("df.allreduce") == reduces
    assert collectives.count("df.allgather") == gathers
    assert all(layout(a) == (1, 2) for a in args[1:])
