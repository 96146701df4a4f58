"""A zoo of decoder LLMs by name, built from their published hyper-parameters (no weights).

Each model is split into the parts regional compilation needs: ``Embed`` (token
ids -> hidden), one ``Layer`` (the repeated decoder layer) and ``Head`` (final
norm and LM head). ``ZooModel`` chains them for eager reference runs. Under tensor
parallelism every part is one socket's shard (``make_embed``, ``make_layer``,
``make_head``): the layers Megatron-style, the embedding and the LM head split by
vocabulary (``VocabParallelEmbed``, ``VocabParallelHead``), so no socket holds a
whole vocabulary-sized table.

Phases: ``prefill`` runs S prompt tokens (causal attention) and writes the layer's
K/V; ``decode`` runs one new token per sequence against a KV cache held in HBM,
preallocated with S + 1 positions of which the first S are filled: the step writes
the new token's K/V into position S (``slice_scatter``: coec writes it in place, one
position's bytes, as serving stacks' static caches do) and attends over all S + 1.

Llama 2, Llama 3.1 and Mistral are built of transformers' own decoder layers
(``coec.models.hf_layers.HFLayer``; tests check their logits against the HF CausalLM).
Falcon and BLOOM use ``Layer``, one family with switches: LayerNorm, GELU MLP,
attention and MLP in parallel (Falcon), ALiBi positions (BLOOM), grouped-query
attention. Not transformers' classes there, on purpose: HF's Falcon attention
caches K/V broadcast to all 128 query heads (16x the KV-cache bytes of Falcon-40B's
8 KV heads, which a decode cost model must not charge), and BLOOM's block takes a
precomputed ALiBi tensor and 4-D mask. Simplifications (each changes no GEMM
shape): Falcon-40B's two parallel layer norms are one; BLOOM's embedding
LayerNorm is left out; biases are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from coec.frontend.collectives import all_gather, all_reduce
from coec.ir.errors import ConfigError


@dataclass(frozen=True)
class Arch:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    norm: str = "rms"  # "rms" | "layer"
    mlp: str = "swiglu"  # "swiglu" | "gelu"
    parallel: bool = False  # attention and MLP read the same normed input
    position: str = "rope"  # "rope" | "alibi"
    rope_theta: float = 10000.0
    hf: str | None = None  # transformers' decoder-layer family ("llama", "mistral"), if used
    source: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def params(self) -> int:
        d, kv = self.hidden, self.kv_heads * self.head_dim
        attn = 2 * d * d + 2 * d * kv
        mlp = (3 if self.mlp == "swiglu" else 2) * d * self.ffn
        return self.layers * (attn + mlp) + 2 * self.vocab * d


_HF = "the model's config.json on the HuggingFace Hub"
_LLAMA2 = {"hf": "llama", "source": f"Touvron et al. 2023; {_HF}"}
_MISTRAL = {"hf": "mistral", "source": f"Jiang et al. 2023; {_HF}"}
# Llama 3.1's "llama3" RoPE scaling changes only the rotary frequencies (no cost): default RoPE
_LLAMA3 = {"hf": "llama", "rope_theta": 500000.0, "source": f"Llama 3 paper 2024; {_HF}"}
ZOO: dict[str, Arch] = {
    a.name: a
    for a in [
        Arch("llama2-7b", 32, 4096, 32, 32, 11008, 32000, **_LLAMA2),
        Arch("llama2-70b", 80, 8192, 64, 8, 28672, 32000, **_LLAMA2),
        Arch("mistral-7b", 32, 4096, 32, 8, 14336, 32000, **_MISTRAL),
        Arch(
            "falcon-40b",
            60,
            8192,
            128,
            8,
            32768,
            65024,
            "layer",
            "gelu",
            True,
            source=f"Almazrouei et al. 2023; {_HF}",
        ),
        Arch(
            "bloom-176b",
            70,
            14336,
            112,
            112,
            57344,
            250880,
            "layer",
            "gelu",
            position="alibi",
            source=f"BigScience 2022; {_HF}",
        ),
        Arch("llama3.1-8b", 32, 4096, 32, 8, 14336, 128256, **_LLAMA3),
        Arch("llama3.1-70b", 80, 8192, 64, 8, 28672, 128256, **_LLAMA3),
        Arch("llama3.1-405b", 126, 16384, 128, 8, 53248, 128256, **_LLAMA3),
        # small ones that execute in tests
        Arch("tiny-llama", 2, 64, 4, 2, 128, 256, hf="llama", source="test size"),
        Arch("tiny-mistral", 2, 64, 4, 2, 128, 256, hf="mistral", source="test size"),
        # small ones that split over an 8-socket node (CoE examples)
        Arch("small-llama", 2, 256, 8, 8, 512, 1024, hf="llama", source="example size"),
        Arch("small-mistral", 2, 256, 8, 8, 768, 1024, hf="mistral", source="example size"),
        Arch("tiny-falcon", 2, 64, 4, 1, 256, 256, "layer", "gelu", True, source="test size"),
        Arch(
            "tiny-bloom",
            2,
            64,
            4,
            4,
            256,
            256,
            "layer",
            "gelu",
            position="alibi",
            source="test size",
        ),
    ]
}


def get_arch(name: str, layers: int | None = None) -> Arch:
    if name not in ZOO:
        raise ConfigError(f"unknown zoo model {name!r}; known: {', '.join(ZOO)}")
    arch = ZOO[name]
    if layers is not None:
        if layers < 1:
            raise ConfigError(f"--layers {layers}: must be at least 1")
        arch = replace(arch, layers=layers)
    return arch


def _norm(arch: Arch) -> torch.nn.Module:
    if arch.hf:
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        return LlamaRMSNorm(arch.hidden, eps=1e-5)
    if arch.norm == "rms":
        return torch.nn.RMSNorm(arch.hidden, eps=1e-5)
    return torch.nn.LayerNorm(arch.hidden, eps=1e-5, bias=False)


def alibi_slopes(heads: int) -> torch.Tensor:
    """Press et al.'s geometric slopes (heads a power of two, else interleaved)."""
    n = 2 ** math.floor(math.log2(heads))
    base = [2 ** (-8 * (i + 1) / n) for i in range(n)]
    extra = [2 ** (-4 * (2 * i + 1) / n) for i in range(heads - n)]
    return torch.tensor(base + extra)


