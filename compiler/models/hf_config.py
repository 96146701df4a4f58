"""Any transformers model from its config.json, as serving runs it: prefill or one
decode step, with the KV cache preallocated in HBM and written in place.

``read_config`` reads a config.json (or a model folder holding one; never the network)
into transformers' own config class; ``HFModel`` builds transformers' own model class
from it (on the meta device for count-only compiles), finds the repeated layers (the
``ModuleList`` of ``num_hidden_layers`` modules) and which of them are alike
(``layer_kinds``: same class, parameter shapes and attention settings, e.g. Gemma-2's
alternating local and global layers are two kinds), so that regional compilation
compiles each kind once (``coec.regional.compile_hf``).

The step (``HFStep``) calls the model with a cache of coec's own layers
(``PresetLayer``): each holds a preallocated K/V tensor that is a model input, and
writes the new token's K/V into it in place at a compile-time position (a slice
assignment, which coec lowers to a one-row ``df.update``). A layer with a sliding
window holds only the window and writes round it (a ring buffer: attention over a full
window does not depend on the order of its keys), so a decode step reads only the
window's KV bytes. The cache shapes come from a probe run on the meta device, so
whatever the family caches (grouped-query heads, a compressed latent) is what is
charged. Prefill returns the last token's logits, as generation does.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from coec.ir.errors import ConfigError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers.cache_utils import Cache, CacheLayerMixin  # noqa: E402 (offline first)

#: attributes of a layer's modules that say how it attends (compared between layers)
_KIND_ATTRS = (
    "attention_type",
    "layer_type",
    "sliding_window",
    "is_sliding",
    "use_sliding_window",
    "is_causal",
)


#: config.json files coec ships, each with its source (``_source``): ``--hf-config NAME``
CONFIGS = Path(__file__).parent / "configs"


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.json"))


def read_config(path: str | Path):
    """transformers' config of a config.json, of a model folder holding one, or of a
    config coec ships (by name: ``shipped_configs()``)."""
    from transformers import CONFIG_MAPPING

    path = Path(path)
    if not path.exists() and (CONFIGS / f"{path}.json").is_file():
        path = CONFIGS / f"{path}.json"
    file = path / "config.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: no such file (give a config.json, a model folder or one of "
            f"{', '.join(shipped_configs())})"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{file}: not a readable JSON config: {e}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ConfigError(f"{file}: a transformers config.json names its model_type")
    kind = data["model_type"]
    if kind not in CONFIG_MAPPING:
        raise ConfigError(f"{file}: model_type {kind!r} is not one transformers knows")
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    try:
        return CONFIG_MAPPING[kind].from_dict(data)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{file}: transformers rejects the config: {e}") from None


def _causal_lm(config) -> bool:
    """Whether the family is a decoder (a causal LM); BERT-style encoders have a causal-LM
    class too, for use as decoders, which their config says with ``is_decoder``."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING

    encoder = type(config) in MODEL_FOR_MASKED_LM_MAPPING and not config.is_decoder
    return type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and not encoder


def build_model(config, device: str = "meta", layers: int | None = None):
    """transformers' model for ``config`` (a causal LM if the family has one, else the
    base model), in eval mode, optionally with only its first ``layers`` layers."""
    import copy

    from transformers import AutoModel, AutoModelForCausalLM

    config = copy.deepcopy(config)
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(
            f"{config.model_type}: an encoder-decoder model; coec compiles decoders and "
            "encoders from their configs"
        )
    if layers is not None:
        truncate(config, layers)
    if getattr(config, "attn_logit_softcapping", None) or getattr(
        config, "final_logit_softcapping", None
    ):
        config._attn_implementation = "eager"  # SDPA has no soft-capping
    elif getattr(config, "_attn_implementation", None) in (None, "flash_attention_2"):
        config._attn_implementation = "sdpa"
    # mixture-of-experts layers as batched matmuls of the experts each token is routed to
    # (a gather of their weights): static shapes, which export and lower
    config._experts_implementation = "batched_mm"
    auto = AutoModelForCausalLM if _causal_lm(config) else AutoModel
    with torch.device(device):
        try:
            model = auto.from_config(config)
        except ValueError as e:
            if "attention implementation" not in str(e):
                raise ConfigError(f"transformers cannot build {config.model_type}: {e}") from None
            config._attn_implementation = "eager"  # the family has no SDPA path
            model = auto.from_config(config)
        except KeyError as e:
            raise ConfigError(f"transformers cannot build {config.model_type}: {e}") from None
    return model.eval()


