"""The df tensor type: shape, storage dtype and memory tier.

Printed compactly as `!df.tensor<4x64xbf16, hbm>`; a value not yet placed by the
placement pass has no tier and prints as `!df.tensor<4x64xbf16>`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects.builtin import (
    ArrayAttr,
    BFloat16Type,
    Float16Type,
    Float32Type,
    Float64Type,
    IntAttr,
    IntegerType,
    NoneAttr,
    Signedness,
    StringAttr,
)
from xdsl.ir import Attribute, ParametrizedAttribute, TypeAttribute
from xdsl.irdl import irdl_attr_definition
from xdsl.parser import AttrParser
from xdsl.printer import Printer

from coec.ir import dtypes
from coec.ir.errors import VerifyError

#: Memory tiers of the modeled RDU, fastest first.
TIERS: tuple[str, ...] = ("sram", "hbm", "ddr")

#: dtype name -> its xDSL element type
_ELEMENT_TYPES: dict[str, Attribute] = {
    "bf16": BFloat16Type(),
    "f16": Float16Type(),
    "f32": Float32Type(),
    "f64": Float64Type(),
    "i64": IntegerType(64),
    "i32": IntegerType(32),
    "i16": IntegerType(16),
    "i8": IntegerType(8),
    "u64": IntegerType(64, Signedness.UNSIGNED),
    "u32": IntegerType(32, Signedness.UNSIGNED),
    "u16": IntegerType(16, Signedness.UNSIGNED),
    "u8": IntegerType(8, Signedness.UNSIGNED),
    "i1": IntegerType(1),
}
#: dtype name -> (xDSL element type, bytes per element, NumPy compute dtype)
DTYPES: dict[str, tuple[Attribute, int, str]] = {
    name: (_ELEMENT_TYPES[name], d.bytes, d.compute) for name, d in dtypes.DTYPES.items()
}


def dtype_name(element_type: Attribute) -> str:
    for name, (attr, _, _) in DTYPES.items():
        if attr == element_type:
            return name
    raise VerifyError(f"unsupported element type {element_type}")


def dtype_bytes(dtype: str) -> int:
    return DTYPES[dtype][1]


def is_float(dtype: str) -> bool:
    return dtype.startswith(("f", "bf"))


@irdl_attr_definition
class TensorType(ParametrizedAttribute, TypeAttribute):
    """A dense tensor stored in `dtype` and living in memory tier `tier`."""

    name = "df.tensor"

    shape: ArrayAttr[IntAttr]
    element_type: Attribute
    tier: Attribute  # StringAttr naming a tier, or NoneAttr before placement

    def __init__(self, shape: Sequence[int], dtype: str, tier: str | None = None):
        if dtype not in DTYPES:
            raise VerifyError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
        super().__init__(
            ArrayAttr([IntAttr(int(d)) for d in shape]),
            DTYPES[dtype][0],
            StringAttr(tier) if tier else NoneAttr(),
        )

    def verify(self) -> None:
        if any(d.data < 0 for d in self.shape.data):
            raise VerifyError(f"negative dimension in {self.shape_tuple}")
        if isinstance(self.tier, StringAttr) and self.tier.data not in TIERS:
            raise VerifyError(f"unknown tier {self.tier.data!r}; known: {', '.join(TIERS)}")

    # -- accessors -----------------------------------------------------------
    # The type is immutable and the cost model asks these millions of times in a partition
    # search, so each is worked out once and kept in the instance's dict (IRDL reads every
    # class attribute but a property as a parameter, so no ``cached_property``).
    def _memo(self, key: str, make):
        found = self.__dict__.get(key)
        if found is None:
            found = self.__dict__[key] = make()
        return found

    @property
    def shape_tuple(self) -> tuple[int, ...]:
        return self._memo("_shape", lambda: tuple(d.data for d in self.shape.data))

    @property
    def dtype(self) -> str:
        return self._memo("_dtype", lambda: dtype_name(self.element_type))

    @property
    def tier_name(self) -> str | None:
        return self.tier.data if isinstance(self.tier, StringAttr) else None

    @property
    def numel(self) -> int:
        return self._memo("_numel", lambda: math.prod(self.shape_tuple))

    @property
    def nbytes(self) -> int:
        return self._memo("_nbytes", lambda: self.numel * dtype_bytes(self.dtype))

    def with_tier(self, tier: str | None) -> TensorType:
        return TensorType(self.shape_tuple, self.dtype, tier)

    # -- compact text form -----------------------------------------------------
    def print_parameters(self, printer: Printer) -> None:
        dims = "".join(f"{d}x" for d in self.shape_tuple)
        printer.print_string(f"<{dims}")
        printer.print_attribute(self.element_type)
        if self.tier_name:
            printer.print_string(f", {self.tier_name}")
        printer.print_string(">")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> list[Attribute]:
        parser.parse_punctuation("<")
        shape, element_type = parser.parse_ranked_shape()
        tier: Attribute = NoneAttr()
        if parser.parse_optional_punctuation(","):
            tier = StringAttr(parser.parse_identifier())
        parser.parse_punctuation(">")
        return [ArrayAttr([IntAttr(d) for d in shape]), element_type, tier]