class Embed(torch.nn.Module):
    def __init__(self, arch: Arch):
        super().__init__()
        self.tokens = torch.nn.Embedding(arch.vocab, arch.hidden)

    def forward(self, ids):
        return self.tokens(ids)


class Head(torch.nn.Module):
    def __init__(self, arch: Arch):
        super().__init__()
        self.norm = _norm(arch)
        self.lm_head = torch.nn.Linear(arch.hidden, arch.vocab, bias=False)

    def forward(self, h):
        return self.lm_head(self.norm(h))


def vocab_shard(vocab: int, tp: int) -> int:
    """Rows of the embedding and of the LM head each of ``tp`` sockets holds: socket s
    holds vocabulary ids ``[s·rows, (s+1)·rows)``; when ``tp`` does not divide the
    vocabulary, the last shard(s) are padded with zero rows up to ``rows``."""
    return -(-vocab // tp)


def _vocab_rows(full: torch.Tensor, socket: int, rows: int) -> torch.Tensor:
    """Socket ``socket``'s ``rows`` rows of a vocabulary-sized table, zero-padded past its end."""
    part = full[socket * rows : (socket + 1) * rows]
    pad = rows - part.shape[0]
    return F.pad(part, (0, 0, 0, pad)) if pad else part


class VocabParallelEmbed(torch.nn.Module):
    """One socket's share of the token embedding (Megatron's VocabParallelEmbedding).

    The socket holds ``vocab_shard(vocab, tp)`` rows of the table (the last shard
    zero-padded when ``tp`` does not divide the vocabulary) and ``vocab_start``, the
    first id it holds (a one-element parameter, so one SPMD program serves every
    socket). It looks up the ids in its range, zeroes the rows of the others, and an
    all-reduce sums the sockets' partial results: every id is found on exactly one.
    """

    def __init__(self, arch: Arch, tp: int):
        super().__init__()
        self.rows = vocab_shard(arch.vocab, tp)
        self.tokens = torch.nn.Embedding(self.rows, arch.hidden)
        self.vocab_start = torch.nn.Parameter(torch.zeros(1, dtype=torch.long), requires_grad=False)

    def shard(self, name: str, full: dict[str, torch.Tensor], socket: int) -> torch.Tensor:
        """Socket ``socket``'s ``name`` from the unsharded ``Embed``'s state dict ``full``."""
        if name == "vocab_start":
            device = full["tokens.weight"].device
            return torch.full((1,), socket * self.rows, dtype=torch.long, device=device)
        return _vocab_rows(full[name], socket, self.rows)

    def forward(self, ids):
        local = ids - self.vocab_start
        elsewhere = (local < 0) | (local >= self.rows)
        h = self.tokens(local.masked_fill(elsewhere, 0))
        return all_reduce(h.masked_fill(elsewhere[..., None], 0.0))


class VocabParallelHead(torch.nn.Module):
    """One socket's share of the head: the final norm (replicated) and a column-parallel
    LM head computing the logits of its ``vocab_shard(vocab, tp)`` vocabulary ids (the
    last shard zero-padded); an all-gather joins the shards' logits on every socket,
    and the padding's columns are dropped."""

    def __init__(self, arch: Arch, tp: int):
        super().__init__()
        self.vocab, self.tp, self.rows = arch.vocab, tp, vocab_shard(arch.vocab, tp)
        self.norm = _norm(arch)
        self.lm_head = torch.nn.Linear(arch.hidden, self.rows, bias=False)

    def shard(self, name: str, full: dict[str, torch.Tensor], socket: int) -> torch.Tensor:
        """Socket ``socket``'s ``name`` from the unsharded ``Head``'s state dict ``full``."""
        if name == "lm_head.weight":
            return _vocab_rows(full[name], socket, self.rows)
        return full[name]  # the norm: replicated

    def forward(self, h):
        logits = all_gather(self.lm_head(self.norm(h)), -1, self.tp)
        return logits[..., : self.vocab] if self.rows * self.tp != self.vocab else logits


def make_embed(arch: Arch, tp: int = 1) -> torch.nn.Module:
    """The token embedding of ``arch``, or one socket's vocabulary shard of it."""
    return Embed(arch) if tp == 1 else VocabParallelEmbed(arch, tp)


def make_head(arch: Arch, tp: int = 1) -> torch.nn.Module:
    """The final norm and LM head of ``arch``, or one socket's vocabulary shard of them."""
    return Head(arch) if tp == 1 else VocabParallelHead(arch, tp)


class Layer(torch.nn.Module):
    """One decoder layer; returns (hidden, keys, values): in prefill the prompt's K/V, in
    decode the cache with the new token's K/V written into position ``past``.

    With ``tp`` > 1 it is one socket's shard under tensor parallelism (Megatron-style):
    q/k/v and the MLP's up/gate projections split by output (heads, FFN columns), the
    output and down projections by input, and an all-reduce sums their partial
    results. K/V heads fewer than sockets are replicated.
    """

    def __init__(self, arch: Arch, past: int, tp: int = 1):
        super().__init__()
        _check_split(arch, tp)
        d, hd = arch.hidden, arch.head_dim
        self.arch, self.past, self.tp = arch, past, tp
        self.heads, self.kv_heads = arch.heads // tp, max(1, arch.kv_heads // tp)
        self.norm1 = _norm(arch)
        self.norm2 = None if arch.parallel else _norm(arch)
        self.q = torch.nn.Linear(d, self.heads * hd, bias=False)
        self.k = torch.nn.Linear(d, self.kv_heads * hd, bias=False)
        self.v = torch.nn.Linear(d, self.kv_heads * hd, bias=False)
        self.o = torch.nn.Linear(self.heads * hd, d, bias=False)
        ffn = arch.ffn // tp
        if arch.mlp == "swiglu":
            self.gate = torch.nn.Linear(d, ffn, bias=False)
        self.up = torch.nn.Linear(d, ffn, bias=False)
        self.down = torch.nn.Linear(ffn, d, bias=False)
        if arch.position == "alibi":  # a parameter, so each socket holds its heads' slopes
            self.slopes = torch.nn.Parameter(alibi_slopes(arch.heads)[: self.heads].clone())

    def shard(self, name: str, state: dict[str, torch.Tensor], socket: int) -> torch.Tensor:
        """Socket ``socket``'s slice of ``name`` from the unsharded layer's state dict."""
        full = state[name]
        if self.tp == 1:
            return full
        hd, part = self.arch.head_dim, name.split(".")[0]
        if part in ("q", "gate", "up", "slopes"):
            n = full.shape[0] // self.tp
            return full[socket * n : (socket + 1) * n]
        if part in ("k", "v"):
            first = socket * self.arch.kv_heads // self.tp
            return full[first * hd : (first + self.kv_heads) * hd]
        if part in ("o", "down"):
            n = full.shape[1] // self.tp
            return full[:, socket * n : (socket + 1) * n]
        return full  # norms: replicated

    def _rope(self, x, start: int):
        d = x.shape[-1]
        inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device=x.device).float() / d))
        pos = torch.arange(start, start + x.shape[-2], device=x.device).float()
        angles = torch.outer(pos, inv)
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
        rotated = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1)
        return x * cos + rotated * sin

    def forward(self, h, past_k=None, past_v=None):
        a, hd, heads, kvh = self.arch, self.arch.head_dim, self.heads, self.kv_heads
        b, s, _ = h.shape
        y = self.norm1(h)
        q = self.q(y).view(b, s, heads, hd).transpose(1, 2)
        k = self.k(y).view(b, s, kvh, hd).transpose(1, 2)
        v = self.v(y).view(b, s, kvh, hd).transpose(1, 2)
        if a.position == "rope":
            q, k = self._rope(q, self.past), self._rope(k, self.past)
        keys = k if past_k is None else torch.slice_scatter(past_k, k, dim=2, start=self.past)
        values = v if past_v is None else torch.slice_scatter(past_v, v, dim=2, start=self.past)
        total, rep = keys.shape[2], heads // kvh
        kk = keys[:, :, None].expand(b, kvh, rep, total, hd).reshape(b, heads, total, hd)
        vv = values[:, :, None].expand(b, kvh, rep, total, hd).reshape(b, heads, total, hd)
        causal = past_k is None and s > 1
        mask = None
        if a.position == "alibi":
            pos = torch.arange(self.past, self.past + s, device=h.device)
            dist = (torch.arange(total, device=h.device)[None, :] - pos[:, None]).float()
            mask = self.slopes[:, None, None] * dist
            if causal:
                mask = mask.masked_fill(dist > 0, float("-inf"))
            causal = False
        att = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, is_causal=causal)
        att = self.o(att.transpose(1, 2).reshape(b, s, heads * hd))
        if a.parallel:
            return h + self._reduce(att + self._mlp(y)), keys, values
        h = h + self._reduce(att)
        return h + self._reduce(self._mlp(self.norm2(h))), keys, values

    def _reduce(self, x):
        return all_reduce(x) if self.tp > 1 else x

    def _mlp(self, y):
        if self.arch.mlp == "swiglu":
            return self.down(F.silu(self.gate(y)) * self.up(y))
        return self.down(F.gelu(self.up(y), approximate="tanh"))


