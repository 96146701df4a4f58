"""The op tables the frontends read and their lowerings register into.

``LOWERINGS`` maps an ATen op name (overload stripped) to its handler, ``ONNX_LOWERINGS`` an
ONNX op type (domain-prefixed outside the default domain) to its handler. Handler modules
import only this module to register (``@lowers(...)``, ``@onnx_op(...)``), so no handler
module imports an importer, and an importer loads its handler modules once through
:func:`aten_lowerings` / :func:`onnx_lowerings`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

#: a handler takes the importer's state and the node, returns the node's result(s)
Handler = Callable[..., Any]

LOWERINGS: dict[str, Handler] = {}
ONNX_LOWERINGS: dict[str, Handler] = {}

#: the modules whose import registers each table's handlers
ATEN_MODULES = ("coec.frontend.aten_ops", "coec.frontend.lower_spatial")
ONNX_MODULES = ("coec.frontend.onnx_ops", "coec.frontend.onnx_spatial")


def _register(table: dict[str, Handler], names: tuple[str, ...]):
    def register(fn: Handler) -> Handler:
        for n in names:
            if n in table:
                raise ValueError(f"op {n!r} is lowered twice ({table[n].__name__}, {fn.__name__})")
            table[n] = fn
        return fn

    return register


def lowers(*names: str):
    """Register an ATen lowering for ``names``."""
    return _register(LOWERINGS, names)


def onnx_op(*names: str):
    """Register an ONNX handler for the op types ``names``."""
    return _register(ONNX_LOWERINGS, names)


def aten_lowerings() -> dict[str, Handler]:
    """The ATen table with every handler module loaded."""
    for m in ATEN_MODULES:
        importlib.import_module(m)
    return LOWERINGS


def onnx_lowerings() -> dict[str, Handler]:
    """The ONNX table with every handler module loaded."""
    for m in ONNX_MODULES:
        importlib.import_module(m)
    return ONNX_LOWERINGS
