"""The Composition of Experts router: prompt -> category -> expert (DESIGN.md §10).

Step one classifies a prompt: a sentence embedding (all-MiniLM-L6-v2, see
``coec.coe.embedding``) fed to a softmax-regression head fitted on the bundled
labelled prompts. Step two maps the category to an expert through the CoE
config's table. The embedding model is an ordinary PyTorch module, so it also
runs through coec (``embedding_program``), which measures the router's cost on
the modeled RDU; ``embed(..., use_coec=True)`` embeds on coec's NumPy runtime.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from coec.coe.embedding import load_encoder, tokenize
from coec.ir.errors import ConfigError

SPLITS = ("train", "test")
#: the head's fit: full-batch gradient descent from zero, so the same data gives the same head.
#: Chosen by 5-fold cross-validation on the train split only (0.93 mean fold accuracy;
#: scales 5-50, L2 1e-4-1e-1 and 100-1000 steps all land within 0.90-0.93).
STEPS, LEARNING_RATE, L2, LOGIT_SCALE = 300, 0.5, 1e-2, 5.0


@dataclass(frozen=True)
class LabelledPrompt:
    prompt: str
    category: str
    split: str


def bundled_prompts_path() -> Path:
    return Path(str(resources.files("coec.coe") / "data" / "prompts.jsonl"))


def load_prompts(path: str | Path | None = None) -> list[LabelledPrompt]:
    """Labelled prompts from JSON lines ``{"prompt", "category", "split": train|test}``."""
    path = Path(path) if path is not None else bundled_prompts_path()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the labelled prompts ({e.strerror})") from e
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{number}: not JSON ({e.msg})") from e
        if not isinstance(row, dict) or set(row) != {"prompt", "category", "split"}:
            raise ConfigError(f"{path}:{number}: expected the keys prompt, category, split")
        if row["split"] not in SPLITS:
            raise ConfigError(f"{path}:{number}: split {row['split']!r} is not train or test")
        if not (isinstance(row["prompt"], str) and row["prompt"].strip()):
            raise ConfigError(f"{path}:{number}: empty prompt")
        rows.append(LabelledPrompt(row["prompt"], str(row["category"]), row["split"]))
    if not rows:
        raise ConfigError(f"{path}: no labelled prompts")
    return rows


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def fit_head(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on unit-length embeddings: ``(weights (d, k), bias (k,))``.

    Cross-entropy plus a small L2 penalty, minimised by full-batch gradient descent
    from zero (convex, so deterministic and order-independent). The logits are
    ``LOGIT_SCALE · x·w + b``: cosine-scale features need a scale to be separated
    within a few hundred steps.
    """
    x = x.astype(np.float64)
    n, d = x.shape
    onehot = np.eye(k)[labels]
    w, b = np.zeros((d, k)), np.zeros(k)
    for _ in range(STEPS):
        p = _softmax(LOGIT_SCALE * (x @ w) + b)
        err = (p - onehot) / n
        w -= LEARNING_RATE * (LOGIT_SCALE * (x.T @ err) + L2 * w)
        b -= LEARNING_RATE * err.sum(axis=0)
    return LOGIT_SCALE * w, b


@dataclass(eq=False)
class Router:
    """The two-step router. ``weights``/``bias``: the fitted head over ``categories``."""

    categories: list[str]
    weights: np.ndarray = field(repr=False)
    bias: np.ndarray = field(repr=False)
    _compiled: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def fit(cls, prompts: list[str], labels: list[str]) -> Router:
        """A router whose head is fitted on ``prompts`` labelled ``labels``."""
        if len(prompts) != len(labels) or not prompts:
            raise ConfigError(f"{len(prompts)} prompts but {len(labels)} labels")
        categories = sorted(set(labels))
        if len(categories) < 2:
            raise ConfigError("a router needs at least two categories to choose between")
        index = {c: i for i, c in enumerate(categories)}
        x = _embed_torch(prompts)
        w, b = fit_head(x, np.array([index[c] for c in labels]), len(categories))
        return cls(categories, w, b)

    @classmethod
    def default(cls) -> Router:
        """The bundled classifier: fitted on the bundled training split (once per process)."""
        return _default_router()

    # -- step one ---------------------------------------------------------------------------
    def embed(
        self,
        prompts: list[str],
        use_coec: bool = False,
        target: str = "sn40l",
        fusion: str = "dataflow",
    ) -> np.ndarray:
        """``(n, d)`` unit-length embeddings, by PyTorch or (``use_coec``) coec's runtime.

        Through coec the batch is padded to a multiple of 16 tokens and compiled once
        per ``(n, seq)`` shape; the mask keeps padding out of the result.
        """
        if not prompts:
            return np.zeros((0, load_encoder().dim), dtype=np.float32)
        if not use_coec:
            return _embed_torch(prompts)
        ids, mask = tokenize(prompts)
        seq = -(-ids.shape[1] // 16) * 16
        ids, mask = tokenize(prompts, seq)
        key = (len(prompts), seq, target, fusion)
        if key not in self._compiled:
            import coec

            module, _ = self.embedding_program(len(prompts), seq)
            self._compiled[key] = coec.compile(
                module, (ids, mask), target=target, fusion=fusion, dtype="fp32"
            )
        return self._compiled[key](ids, mask).numpy().astype(np.float32)

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n, k)`` category probabilities of the head for given embeddings."""
        return _softmax(embeddings.astype(np.float64) @ self.weights + self.bias)

    def classify(self, prompts: list[str], use_coec: bool = False) -> list[str]:
        """Step one: each prompt's most likely category."""
        if not prompts:
            return []
        best = self.probabilities(self.embed(prompts, use_coec)).argmax(axis=1)
        return [self.categories[i] for i in best]

    # -- step two ---------------------------------------------------------------------------
    def route(
        self, prompts: list[str], category_to_expert: dict[str, str], use_coec: bool = False
    ) -> list[str]:
        """Step two: each prompt's expert, through ``category_to_expert``.

        A category the router can produce but the map lacks is a ConfigError,
        raised before any prompt is classified.
        """
        unmapped = [c for c in self.categories if c not in category_to_expert]
        if unmapped:
            raise ConfigError(
                f"category {unmapped[0]!r} has no expert in the category->expert map "
                f"(router categories: {', '.join(self.categories)})"
            )
        return [category_to_expert[c] for c in self.classify(prompts, use_coec)]

    # -- the embedding model as a coec program ----------------------------------------------
    def embedding_program(self, batch: int, seq: int) -> tuple[torch.nn.Module, tuple]:
        """The encoder and example inputs for ``coec.compile`` (see ``embedding_program``)."""
        return embedding_program(batch, seq)