def make_layer(arch: Arch, past: int, tp: int = 1) -> torch.nn.Module:
    """The decoder layer of ``arch``: transformers' class where the zoo uses one, else ``Layer``."""
    if arch.hf:
        from coec.models.hf_layers import HFLayer

        _check_split(arch, tp)
        return HFLayer(arch, past, tp)
    return Layer(arch, past, tp)


def _check_split(arch: Arch, tp: int) -> None:
    if arch.heads % tp or arch.ffn % tp or (arch.kv_heads % tp and tp % arch.kv_heads):
        raise ConfigError(
            f"{arch.name}: {arch.heads} heads, {arch.kv_heads} KV heads and FFN {arch.ffn} "
            f"do not split over {tp} sockets"
        )


class ZooModel(torch.nn.Module):
    """Embed -> layers -> head, for eager reference runs; returns (logits, K/V per layer)."""

    def __init__(self, arch: Arch, past: int = 0):
        super().__init__()
        self.embed = Embed(arch)
        self.layers = torch.nn.ModuleList(make_layer(arch, past) for _ in range(arch.layers))
        self.head = Head(arch)

    def forward(self, ids, *caches):
        h = self.embed(ids)
        kv = []
        for i, layer in enumerate(self.layers):
            past = caches[2 * i : 2 * i + 2] if caches else (None, None)
            h, k, v = layer(h, *past)
            kv += [k, v]
        return (self.head(h), *kv)


