"""A HuggingFace Llama causal LM, as a user would bring it to coec.

With the weights at hand, ``LlamaForCausalLM.from_pretrained(path)`` replaces the config
below; here a small random model (2 layers, hidden 256) keeps the tutorial offline and fast.
"""

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=4,
        use_cache=False,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).eval()


def example_inputs() -> tuple[torch.Tensor, ...]:
    return (torch.randint(0, 1024, (1, 64), generator=torch.Generator().manual_seed(0)),)