def embedding_program(batch: int, seq: int) -> tuple[torch.nn.Module, tuple]:
    """The encoder and example inputs ``(input_ids, attention_mask)``, ``(batch, seq)`` each.

    The inputs are real prompts from the bundled set (mixed categories), truncated
    or padded to ``seq`` tokens, ready for ``coec.compile(module, inputs, ...)``.
    """
    if batch < 1:
        raise ConfigError(f"batch {batch}: must be at least 1")
    prompts = [p.prompt for p in load_prompts()]
    picked = [prompts[(i * 37) % len(prompts)] for i in range(batch)]
    return load_encoder(), tokenize(picked, seq)


def router_cost(
    batch: int,
    seq: int,
    *,
    target: str = "sn40l",
    fusion: str | None = None,
    dtype: str = "bf16",
) -> dict:
    """The router's modeled cost for one batch: its encoder compiled by coec, counted.

    Returns ``batch, seq, target, fusion, dtype`` and the count-only report's
    ``kernels, flops, cycles, seconds, bytes, peak_bytes``; ``fusion`` None is the best
    the target runs, and the result names the policy used. (The head, one
    384 x k matrix-vector product per prompt, is left out: it is negligible.)
    """
    import coec

    module, inputs = embedding_program(batch, seq)
    compiled = coec.compile(module, inputs, target=target, fusion=fusion, dtype=dtype)
    report = compiled.report
    keys = ("kernels", "flops", "cycles", "seconds", "bytes", "peak_bytes")
    return {
        "batch": batch,
        "seq": seq,
        "target": target,
        "fusion": compiled.schedule["options"]["fusion"],
        "dtype": dtype,
        **{k: report[k] for k in keys},
    }


def _embed_torch(prompts: list[str], chunk: int = 32) -> np.ndarray:
    """Embeddings by PyTorch, in chunks of similar length (less padding to compute)."""
    encoder = load_encoder()
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    out = np.zeros((len(prompts), encoder.dim), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(order), chunk):
            rows = order[start : start + chunk]
            ids, mask = tokenize([prompts[i] for i in rows])
            out[rows] = encoder(ids, mask).numpy()
    return out


@functools.cache
def _default_router() -> Router:
    train = [p for p in load_prompts() if p.split == "train"]
    return Router.fit([p.prompt for p in train], [p.category for p in train])


def evaluate(path: str | Path | None = None) -> dict:
    """Held-out accuracy of the router fitted on the train split (bundled set by default)."""
    rows = load_prompts(path)
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    if not train or not test:
        raise ConfigError(f"{path or bundled_prompts_path()}: needs both train and test prompts")
    if path is None:
        router = Router.default()
    else:
        router = Router.fit([r.prompt for r in train], [r.category for r in train])
    predicted = router.classify([r.prompt for r in test])
    truth = [r.category for r in test]
    per_category = {}
    for c in sorted(set(truth)):
        picks = [p == t for p, t in zip(predicted, truth, strict=True) if t == c]
        per_category[c] = sum(picks) / len(picks)
    return {
        "accuracy": float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)])),
        "n_train": len(train),
        "n_test": len(test),
        "categories": router.categories,
        "per_category": per_category,
        "confusions": [
            {"category": t, "predicted": p, "count": n}
            for (t, p), n in sorted(
                Counter((t, p) for t, p in zip(truth, predicted, strict=True) if t != p).items(),
                key=lambda kv: (-kv[1], kv[0]),
            )
        ],
    }
