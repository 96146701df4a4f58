"""coec.ir — the df dialect: tensor type with dtype and tier, op families, verifiers.

The errors load eagerly (they are plain Python); the dialect's names load xDSL on first
use (PEP 562), so ``import coec.ir.errors`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from coec.ir.errors import (
    CapacityError,
    CoecError,
    ConfigError,
    ExecutionError,
    ScheduleFormatError,
    UnsupportedOpError,
    VerifyError,
)

if TYPE_CHECKING:
    from coec.ir.dialect import DF, make_context, parse_module, print_module, verify
    from coec.ir.types import DTYPES, TIERS, TensorType

_LAZY = {
    "DF": "coec.ir.dialect",
    "make_context": "coec.ir.dialect",
    "parse_module": "coec.ir.dialect",
    "print_module": "coec.ir.dialect",
    "verify": "coec.ir.dialect",
    "DTYPES": "coec.ir.types",
    "TIERS": "coec.ir.types",
    "TensorType": "coec.ir.types",
}

__all__ = [
    "DF",
    "DTYPES",
    "TIERS",
    "CapacityError",
    "CoecError",
    "ConfigError",
    "ExecutionError",
    "ScheduleFormatError",
    "TensorType",
    "UnsupportedOpError",
    "VerifyError",
    "make_context",
    "parse_module",
    "print_module",
    "verify",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'coec.ir' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