def truncate(config, layers: int) -> None:
    """``config`` with its first ``layers`` layers (per-layer lists cut to match)."""
    n = num_layers(config)
    config.num_hidden_layers = layers
    for key in ("layer_types", "mlp_only_layers"):
        value = getattr(config, key, None)
        if isinstance(value, list) and len(value) == n:
            setattr(config, key, value[:layers])


def num_layers(config) -> int:
    n = getattr(config, "num_hidden_layers", None)
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"{config.model_type}: the config gives no num_hidden_layers")
    return n


def layer_list(model, n: int) -> tuple[str, torch.nn.ModuleList]:
    """The model's repeated layers: its ``ModuleList`` of ``n`` modules, by path."""
    found = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.ModuleList) and len(m) == n
    ]
    if not found:
        raise ConfigError(f"{type(model).__name__}: no list of {n} layers to compile once")
    return found[0]


def _signature(layer: torch.nn.Module) -> tuple:
    params = tuple((name, tuple(p.shape)) for name, p in layer.named_parameters())
    attrs = tuple(
        (path, attr, repr(getattr(m, attr)))
        for path, m in layer.named_modules()
        for attr in _KIND_ATTRS
        if attr in vars(m)
    )
    return type(layer).__name__, params, attrs


def layer_kinds(layers: torch.nn.ModuleList) -> list[int]:
    """For each layer, the index of the first layer of its kind."""
    first: dict[tuple, int] = {}
    return [first.setdefault(_signature(layer), i) for i, layer in enumerate(layers)]


@dataclass
class HFModel:
    """A transformers model from its config: the full model (``device``), its layer list's
    path, and each layer's kind (the index of the first layer like it)."""

    config: object
    name: str
    model: torch.nn.Module
    layers_path: str
    kinds: list[int]

    @classmethod
    def of(cls, config, name: str = "", device: str = "meta") -> HFModel:
        model = build_model(config, device)
        path, layers = layer_list(model, num_layers(config))
        return cls(config, name or config.model_type, model, path, layer_kinds(layers))

    @property
    def short_layers(self) -> int:
        """Layers a short model needs to hold one of each kind."""
        return max(self.kinds) + 1

    @property
    def causal(self) -> bool:
        return _causal_lm(self.config)

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


class PresetLayer(CacheLayerMixin):
    """One layer's K/V cache for ``HFStep``: tensors the step is given (model inputs),
    ``past`` positions filled; the new K/V are written in place at compile-time
    positions (round the window when it is a sliding one)."""

    is_compileable = True
    is_croppable = False
    supports_early_init = True

    def __init__(self, keys, values, past: int, sliding: bool):
        super().__init__()
        self.is_initialized = True
        self.keys, self.values, self.past, self.is_sliding = keys, values, past, sliding
        self.size = keys.shape[-2]
        self.device = keys.device

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        # rows at positions known when compiling (a slice written in place: a df.update)
        if self.past == 0:  # prefill: keep what fits (a window keeps the last keys)
            keep = min(n, self.size)
            self.keys[:, :, :keep] = key_states[:, :, n - keep :]
            self.values[:, :, :keep] = value_states[:, :, n - keep :]
            return key_states, value_states  # attention over the prompt itself
        if n != 1:
            raise ConfigError("a decode step writes one token per sequence")
        at = self.past % self.size
        self.keys[:, :, at : at + 1] = key_states
        self.values[:, :, at : at + 1] = value_states
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int, *args) -> tuple[int, int]:
        if self.past == 0:
            return int(query_length), 0
        return self.size, max(0, self.past + 1 - self.size)

    def get_seq_length(self) -> int:
        return self.past

    def get_max_length(self) -> int:
        return self.size

    def lazy_initialization(self, *args) -> None:
        pass


class _ProbeLayer(PresetLayer):
    """Records the K/V shapes one layer's attention caches (a meta-device probe)."""

    def __init__(self, sliding: bool):
        CacheLayerMixin.__init__(self)
        self.past, self.is_sliding, self.shapes, self.size = 0, sliding, None, 0

    def update(self, key_states, value_states, *args, **kwargs):
        self.shapes = (tuple(key_states.shape), tuple(value_states.shape))
        return key_states, value_states

    def get_mask_sizes(self, query_length: int, *args) -> tuple[int, int]:
        return int(query_length), 0


def _window(config, i: int) -> int | None:
    """Layer ``i``'s sliding window, if it has one."""
    types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if isinstance(types, list) and i < len(types):
        return window if types[i] in ("sliding_attention", "chunked_attention") else None
    return window if isinstance(window, int) and window > 0 else None


def _cache(layers):
    cache = Cache.__new__(Cache)
    Cache.__init__(cache, layers=[])
    cache.layers = list(layers)
    return cache


