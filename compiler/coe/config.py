"""A Composition of Experts as data: ``coe.toml``.

    format = "coec.coe/1"
    name = "demo"

    [router]                 # the bundled two-step router (MiniLM-L6 + a trained head)
    model = "all-MiniLM-L6-v2"   # optional; the only router coec bundles
    seq = 64                 # tokens per prompt the router's encoder reads

    [experts.coder]          # an expert: a zoo model by name ...
    zoo = "llama2-7b"
    layers = 4               # (optional: fewer decoder layers)
    [experts.scholar]
    zoo = "mistral-7b"
    count = 10               # ... optionally N copies (same architecture, own weights)
    [experts.custom]         # ... or a MODEL.py (relative to this file; entry optional)
    file = "my_model.py"

    [categories]             # step two of the router: category -> expert
    coding = "coder"
    math = "scholar"

    [serving]                # defaults for coec coe serve (all optional)
    batch = 1                # prompts per batch; with arrivals, the KV cache's sequences too
    tokens = 20              # output tokens per request
    prompt_tokens = 128
    policy = "lru"           # expert cache: lru, lfu or belady (the offline bound)
    max_wait = 0.0           # with arrivals: seconds the router waits for a batch to fill
    prefetch = "next"        # with arrivals: copy the next queued experts in ("none": on demand)
    overlap = true           # with arrivals: copies beside compute (DMA / copy engines)

    [traffic]                # serve with arrivals (coec coe serve --rate overrides; optional)
    rate = 2.0               # requests per second
    cv = 1.0                 # gaps' coefficient of variation: 1 Poisson, > 1 bursty (gamma)
    spread = 0.0             # lengths drawn uniformly within +-spread of the [serving] ones
    mix = { coding = 3, math = 1 }   # synthetic requests' categories, by weight

Every category the router knows must map to an expert; every key is checked.
Experts of the same architecture (zoo name and options, or MODEL.py and entry)
are compiled once and share the result: 150 ``llama2-7b`` experts are one compile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from coec.ir.errors import ConfigError

FORMAT = "coec.coe/1"
POLICIES = ("lru", "lfu", "belady")
PREFETCH = ("none", "next")
ROUTER_MODELS = ("all-MiniLM-L6-v2",)


@dataclass(frozen=True)
class Expert:
    name: str
    zoo: str | None = None  # the zoo architecture it is an instance of ...
    file: str | None = None  # ... or a MODEL.py (absolute path)
    entry: str | None = None  # MODEL.py function returning (module, inputs)
    layers: int | None = None  # zoo option: fewer decoder layers

    @property
    def arch(self) -> str:
        """What identifies one compile: experts with equal ``arch`` share it."""
        if self.file:
            return f"{self.file}:{self.entry}" if self.entry else self.file
        return f"{self.zoo}/{self.layers}L" if self.layers else str(self.zoo)


@dataclass(frozen=True)
class Serving:
    batch: int = 1
    tokens: int = 20
    prompt_tokens: int = 128
    policy: str = "lru"
    max_wait: float = 0.0
    prefetch: str = "next"
    overlap: bool = True


@dataclass(frozen=True)
class Traffic:
    """What arrives, when coec coe serve runs with arrival times."""

    rate: float | None = None  # requests per second (None: no arrivals unless asked)
    cv: float = 1.0
    spread: float = 0.0
    mix: dict[str, float] | None = None  # category -> weight


@dataclass(frozen=True)
class CoE:
    name: str
    experts: list[Expert]
    categories: dict[str, str]  # category -> expert name
    router_seq: int = 64
    serving: Serving = field(default_factory=Serving)
    source: str = "<coe>"
    traffic: Traffic = field(default_factory=Traffic)

    def expert(self, name: str) -> Expert:
        for e in self.experts:
            if e.name == name:
                return e
        raise ConfigError(f"{self.source}: unknown expert {name!r}")


def _fail(file: str, where: str, msg: str) -> ConfigError:
    return ConfigError(f"{file}: {where}: {msg}" if where else f"{file}: {msg}")


def _check_keys(file: str, where: str, table: dict, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _fail(file, where, f"unknown key '{unknown[0]}' (keys: {', '.join(sorted(allowed))})")


def _int(file: str, where: str, table: dict, key: str, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(file, where, f"'{key}' must be a positive whole number, got {value!r}")
    return value


def _number(file: str, where: str, table: dict, key: str, default, low: float, strict: bool):
    """A number >= ``low`` (> ``low`` when ``strict``), or ``default`` when absent."""
    value = table.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(file, where, f"'{key}' must be a number, got {value!r}")
    if value < low or (strict and value == low):
        raise _fail(file, where, f"'{key}' must be {'>' if strict else '>='} {low:g}, got {value}")
    return float(value)


def _traffic(file: str, data, mapping: dict[str, str]) -> Traffic:
    where = "[traffic]"
    if not isinstance(data, dict):
        raise _fail(file, where, "must be a table")
    _check_keys(file, where, data, {"rate", "cv", "spread", "mix"})
    spread = _number(file, where, data, "spread", 0.0, 0.0, strict=False)
    if spread >= 1:
        raise _fail(file, where, f"'spread' must be < 1, got {spread}")
    mix = data.get("mix")
    if mix is not None:
        if not isinstance(mix, dict) or not mix:
            raise _fail(file, where, "'mix' must be a table: category = weight")
        for category in mix:
            if category not in mapping:
                raise _fail(file, where, f"mix: {category!r} is not a category of [categories]")
        mix = {c: _number(file, where, mix, c, 0, 0.0, strict=False) for c in mix}
        if not sum(mix.values()):
            raise _fail(file, where, "mix: the weights are all zero")
    return Traffic(
        rate=_number(file, where, data, "rate", None, 0.0, strict=True),
        cv=_number(file, where, data, "cv", 1.0, 0.0, strict=True),
        spread=spread,
        mix=mix,
    )


def _experts(file: str, ename: str, spec) -> list[Expert]:
    """One ``[experts.NAME]`` table: its ``count`` copies."""
    from coec.models.zoo import ZOO

    where = f"[experts.{ename}]"
    if not isinstance(spec, dict):
        raise _fail(file, where, "must be a table with 'zoo' or 'file'")
    _check_keys(file, where, spec, {"zoo", "file", "entry", "layers", "count"})
    if ("zoo" in spec) == ("file" in spec):
        raise _fail(file, where, "give exactly one of 'zoo' (a zoo model) or 'file' (a MODEL.py)")
    count = _int(file, where, spec, "count", 1)
    names = [ename] if count == 1 else [f"{ename}-{i}" for i in range(count)]
    if "zoo" in spec:
        if "entry" in spec:
            raise _fail(
                file, where, "'entry' names a MODEL.py function; this expert is a zoo model"
            )
        if spec["zoo"] not in ZOO:
            raise _fail(file, where, f"zoo model {spec['zoo']!r} is not in the zoo (coec zoo)")
        layers = _int(file, where, spec, "layers", 1) if "layers" in spec else None
        if layers is not None and layers > ZOO[spec["zoo"]].layers:
            raise _fail(
                file, where, f"'layers' {layers} > {spec['zoo']}'s {ZOO[spec['zoo']].layers}"
            )
        return [Expert(n, zoo=spec["zoo"], layers=layers) for n in names]
    if "layers" in spec:
        raise _fail(file, where, "'layers' is a zoo option; this expert is a MODEL.py")
    if not isinstance(spec["file"], str):
        raise _fail(file, where, "'file' must be a path to a MODEL.py")
    path = (Path(file).parent / spec["file"]).resolve()
    if not path.is_file():
        raise _fail(file, where, f"file {spec['file']!r}: no such MODEL.py ({path})")
    entry = spec.get("entry")
    if entry is not None and not (isinstance(entry, str) and entry.isidentifier()):
        raise _fail(file, where, f"'entry' must be a function name, got {entry!r}")
    return [Expert(n, file=str(path), entry=entry) for n in names]


def parse_coe(data: dict, file: str = "<coe>", categories: list[str] | None = None) -> CoE:
    """Check a parsed ``coe.toml``; ``categories`` are the router's (all must be mapped)."""
    _check_keys(
        file, "", data, {"format", "name", "router", "experts", "categories", "serving", "traffic"}
    )
    if data.get("format") != FORMAT:
        raise _fail(file, "", f"format {data.get('format')!r} is not {FORMAT!r}")
    name = data.get("name", Path(file).stem)
    router = data.get("router", {})
    if not isinstance(router, dict):
        raise _fail(file, "[router]", "must be a table")
    _check_keys(file, "[router]", router, {"model", "seq"})
    if router.get("model", ROUTER_MODELS[0]) not in ROUTER_MODELS:
        raise _fail(
            file,
            "[router]",
            f"model {router['model']!r}: coec bundles {', '.join(ROUTER_MODELS)}",
        )
    experts: list[Expert] = []
    first: dict[str, str] = {}  # a name categories may use -> the expert it means
    specs = data.get("experts") or {}
    if not isinstance(specs, dict):
        raise _fail(file, "[experts]", "must be a table of expert tables")
    for ename, spec in specs.items():
        group = _experts(file, ename, spec)
        first.update({e.name: e.name for e in group})
        first.setdefault(ename, group[0].name)  # a group's name means its first copy
        experts += group
    if not experts:
        raise _fail(file, "[experts]", "no experts defined")
    if len({e.name for e in experts}) != len(experts):
        dup = next(e.name for i, e in enumerate(experts) if e.name in {x.name for x in experts[:i]})
        raise _fail(
            file, "[experts]", f"two experts are named {dup!r} (a count's copies are NAME-i)"
        )
    mapping = data.get("categories") or {}
    if not isinstance(mapping, dict):
        raise _fail(file, "[categories]", "must be a table: category = expert")
    for category, expert in mapping.items():
        if not isinstance(expert, str) or expert not in first:
            raise _fail(file, "[categories]", f"{category} -> unknown expert {expert!r}")
    if categories is not None:
        unmapped = [c for c in categories if c not in mapping]
        if unmapped:
            raise _fail(
                file, "[categories]", f"router category {unmapped[0]!r} is mapped to no expert"
            )
        extra = [c for c in mapping if c not in categories]
        if extra:
            raise _fail(
                file,
                "[categories]",
                f"{extra[0]!r} is not a router category ({', '.join(categories)})",
            )
    mapping = {c: first[e] for c, e in mapping.items()}
    serving = data.get("serving", {})
    if not isinstance(serving, dict):
        raise _fail(file, "[serving]", "must be a table")
    _check_keys(
        file,
        "[serving]",
        serving,
        {"batch", "tokens", "prompt_tokens", "policy", "max_wait", "prefetch", "overlap"},
    )
    policy = serving.get("policy", "lru")
    if policy not in POLICIES:
        raise _fail(file, "[serving]", f"policy {policy!r}: choose from {', '.join(POLICIES)}")
    prefetch = serving.get("prefetch", "next")
    if prefetch not in PREFETCH:
        raise _fail(file, "[serving]", f"prefetch {prefetch!r}: choose from {', '.join(PREFETCH)}")
    overlap = serving.get("overlap", True)
    if not isinstance(overlap, bool):
        raise _fail(file, "[serving]", f"'overlap' must be true or false, got {overlap!r}")
    return CoE(
        name=str(name),
        experts=experts,
        categories=mapping,
        router_seq=_int(file, "[router]", router, "seq", 64),
        serving=Serving(
            batch=_int(file, "[serving]", serving, "batch", 1),
            tokens=_int(file, "[serving]", serving, "tokens", 20),
            prompt_tokens=_int(file, "[serving]", serving, "prompt_tokens", 128),
            policy=policy,
            max_wait=_number(file, "[serving]", serving, "max_wait", 0.0, 0.0, strict=False),
            prefetch=prefetch,
            overlap=overlap,
        ),
        source=file,
        traffic=_traffic(file, data.get("traffic", {}), mapping),
    )


def load_coe(path: str | Path, categories: list[str] | None = None) -> CoE:
    from coec.backend.target import read_toml

    return parse_coe(read_toml(path, "the CoE file"), str(path), categories)
