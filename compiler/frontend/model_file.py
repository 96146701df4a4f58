"""Load a user's MODEL.py: ``model()`` -> nn.Module and ``example_inputs()`` -> tensors.

Every way a file can be wrong (missing, syntax error, raising at import, no
``model()``, wrong return types) is one ConfigError naming the file and line.
"""

from __future__ import annotations

import sys
import traceback
import types
from pathlib import Path

import torch

from coec.ir.errors import ConfigError


def _user_line(exc: BaseException, path: Path) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f"{path}:{frames[-1].lineno}" if frames else str(path)


def _load_namespace(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: no such model file")
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read model file ({e})") from e
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: syntax error: {e.msg}") from e
    module = types.ModuleType(f"coec_model_{path.stem}")
    module.__file__ = str(path)
    sys.path.insert(0, str(path.parent))
    try:
        exec(code, module.__dict__)
    except SystemExit as e:
        raise ConfigError(
            f"{path}: the model file called sys.exit({e.code!r}) while loading; "
            "a MODEL.py defines model() and example_inputs() and runs nothing at import"
        ) from e
    except Exception as e:
        raise ConfigError(
            f"{_user_line(e, path)}: error while loading the model file: {type(e).__name__}: {e}"
        ) from e
    finally:
        sys.path.remove(str(path.parent))
    return module.__dict__


def _call(ns: dict, name: str, path: Path):
    fn = ns.get(name)
    if not callable(fn):
        hint = " (or name another function with --entry)" if name == "model" else ""
        raise ConfigError(f"{path}: defines no {name}() function{hint}")
    try:
        return fn()
    except SystemExit as e:
        raise ConfigError(f"{path}: {name}() called sys.exit({e.code!r})") from e
    except Exception as e:
        raise ConfigError(f"{_user_line(e, path)}: {name}() raised {type(e).__name__}: {e}") from e


def _as_inputs(value, path: Path, what: str) -> tuple:
    if isinstance(value, torch.Tensor):
        value = (value,)
    if not isinstance(value, tuple | list) or not all(isinstance(x, torch.Tensor) for x in value):
        raise ConfigError(
            f"{path}: {what} must return a tuple of tensors, got {type(value).__name__}"
        )
    return tuple(value)


def load_model_file(path: str | Path, entry: str | None = None) -> tuple[torch.nn.Module, tuple]:
    """The module and example inputs a MODEL.py defines, the module in eval mode.

    The module is made here for this compile (no caller holds it), and coec compiles
    inference, so it is put in eval mode rather than warned about: a fresh ``nn.Module``
    is in train mode, as nearly every MODEL.py leaves it.
    """
    path = Path(path).resolve() if Path(path).exists() else Path(path)
    ns = _load_namespace(path)
    if entry:
        result = _call(ns, entry, path)
        if not (isinstance(result, tuple | list) and len(result) == 2):
            raise ConfigError(f"{path}: {entry}() must return (module, example_inputs)")
        module, inputs = result
        inputs = _as_inputs(inputs, path, f"{entry}()[1]")
    else:
        module = _call(ns, "model", path)
        inputs = _as_inputs(_call(ns, "example_inputs", path), path, "example_inputs()")
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(
            f"{path}: model() must return a torch.nn.Module, got {type(module).__name__}"
        )
    return module.eval(), inputs
