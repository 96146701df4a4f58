"""A disk cache of small compile results, so repeated CoE runs and benches skip recompiling.

Only what a count-only compile decides is stored (modeled seconds, weight bytes): a few
numbers of JSON per entry, never a pickle. An entry's key hashes everything that decides
it: the caller's arguments, the target's parameters (a user's TOML file is read, not
named), the model file's bytes when there is one, and coec's own source with the torch
and transformers versions — so editing coec or upgrading torch misses, never goes stale.

``COEC_CACHE_DIR`` moves it (default ``$XDG_CACHE_HOME/coec`` or ``~/.cache/coec``);
``COEC_CACHE=0`` turns it off. An unreadable or corrupt entry is recomputed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

FORMAT = "coec.cache/1"


def enabled() -> bool:
    return os.environ.get("COEC_CACHE", "1") not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    if d := os.environ.get("COEC_CACHE_DIR"):
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "coec"


@functools.cache
def toolchain_fingerprint() -> str:
    """coec's source files and the versions of the libraries that shape a compile."""
    import coec

    h = hashlib.sha256()
    roots = sorted({Path(p) for p in coec.__path__} | _subpackage_roots())
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".toml") and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(root)).encode())
                h.update(path.read_bytes())
    for dist in ("torch", "transformers", "xdsl"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=none".encode())
    return h.hexdigest()


def _subpackage_roots() -> set[Path]:
    """coec.ir, coec.passes, ... live in folders of their own (see pyproject's package-dir)."""
    import coec.backend
    import coec.ir
    import coec.passes
    import coec.runtime

    return {Path(p) for m in (coec.ir, coec.passes, coec.backend, coec.runtime) for p in m.__path__}


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def target_params(target: str) -> dict:
    """What a target decides, read from its file: a renamed or edited TOML changes the key."""
    from coec.backend.target import load_target

    return load_target(target).to_json()


def cached(kind: str, key: dict, compute: Callable[[], dict]) -> dict:
    """``compute()``'s JSON-able result, from disk when an entry for ``key`` exists."""
    if not enabled():
        return compute()
    blob = json.dumps(
        {"format": FORMAT, "kind": kind, "key": key, "coec": toolchain_fingerprint()},
        sort_keys=True,
    )
    path = cache_dir() / kind / f"{hashlib.sha256(blob.encode()).hexdigest()}.json"
    try:
        entry = json.loads(path.read_text())
        if entry.get("format") == FORMAT and entry.get("kind") == kind:
            return entry["value"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    value = compute()
    _store(path, {"format": FORMAT, "kind": kind, "key": key, "value": value})
    return value


def _store(path: Path, entry: dict) -> None:
    """Write atomically; a cache that cannot be written is only a slower run."""
    from coec.backend.schedule import write_files_atomic
    from coec.ir.errors import ConfigError

    with contextlib.suppress(ConfigError):
        write_files_atomic({path: json.dumps(entry, sort_keys=True, indent=1) + "\n"})
