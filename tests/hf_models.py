"""Small random HuggingFace models built from configs (no network, no weights download)."""

from __future__ import annotations

import torch

VOCAB = 128


def _cfg(**kw):
    return dict(vocab_size=VOCAB, use_cache=False, **kw)


def gpt2(attn: str = "eager"):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_layer=2, n_embd=32, n_head=4, n_positions=64, attn_implementation=attn, **_cfg()
    )
    return GPT2LMHeadModel(cfg)


def llama(attn: str = "eager"):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_implementation=attn,
        **_cfg(),
    )
    return LlamaForCausalLM(cfg)


def bert(attn: str = "eager"):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        attn_implementation=attn,
        **_cfg(),
    )
    return BertModel(cfg)


def mistral(attn: str = "eager"):
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=4,
        attn_implementation=attn,
        **_cfg(),
    )
    return MistralForCausalLM(cfg)


BUILDERS = {"gpt2": gpt2, "llama": llama, "bert": bert, "mistral": mistral}


def token_ids(batch: int = 2, seq: int = 8) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(1))
