"""Storage dtypes as plain data: bytes per element and the NumPy dtype each computes in.

Plain Python (no xDSL) so that the schedule and the runtime can read it; ``coec.ir.types``
pairs each name with its xDSL element type.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dtype:
    """One storage dtype: its size and the NumPy dtype the runtime computes it in."""

    name: str
    bytes: int
    compute: str  # a NumPy dtype name


DTYPES: dict[str, Dtype] = {
    d.name: d
    for d in (
        Dtype("bf16", 2, "float32"),
        Dtype("f16", 2, "float32"),
        Dtype("f32", 4, "float32"),
        Dtype("f64", 8, "float64"),
        # integers compute at their own width, so they wrap around as stored (uint8 255+1 == 0)
        Dtype("i64", 8, "int64"),
        Dtype("i32", 4, "int32"),
        Dtype("i16", 2, "int16"),
        Dtype("i8", 1, "int8"),
        Dtype("u64", 8, "uint64"),
        Dtype("u32", 4, "uint32"),
        Dtype("u16", 2, "uint16"),
        Dtype("u8", 1, "uint8"),
        Dtype("i1", 1, "bool"),
    )
}

#: the narrow number types a value can be rounded to (the ``round_<type>`` elementwise
#: kinds, ONNX Cast): the 16-bit floats, the 8- and 4-bit floats, the 4- and 2-bit integers
ROUND_TYPES = (
    "f16",
    "bf16",
    "f8e4m3fn",
    "f8e4m3fnuz",
    "f8e5m2",
    "f8e5m2fnuz",
    "f4e2m1",
    "i4",
    "u4",
    "i2",
    "u2",
)

#: bytes per element of each storage dtype
DTYPE_BYTES: dict[str, int] = {name: d.bytes for name, d in DTYPES.items()}