@dataclass
class ZooInstance:
    """A zoo model for one phase: the full module and its example inputs."""

    arch: Arch
    phase: str
    batch: int
    seq: int
    model: ZooModel
    ids: torch.Tensor
    caches: list[torch.Tensor]


def instantiate(
    name: str | Arch,
    phase: str = "prefill",
    seq: int = 128,
    batch: int = 1,
    layers: int | None = None,
    device: str = "meta",
    seed: int = 0,
) -> ZooInstance:
    """Build a zoo model (by name, or an ``Arch`` of one's family) on ``device`` ("meta": no
    weights allocated) with example inputs."""
    arch = get_arch(name, layers) if isinstance(name, str) else name
    if layers is not None and not isinstance(name, str):
        arch = replace(arch, layers=layers)
    if phase not in ("prefill", "decode"):
        raise ConfigError(f"phase {phase!r}: choose prefill or decode")
    if seq < 1 or batch < 1:
        raise ConfigError(f"seq {seq} and batch {batch} must be at least 1")
    past = seq if phase == "decode" else 0
    tokens = 1 if phase == "decode" else seq
    gen = torch.Generator().manual_seed(seed)
    with torch.device(device):
        if device != "meta":
            torch.manual_seed(seed)
        model = ZooModel(arch, past).eval()
        if device == "meta":
            ids = torch.empty(batch, tokens, dtype=torch.long)
            caches = (
                [
                    torch.empty(batch, arch.kv_heads, past + 1, arch.head_dim)
                    for _ in range(2 * arch.layers)
                ]
                if past
                else []
            )
    if device != "meta":
        ids = torch.randint(0, arch.vocab, (batch, tokens), generator=gen)
        # S filled positions and the free one the step writes (zero until then)
        caches = (
            [
                F.pad(
                    torch.randn(batch, arch.kv_heads, past, arch.head_dim, generator=gen),
                    (0, 0, 0, 1),
                )
                for _ in range(2 * arch.layers)
            ]
            if past
            else []
        )
    return ZooInstance(arch, phase, batch, seq, model, ids, caches)
