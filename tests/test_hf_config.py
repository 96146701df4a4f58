"""Any transformers model from its config: regional compilation of its layer kinds,
executed against transformers on one and two sockets, and the shipped configs."""

from __future__ import annotations

import json

import pytest

from coec.cli import main
from coec.commands import compile_hf_model
from coec.models.hf_config import HFModel, read_config, shipped_configs

transformers = pytest.importorskip("transformers")

SMALL = dict(
    num_hidden_layers=3,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    vocab_size=128,
)
FAMILIES = {
    "llama": dict(model_type="llama", num_key_value_heads=2, **SMALL),
    "qwen2": dict(model_type="qwen2", num_key_value_heads=2, **SMALL),
    "gemma2": dict(
        model_type="gemma2", num_key_value_heads=2, head_dim=16, sliding_window=4, **SMALL
    ),
    "phi3": dict(model_type="phi3", num_key_value_heads=2, pad_token_id=0, **SMALL),
    "falcon": dict(
        model_type="falcon",
        num_hidden_layers=3,
        hidden_size=64,
        num_attention_heads=4,
        new_decoder_architecture=True,
        num_kv_heads=2,
        vocab_size=128,
    ),
    "gpt2": dict(model_type="gpt2", n_layer=3, n_embd=64, n_head=4, vocab_size=128),
    "bloom": dict(model_type="bloom", n_layer=3, hidden_size=64, n_head=4, vocab_size=128),
    "bert": dict(model_type="bert", **SMALL),
    "mixtral": dict(
        model_type="mixtral",
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        **SMALL,
    ),
    "qwen2_moe": dict(
        model_type="qwen2_moe",
        num_key_value_heads=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=64,
        num_experts=8,
        num_experts_per_tok=2,
        **SMALL,
    ),
}
MORE = {
    "mistral": dict(model_type="mistral", num_key_value_heads=2, sliding_window=4, **SMALL),
    "qwen3": dict(model_type="qwen3", num_key_value_heads=2, head_dim=16, **SMALL),
    "gemma": dict(model_type="gemma", num_key_value_heads=2, head_dim=16, **SMALL),
    "olmo": dict(model_type="olmo", num_key_value_heads=2, **SMALL),
    "stablelm": dict(model_type="stablelm", num_key_value_heads=2, **SMALL),
    "gpt_neox": dict(model_type="gpt_neox", **SMALL),
    "opt": dict(
        model_type="opt",
        num_hidden_layers=3,
        hidden_size=64,
        ffn_dim=128,
        num_attention_heads=4,
        word_embed_proj_dim=64,
        vocab_size=128,
    ),
}


def config_file(tmp_path, fields: dict):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(fields))
    return path


def check(tmp_path, fields: dict, phase: str, sockets: int) -> dict:
    target = "sn40l-node" if sockets > 1 else "sn40l"
    report = compile_hf_model(
        config_file(tmp_path, fields),
        phase=phase,
        seq=8,
        execute=True,
        target=target,
        sockets=sockets,
        dtype="fp32",
    ).report
    assert report["max_abs_err"] < 1e-4, report["max_abs_err"]  # logits and every cache
    return report


