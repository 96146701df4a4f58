"""Which HuggingFace families does coec compile? Tiny random models of each, compiled with
dataflow fusion, run on the NumPy runtime and compared with PyTorch eager.

    python benchmarks/hf_families.py                 # every family
    python benchmarks/hf_families.py vit resnet      # some

Prints one line per family: the relative error of the output against eager, the kernel
count, and the wall time of compile + run; or the one-line error coec gave. Random
weights from configs: no downloads.
"""

from __future__ import annotations

import os
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
VOCAB = 128
SMALL = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4)


def _ids() -> tuple[torch.Tensor]:
    return (torch.randint(0, VOCAB, (1, 16), generator=torch.Generator().manual_seed(0)),)


def _image() -> tuple[torch.Tensor]:
    return (torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)),)


def _lm(config: str, model: str, **kw):
    import transformers as T

    cfg = getattr(T, config)(vocab_size=VOCAB, use_cache=False, **kw)
    cfg._experts_implementation = "batched_mm"  # MoE experts: static shapes that export
    return getattr(T, model)(cfg), _ids()


def _base(config: str, model: str, inputs, **kw):
    import transformers as T

    return getattr(T, model)(getattr(T, config)(**kw)), inputs()


FAMILIES = {
    "llama": lambda: _lm("LlamaConfig", "LlamaForCausalLM", num_key_value_heads=2, **SMALL),
    "mistral": lambda: _lm("MistralConfig", "MistralForCausalLM", num_key_value_heads=2, **SMALL),
    "qwen2": lambda: _lm("Qwen2Config", "Qwen2ForCausalLM", num_key_value_heads=2, **SMALL),
    "qwen3": lambda: _lm(
        "Qwen3Config", "Qwen3ForCausalLM", num_key_value_heads=2, head_dim=16, **SMALL
    ),
    "phi3": lambda: _lm(
        "Phi3Config", "Phi3ForCausalLM", num_key_value_heads=2, pad_token_id=0, **SMALL
    ),
    "gemma": lambda: _lm(
        "GemmaConfig", "GemmaForCausalLM", num_key_value_heads=2, head_dim=16, **SMALL
    ),
    "gemma2": lambda: _lm(
        "Gemma2Config", "Gemma2ForCausalLM", num_key_value_heads=2, head_dim=16, **SMALL
    ),
    "olmo": lambda: _lm("OlmoConfig", "OlmoForCausalLM", num_key_value_heads=2, **SMALL),
    "stablelm": lambda: _lm(
        "StableLmConfig", "StableLmForCausalLM", num_key_value_heads=2, **SMALL
    ),
    "gpt2": lambda: _lm("GPT2Config", "GPT2LMHeadModel", n_layer=2, n_embd=64, n_head=4),
    "gpt_neox": lambda: _lm("GPTNeoXConfig", "GPTNeoXForCausalLM", **SMALL),
    "gptj": lambda: _lm(
        "GPTJConfig", "GPTJForCausalLM", n_layer=2, n_embd=64, n_head=4, rotary_dim=8
    ),
    "opt": lambda: _lm(
        "OPTConfig",
        "OPTForCausalLM",
        num_hidden_layers=2,
        hidden_size=64,
        ffn_dim=128,
        num_attention_heads=4,
        word_embed_proj_dim=64,
    ),
    "falcon": lambda: _lm(
        "FalconConfig",
        "FalconForCausalLM",
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        new_decoder_architecture=True,
        num_kv_heads=2,
    ),
    "bloom": lambda: _lm("BloomConfig", "BloomForCausalLM", n_layer=2, hidden_size=64, n_head=4),
    "mixtral": lambda: _lm(
        "MixtralConfig",
        "MixtralForCausalLM",
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        **SMALL,
    ),
    "bert": lambda: _base("BertConfig", "BertModel", _ids, vocab_size=VOCAB, **SMALL),
    "roberta": lambda: _base("RobertaConfig", "RobertaModel", _ids, vocab_size=VOCAB, **SMALL),
    "distilbert": lambda: _base(
        "DistilBertConfig",
        "DistilBertModel",
        _ids,
        vocab_size=VOCAB,
        n_layers=2,
        dim=64,
        hidden_dim=128,
        n_heads=4,
    ),
    "t5-encoder": lambda: _base(
        "T5Config",
        "T5EncoderModel",
        _ids,
        vocab_size=VOCAB,
        num_layers=2,
        d_model=64,
        d_ff=128,
        num_heads=4,
        d_kv=16,
    ),
    "vit": lambda: _base("ViTConfig", "ViTModel", _image, image_size=32, patch_size=8, **SMALL),
    "resnet": lambda: _base(
        "ResNetConfig",
        "ResNetModel",
        _image,
        embedding_size=16,
        hidden_sizes=[16, 32],
        depths=[1, 1],
    ),
    "convnext": lambda: _base(
        "ConvNextConfig",
        "ConvNextModel",
        _image,
        hidden_sizes=[16, 32],
        depths=[1, 1],
        num_stages=2,
        image_size=32,
    ),
    "mobilenet_v2": lambda: _base(
        "MobileNetV2Config", "MobileNetV2Model", _image, image_size=32, depth_multiplier=0.25
    ),
}


def _main_output(out):
    if isinstance(out, tuple | list):
        return out[0]
    for key in ("logits", "last_hidden_state"):
        if getattr(out, key, None) is not None:
            return getattr(out, key)
    return out


def check(name: str) -> str:
    import coec

    torch.manual_seed(0)
    start = time.perf_counter()
    try:
        model, inputs = FAMILIES[name]()
        model.eval()
        with torch.no_grad():
            ref = _main_output(model(*inputs))
        cm = coec.compile(model, inputs, fusion="dataflow", dtype="fp32")
        out = _main_output(cm(*inputs))
    except coec.CoecError as e:
        return f"{name:13s} no    {e}"
    err = (out.float() - ref.float()).abs().max().item() / (ref.abs().max().item() or 1.0)
    took = time.perf_counter() - start
    return f"{name:13s} yes   rel err {err:.1e}  kernels {cm.report['kernels']}  {took:.1f} s"


def main(argv: list[str]) -> None:
    names = argv or list(FAMILIES)
    unknown = sorted(set(names) - set(FAMILIES))
    if unknown:
        sys.exit(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    for name in names:
        print(check(name), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
