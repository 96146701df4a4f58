"""HuggingFace transformers' decoder layers as zoo layers.

The zoo's Llama-family models (Llama 2, Llama 3.1, Mistral) are built from
transformers' own classes (``LlamaDecoderLayer``, ``MistralDecoderLayer`` and
their rotary embeddings), configured from the published hyper-parameters. One
``HFLayer`` is the unit regional compilation compiles once; it has the zoo
layer's contract: ``(hidden, past_k, past_v) -> (hidden, keys, values)``.

Two small adapters make a HF layer fit:

- ``_CaptureCache`` stands in for transformers' ``Cache``: the attention calls
  ``cache.update(k, v, ...)`` with the new token's K/V. In prefill it keeps them (the
  layer's K/V outputs); in decode it writes them into the free slot of the
  preallocated cache (``slice_scatter``, which coec writes in place: one position per
  step) and returns the whole cache, so decode attends over the KV cache held in HBM;
- under tensor parallelism the layer is built with its socket's share of heads and
  FFN columns, and a forward hook all-reduces the output of the row-parallel
  projections (``o_proj``, ``down_proj``), Megatron-style.
"""

from __future__ import annotations

import torch

from coec.frontend.collectives import all_reduce

#: parameter role under tensor parallelism, by the projection's name
_COLUMN = ("q_proj", "gate_proj", "up_proj")
_KV = ("k_proj", "v_proj")
_ROW = ("o_proj", "down_proj")


def hf_config(arch, tp: int = 1):
    """The transformers config of one socket's shard of ``arch`` (one layer)."""
    from transformers import LlamaConfig, MistralConfig

    config_class = {"llama": LlamaConfig, "mistral": MistralConfig}[arch.hf]
    return config_class(
        vocab_size=arch.vocab,
        hidden_size=arch.hidden,
        intermediate_size=arch.ffn // tp,
        num_hidden_layers=1,
        num_attention_heads=arch.heads // tp,
        num_key_value_heads=max(1, arch.kv_heads // tp),
        head_dim=arch.head_dim,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": arch.rope_theta},
        attn_implementation="sdpa",
        use_cache=False,
    )


class _CaptureCache:
    """A one-layer stand-in for transformers' Cache: the new K/V written at ``position`` of
    the preallocated cache (kept as the layer's K/V outputs), or kept alone in prefill."""

    def __init__(self, past_k: torch.Tensor | None, past_v: torch.Tensor | None, position: int):
        self.past, self.position = (past_k, past_v), position
        self.k = self.v = None

    def update(self, k, v, layer_idx=0, *args, **kwargs):
        self.k, self.v = k, v
        past_k, past_v = self.past
        if past_k is not None:
            self.k = torch.slice_scatter(past_k, k, dim=2, start=self.position)
            self.v = torch.slice_scatter(past_v, v, dim=2, start=self.position)
        return self.k, self.v


def _all_reduce_output(module, inputs, output):
    return all_reduce(output)


class HFLayer(torch.nn.Module):
    """One transformers decoder layer (a socket's shard under ``tp`` > 1) as a zoo layer."""

    def __init__(self, arch, past: int, tp: int = 1):
        super().__init__()
        from transformers.models.llama.modeling_llama import (
            LlamaDecoderLayer,
            LlamaRotaryEmbedding,
        )
        from transformers.models.mistral.modeling_mistral import MistralDecoderLayer

        self.arch, self.past, self.tp = arch, past, tp
        self.kv_heads = max(1, arch.kv_heads // tp)
        config = hf_config(arch, tp)
        layer_class = {"llama": LlamaDecoderLayer, "mistral": MistralDecoderLayer}[arch.hf]
        self.block = layer_class(config, layer_idx=0)
        self.rotary = LlamaRotaryEmbedding(config)
        if tp > 1:
            self.block.self_attn.o_proj.register_forward_hook(_all_reduce_output)
            self.block.mlp.down_proj.register_forward_hook(_all_reduce_output)

    def shard(self, name: str, state: dict[str, torch.Tensor], socket: int) -> torch.Tensor:
        """Socket ``socket``'s slice of ``name`` from the unsharded layer's state dict."""
        full = state[name]
        if self.tp == 1:
            return full
        part = name.split(".")[-2]
        if part in _COLUMN:
            n = full.shape[0] // self.tp
            return full[socket * n : (socket + 1) * n]
        if part in _KV:
            hd = self.arch.head_dim
            first = socket * self.arch.kv_heads // self.tp
            return full[first * hd : (first + self.kv_heads) * hd]
        if part in _ROW:
            n = full.shape[1] // self.tp
            return full[:, socket * n : (socket + 1) * n]
        return full  # norms: replicated

    def forward(self, h, past_k=None, past_v=None):
        s = h.shape[1]
        positions = torch.arange(self.past, self.past + s, device=h.device)[None]
        cache = _CaptureCache(past_k, past_v, self.past)
        out = self.block(
            h,
            attention_mask=None,  # causal in prefill (SDPA's is_causal), all keys in decode
            position_ids=positions,
            cache=cache,
            position_embeddings=self.rotary(h, positions),
        )
        return out, cache.k, cache.v


def hf_causal_lm(model, arch):
    """transformers' full CausalLM for ``arch`` holding the zoo ``model``'s weights.

    The zoo is built of transformers' layers, so the two compute the same function;
    this is the reference that shows it (tests compare logits).
    """
    from transformers import LlamaForCausalLM, MistralForCausalLM

    config = hf_config(arch)
    config.num_hidden_layers = arch.layers
    lm_class = {"llama": LlamaForCausalLM, "mistral": MistralForCausalLM}[arch.hf]
    lm = lm_class(config).eval()
    renamed = {}
    for name, value in model.state_dict().items():
        head, _, rest = name.partition(".")
        if head == "layers":
            index, _, rest = rest.partition(".")
            name = f"model.layers.{index}.{rest.removeprefix('block.')}"
        elif head == "embed":
            name = "model.embed_tokens.weight"
        elif name == "head.norm.weight":
            name = "model.norm.weight"
        else:
            name = rest  # head.lm_head.weight
        renamed[name] = value
    lm.load_state_dict(renamed, strict=True)
    return lm