@pytest.mark.parametrize("sockets", [1, 2])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_computes_what_transformers_does(tmp_path, name, phase, sockets):
    """A tiny config of each family, its layers compiled once per kind and stitched, run
    on the NumPy runtime (on two sockets: sharded by the layout pass), against
    transformers' own model: the logits and every KV cache the step writes."""
    if name == "bert" and phase == "decode":
        with pytest.raises(Exception, match="encoder has no decode step"):
            check(tmp_path, FAMILIES[name], phase, sockets)
        return
    report = check(tmp_path, FAMILIES[name], phase, sockets)
    if sockets > 1:
        assert report["bytes"]["sram->p2p"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("sockets", [1, 2])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("name", list(MORE))
def test_more_families_compute_what_transformers_does(tmp_path, name, phase, sockets):
    check(tmp_path, MORE[name], phase, sockets)


def test_layer_kinds_follow_the_config():
    """Gemma-2 alternates local and global layers: two kinds; Llama's are all one."""
    gemma = HFModel.of(read_config("gemma-2-9b"))
    assert gemma.kinds[:4] == [0, 1, 0, 1] and gemma.short_layers == 2
    llama = HFModel.of(read_config("llama-3.1-70b"))
    assert set(llama.kinds) == {0} and len(llama.kinds) == 80


def test_a_sliding_window_reads_only_the_window(tmp_path):
    """Mistral-style decode at 8 past tokens: with a window of 4 each layer holds and reads
    4 positions of K and V, not 9, and a mask of 4 (one byte a position). Every other byte
    is the same, so the HBM reads differ by layers · (2 (K, V) · KV heads · head dim · 4
    bytes (fp32) + 1) · (9 − 4) positions."""
    base = dict(model_type="mistral", num_key_value_heads=2, **SMALL)

    def reads(window):
        path = config_file(tmp_path, {**base, "sliding_window": window})
        r = compile_hf_model(path, phase="decode", seq=8, dtype="fp32").report
        return r["bytes"]["hbm->sram"]

    layers, kv_heads, head_dim = 3, 2, 64 // 4
    assert reads(64) - reads(4) == layers * (2 * kv_heads * head_dim * 4 + 1) * (9 - 4)


#: published parameter counts (model cards / papers), billions
PUBLISHED = {
    "llama-2-7b": 6.74,
    "llama-2-70b": 68.98,
    "llama-3.1-8b": 8.03,
    "llama-3.1-70b": 70.55,
    "mistral-7b": 7.24,
    "mixtral-8x7b": 46.70,
    "qwen2-7b": 7.62,
    "qwen2-72b": 72.71,
    "gemma-2-9b": 9.24,
    "gemma-2-27b": 27.23,
    "bloom-176b": 176.25,
    "gpt2": 0.124,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_configs_have_their_published_sizes(name):
    """The shipped configs, built by transformers, have the parameters their model cards
    state (to 0.5%): the transcription of each config.json is checked."""
    params = HFModel.of(read_config(name)).params() / 1e9
    assert params == pytest.approx(PUBLISHED[name], rel=5e-3)


def test_every_shipped_config_names_its_source():
    from coec.models.hf_config import CONFIGS

    for name in shipped_configs():
        data = json.loads((CONFIGS / f"{name}.json").read_text())
        assert "HuggingFace Hub" in data["_source"], name


def test_the_cli_compiles_a_config_and_refuses_a_missing_one(tmp_path, capsys):
    path = config_file(tmp_path, FAMILIES["llama"])
    assert main(["compile", "--hf-config", str(path), "--seq", "8", "--json"]) in (None, 0)
    report = json.loads(capsys.readouterr().out)
    assert report["kernels"] >= 1
    with pytest.raises(SystemExit) as stop:
        main(["compile", "--hf-config", str(tmp_path / "nope.json")])
    assert stop.value.code != 0
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_shipped_config_by_name_compiles_count_only_at_full_size():
    """Qwen2-7B (a CoE-paper expert), decode at 4096 on one socket, count-only on the meta
    device: a step reads every weight but the embedding table (one row of it) and the KV
    cache (28 layers · K, V · 4 heads · 4097 positions · 128 · 2 bytes), in bf16."""
    config = read_config("qwen2-7b")
    params = HFModel.of(config).params()
    weights = 2 * (params - config.vocab_size * config.hidden_size)
    kv = 28 * 2 * 4 * 4097 * 128 * 2
    report = compile_hf_model("qwen2-7b", phase="decode", seq=4096).report
    assert weights + kv <= report["bytes"]["hbm->sram"] <= 1.001 * (weights + kv)


def test_the_python_api_compiles_a_config(tmp_path):
    import coec

    cm = coec.compile_hf_config(
        config_file(tmp_path, FAMILIES["qwen2"]),
        phase="decode",
        seq=8,
        execute=True,
        dtype="fp32",
    )
    assert cm.report["max_abs_err"] < 1e-4 and cm.report["kernels"] >= 1


def test_a_token_reads_only_the_experts_it_is_routed_to(tmp_path):
    """Mixtral decode: each more expert a token is routed to (top-k) reads exactly one more
    expert's weights per layer — gate and up (2·I × D) and down (D × I), in fp32 — and
    nothing else changes: the table of experts stays where it is, looked up by row."""
    base = FAMILIES["mixtral"]

    def reads(k):
        path = config_file(tmp_path, {**base, "num_experts_per_tok": k})
        return compile_hf_model(path, phase="decode", seq=8, dtype="fp32").report["bytes"]

    layers, hidden, inter = 3, 64, 128
    per_expert = layers * (2 * inter * hidden + hidden * inter) * 4
    one, two, three = (reads(k)["hbm->sram"] for k in (1, 2, 3))
    assert two - one == three - two == per_expert


def test_experts_shard_over_sockets(tmp_path):
    """On two sockets each holds half of every expert (its columns of gate and up, its rows
    of down), so the HBM each socket holds is about half."""
    path = config_file(tmp_path, FAMILIES["mixtral"])
    one = compile_hf_model(path, phase="decode", seq=8, dtype="fp32").report
    two = compile_hf_model(
        path, phase="decode", seq=8, dtype="fp32", target="sn40l-node", sockets=2
    ).report
    assert two["peak_bytes"]["hbm"] < 0.6 * one["peak_bytes"]["hbm"]
