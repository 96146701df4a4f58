"""A Composition of Experts as data: ``coe.toml``.

    format = "coec.coe/1"
    name = "demo"

    [router]                 # the bundled two-step router (MiniLM-L6 + a trained head)
    seq = 64                 # tokens per prompt the router's encoder reads

    [experts.coder]          # an expert: a zoo model by name ...
    zoo = "llama2-7b"
    [experts.scholar]
    zoo = "mistral-7b"
    count = 10               # ... optionally N copies (same architecture, own weights)

    [categories]             # step two of the router: category -> expert
    coding = "coder"
    math = "scholar"

    [serving]                # defaults for coec coe serve (all optional)
    batch = 1
    tokens = 20              # output tokens per request
    prompt_tokens = 128
    policy = "lru"

Every category the router knows must map to an expert; every key is checked.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from coec.ir.errors import ConfigError

FORMAT = "coec.coe/1"
POLICIES = ("lru", "lfu")


@dataclass(frozen=True)
class Expert:
    name: str
    zoo: str  # the zoo architecture it is an instance of


@dataclass(frozen=True)
class Serving:
    batch: int = 1
    tokens: int = 20
    prompt_tokens: int = 128
    policy: str = "lru"


@dataclass(frozen=True)
class CoE:
    name: str
    experts: list[Expert]
    categories: dict[str, str]  # category -> expert name
    router_seq: int = 64
    serving: Serving = field(default_factory=Serving)
    source: str = "<coe>"

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


def parse_coe(data: dict, file: str = "<coe>", categories: list[str] | None = None) -> CoE:
    """Check a parsed ``coe.toml``; ``categories`` are the router's (all must be mapped)."""
    from coec.zoo import ZOO

    _check_keys(file, "", data, {"format", "name", "router", "experts", "categories", "serving"})
    if data.get("format") != FORMAT:
        raise _fail(file, "", f"format {data.get('format')!r} is not {FORMAT!r}")
    name = data.get("name", Path(file).stem)
    router = data.get("router", {})
    _check_keys(file, "[router]", router, {"seq"})
    experts: list[Expert] = []
    for ename, spec in (data.get("experts") or {}).items():
        where = f"[experts.{ename}]"
        if not isinstance(spec, dict):
            raise _fail(file, where, "must be a table with 'zoo'")
        _check_keys(file, where, spec, {"zoo", "count"})
        if spec.get("zoo") not in ZOO:
            raise _fail(file, where, f"zoo model {spec.get('zoo')!r} is not in the zoo (coec zoo)")
        count = _int(file, where, spec, "count", 1)
        names = [ename] if count == 1 else [f"{ename}-{i}" for i in range(count)]
        experts += [Expert(n, spec["zoo"]) for n in names]
    if not experts:
        raise _fail(file, "[experts]", "no experts defined")
    known = {e.name for e in experts} | {n for n in (data.get("experts") or {})}
    mapping = data.get("categories") or {}
    for category, expert in mapping.items():
        if expert not in known:
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
    # an expert group name maps to its first copy
    first = {e.name.rsplit("-", 1)[0]: e.name for e in reversed(experts)}
    mapping = {c: (e if e in {x.name for x in experts} else first[e]) for c, e in mapping.items()}
    serving = data.get("serving", {})
    _check_keys(file, "[serving]", serving, {"batch", "tokens", "prompt_tokens", "policy"})
    policy = serving.get("policy", "lru")
    if policy not in POLICIES:
        raise _fail(file, "[serving]", f"policy {policy!r}: choose from {', '.join(POLICIES)}")
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
        ),
        source=file,
    )


def load_coe(path: str | Path, categories: list[str] | None = None) -> CoE:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e
    return parse_coe(data, str(path), categories)
