"""coec.ir — the df dialect: tensor type with dtype and tier, op families, verifiers."""

from coec.ir.dialect import DF, make_context, parse_module, print_module, verify
from coec.ir.errors import (
    CapacityError,
    CoecError,
    ConfigError,
    ExecutionError,
    ScheduleFormatError,
    UnsupportedOpError,
    VerifyError,
)
from coec.ir.types import DTYPES, TIERS, TensorType

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