class HFStep(torch.nn.Module):
    """A prefill (``past`` = 0) or decode step of a transformers model over preallocated
    K/V caches (inputs, written in place); returns the last token's logits (a causal LM)
    or the last hidden state (a base model)."""

    def __init__(self, hf: HFModel, model: torch.nn.Module, past: int, windows: list):
        super().__init__()
        self.hf, self.model, self.past, self.windows = hf, model, past, windows
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.eval()

    def forward(self, ids, *caches):
        if not self.windows:
            return _main(self.model(input_ids=ids))
        layers = [
            PresetLayer(caches[2 * i], caches[2 * i + 1], self.past, w is not None)
            for i, w in enumerate(self.windows)
        ]
        out = self.model(
            input_ids=ids,
            **{self.cache_arg: _cache(layers)},
            use_cache=True,
            **({"logits_to_keep": 1} if self.hf.causal else {}),
        )
        return _main(out)


def _main(out):
    for key in ("logits", "last_hidden_state"):
        if getattr(out, key, None) is not None:
            return getattr(out, key)
    return out[0]


def cache_shapes(hf: HFModel, model, batch: int, seq: int) -> list[tuple[int, ...]] | None:
    """The K and V cache shapes of each layer of ``model`` (alternately), probed on the
    meta device; None for a model that caches nothing (an encoder)."""
    n = _count_layers(model, hf)
    probes = [_ProbeLayer(_window(hf.config, i) is not None) for i in range(n)]
    with torch.device("meta"):
        ids = torch.zeros(batch, 1, dtype=torch.long)
        meta = build_model(hf.config, "meta", n)
    params = inspect.signature(meta.forward).parameters
    arg = "cache" if "cache" in params else "past_key_values"
    try:
        meta(input_ids=ids, **{arg: _cache(probes)}, use_cache=True)
    except TypeError:  # no past_key_values: an encoder
        return None
    if any(p.shapes is None for p in probes):
        return None
    shapes = []
    for i, p in enumerate(probes):
        window = _window(hf.config, i)
        length = seq if window is None else min(window, seq)
        for shape in p.shapes:
            shapes.append((batch, *shape[1:-2], length, shape[-1]))
    return shapes


def _count_layers(model, hf: HFModel) -> int:
    prefix = hf.layers_path + "."
    found = {
        name[len(prefix) :].split(".")[0]
        for name, _ in model.named_modules()
        if name.startswith(prefix)
    }
    return len(found)


def step_and_inputs(
    hf: HFModel, model, phase: str, seq: int, batch: int, device: str = "meta", seed: int = 0
) -> tuple[HFStep, tuple]:
    """The step module of ``model`` (``hf``'s model or a short one) and example inputs:
    token ids and, for a model with a cache, each layer's K and V caches (decode: ``seq``
    positions filled with random values and the one the step writes, zero)."""
    if phase not in ("prefill", "decode"):
        raise ConfigError(f"phase {phase!r}: choose prefill or decode")
    if seq < 1 or batch < 1:
        raise ConfigError(f"seq {seq} and batch {batch} must be at least 1")
    past, tokens = (seq, 1) if phase == "decode" else (0, seq)
    shapes = cache_shapes(hf, model, batch, seq + 1 if past else seq) if hf.causal else None
    if shapes is None and phase == "decode":
        raise ConfigError(f"{hf.name}: an encoder has no decode step")
    n = _count_layers(model, hf)
    windows = [_window(hf.config, i) for i in range(n)] if shapes else []
    vocab = getattr(hf.config, "vocab_size", 2)
    dtype = next(model.parameters()).dtype  # the caches hold what the attention makes
    gen = torch.Generator().manual_seed(seed)
    if device == "meta":
        with torch.device("meta"):
            ids = torch.empty(batch, tokens, dtype=torch.long)
            caches = [torch.empty(s, dtype=dtype) for s in shapes or []]
    else:
        ids = torch.randint(0, vocab, (batch, tokens), generator=gen)
        caches = []
        for i, s in enumerate(shapes or []):
            c = torch.zeros(s, dtype=dtype)
            if past:  # the filled positions (all of a full window)
                filled = min(past, s[-2]) if windows[i // 2] is not None else past
                c[..., :filled, :] = torch.randn(*s[:-2], filled, s[-1], generator=gen)
            caches.append(c)
    return HFStep(hf, model, past, windows), (ids, *caches)


def layer_index(path: str, layers_path: str) -> int | None:
    """The layer a module path is in (``model.layers.3.mlp`` -> 3), or None."""
    m = re.match(rf"^(?:.*\.)?{re.escape(layers_path)}\.(\d+)(?:\.|$)", path)
    return int(m.group(1)) if m else None
