"""The df dialect's operations: a small closed vocabulary in a few families.

Families (``FAMILY``; tinygrad's lesson: passes ask "is this elementwise?" rather than list ops):

- ``source``:      ``df.weight`` (a parameter, buffer or folded constant held outside
                   the IR) and ``df.constant`` (a scalar immediate);
- ``matmul``:      ``df.matmul`` — batched ``a @ b`` (``b`` transposed on request);
- ``elementwise``: ``df.elementwise`` — unary/binary/ternary by ``kind``, NumPy
                   broadcasting;
- ``reduce``:      ``df.reduce`` and the composites ``df.softmax``, ``df.layernorm``,
                   ``df.rmsnorm``, ``df.attention`` (kept whole so fusion sees them);
- ``movement``:    ``df.reshape``, ``df.permute``, ``df.slice``, ``df.concat``,
                   ``df.broadcast``, ``df.gather``;
- ``collective``:  ``df.allreduce`` — a sum across sockets over the P2P network;
                   ``df.allgather`` — every socket's shard concatenated along an axis;
- ``kernel``:      ``df.kernel`` — a region holding one fused group, ``df.yield`` its
                   terminator.

Every op's NumPy semantics live in ``coec.runtime.ops`` (the executable
specification); FLOP rules live in ``coec.backend.cost``.  Each op checks its
shape rule in ``verify_``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, ClassVar

import numpy as np
from xdsl.dialects.builtin import (
    BoolAttr,
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    f64,
    i1,
    i64,
)
from xdsl.ir import Attribute, Block, Region, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import IsTerminator

from coec.ir.dtypes import ROUND_TYPES
from coec.ir.errors import VerifyError
from coec.ir.types import TensorType

UNARY_KINDS = frozenset(
    [
        "neg",
        "exp",
        "log",
        "sqrt",
        "rsqrt",
        "tanh",
        "sigmoid",
        "relu",
        "gelu",
        "gelu_tanh",
        "silu",
        "sin",
        "cos",
        "abs",
        "reciprocal",
        "erf",
        "cast",
        "logical_not",
    ]
    # round_<type>: each value to the nearest of a narrower type (ONNX Cast), kept in its dtype
    + [f"round_{t}" for t in ROUND_TYPES]
)
BINARY_KINDS = frozenset(
    [
        "add",
        "sub",
        "mul",
        "div",
        "pow",
        "maximum",
        "minimum",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "logical_and",
        "logical_or",
    ]
)
TERNARY_KINDS = frozenset({"where"})
REDUCE_KINDS = frozenset({"sum", "mean", "max", "min", "prod"})


# -- attribute helpers ---------------------------------------------------------------
def _ints(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def _int(value: int) -> IntegerAttr:
    return IntegerAttr(int(value), i64)


def _float(value: float) -> FloatAttr:
    return FloatAttr(float(value), f64)


def to_python(attr: Attribute):
    """A property as plain Python data (for schedules and reports)."""
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, IntegerAttr):
        if attr.type == i1:
            return bool(attr.value.data)
        return int(attr.value.data)
    if isinstance(attr, FloatAttr):
        return float(attr.value.data)
    if isinstance(attr, DenseArrayBase):
        return [int(v) for v in attr.get_values()]
    raise VerifyError(f"cannot convert attribute {attr} to Python")


def tensor_type(value: SSAValue) -> TensorType:
    if not isinstance(value.type, TensorType):
        raise VerifyError(f"expected a !df.tensor, got {value.type}")
    return value.type


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError as e:
        raise VerifyError(f"shapes {list(shapes)} do not broadcast") from e


class DfOp(IRDLOperation):
    """Base of every df op: its family and its properties as Python data."""

    FAMILY: ClassVar[str] = ""
    irdl_options = (ParsePropInAttrDict(),)

    def memo(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()``, worked out once per op and ``key``: for facts that follow from the
        op's properties and its operand and result types, which no pass changes after the
        op is built (rewrites build new ops). A partition search asks them of every op for
        every kernel it costs."""
        found = self.__dict__.setdefault("_memo", {})
        if key not in found:
            found[key] = make()
        return found[key]

    def props(self) -> dict:
        """The op's properties as Python data (a fresh dict)."""
        return dict(
            self.memo(
                "props",
                lambda: tuple(
                    (k, to_python(v))
                    for k, v in sorted(self.properties.items())
                    if k != "operandSegmentSizes"
                ),
            )
        )

    @property
    def out_type(self) -> TensorType:
        return tensor_type(self.results[0])

    def in_types(self) -> list[TensorType]:
        return [tensor_type(v) for v in self.operands]

    def fail(self, message: str) -> VerifyError:
        return VerifyError(f"{self.name}: {message}")

    def check_shape(self, expected: Sequence[int]) -> None:
        got = self.out_type.shape_tuple
        if tuple(expected) != got:
            raise self.fail(f"result shape {got} does not match the rule's {tuple(expected)}")


# -- sources ---------------------------------------------------------------------------
@irdl_op_definition
class WeightOp(DfOp):
    """A named tensor whose data lives outside the IR: parameter, buffer or folded constant."""

    name = "df.weight"
    FAMILY: ClassVar[str] = "source"
    sym_name = prop_def(StringAttr)
    kind = prop_def(StringAttr)  # "param" | "buffer" | "constant"
    result = result_def(TensorType)
    assembly_format = "attr-dict `:` type($result)"

    def __init__(self, sym_name: str, kind: str, type_: TensorType):
        super().__init__(
            properties={"sym_name": StringAttr(sym_name), "kind": StringAttr(kind)},
            result_types=[type_],
        )


@irdl_op_definition
class ConstantOp(DfOp):
    """A scalar immediate (0-d tensor); held in PCU registers, never moved by DMA."""

    name = "df.constant"
    FAMILY: ClassVar[str] = "source"
    value = prop_def(FloatAttr)
    result = result_def(TensorType)
    assembly_format = "attr-dict `:` type($result)"

    def __init__(self, value: float, dtype: str):
        super().__init__(properties={"value": _float(value)}, result_types=[TensorType((), dtype)])

    def verify_(self) -> None:
        if self.out_type.shape_tuple != ():
            raise self.fail("a constant is a 0-d tensor; larger constants are df.weight")


# -- matmul --------------------------------------------------------------------------------
@irdl_op_definition
class MatmulOp(DfOp):
    """``a @ b`` over the last two dims, batch dims broadcast; ``b`` is [.., N, K] if transpose_b."""

    name = "df.matmul"
    FAMILY: ClassVar[str] = "matmul"
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    transpose_b = prop_def(BoolAttr)
    result = result_def(TensorType)
    assembly_format = "$a `,` $b attr-dict `:` type($a) `,` type($b) `->` type($result)"

    def __init__(self, a: SSAValue, b: SSAValue, transpose_b: bool, type_: TensorType):
        super().__init__(
            operands=[a, b],
            properties={"transpose_b": BoolAttr.from_bool(transpose_b)},
            result_types=[type_],
        )

    def verify_(self) -> None:
        sa, sb = (t.shape_tuple for t in self.in_types())
        if len(sa) < 2 or len(sb) < 2:
            raise self.fail(f"operands must be at least 2-d, got {sa} and {sb}")
        k, n = (sb[-1], sb[-2]) if self.transpose_b.value.data else (sb[-2], sb[-1])
        if sa[-1] != k:
            raise self.fail(f"contraction mismatch: {sa} @ {sb}")
        self.check_shape(broadcast_shapes(sa[:-2], sb[:-2]) + (sa[-2], n))


# -- elementwise ------------------------------------------------------------------------
@irdl_op_definition
class ElementwiseOp(DfOp):
    """``kind`` applied element by element with NumPy broadcasting (``cast`` converts dtype)."""

    name = "df.elementwise"
    FAMILY: ClassVar[str] = "elementwise"
    inputs = var_operand_def(TensorType)
    kind = prop_def(StringAttr)
    result = result_def(TensorType)
    assembly_format = "$inputs attr-dict `:` type($inputs) `->` type($result)"

    def __init__(self, kind: str, inputs: Sequence[SSAValue], type_: TensorType):
        super().__init__(
            operands=[list(inputs)], properties={"kind": StringAttr(kind)}, result_types=[type_]
        )

    def verify_(self) -> None:
        kind, n = self.kind.data, len(self.inputs)
        arity = 1 if kind in UNARY_KINDS else 2 if kind in BINARY_KINDS else 3
        if kind not in UNARY_KINDS | BINARY_KINDS | TERNARY_KINDS:
            raise self.fail(f"unknown kind {kind!r}")
        if n != arity:
            raise self.fail(f"{kind} takes {arity} operands, got {n}")
        self.check_shape(broadcast_shapes(*(t.shape_tuple for t in self.in_types())))


# -- reductions and composites ------------------------------------------------------------
@irdl_op_definition
class ReduceOp(DfOp):
    """Reduce ``input`` over ``axes`` with ``kind`` (sum/mean/max/min/prod)."""

    name = "df.reduce"
    FAMILY: ClassVar[str] = "reduce"
    input = operand_def(TensorType)
    kind = prop_def(StringAttr)
    axes = prop_def(DenseArrayBase)
    keepdim = prop_def(BoolAttr)
    result = result_def(TensorType)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(
        self, kind: str, x: SSAValue, axes: Sequence[int], keepdim: bool, type_: TensorType
    ):
        super().__init__(
            operands=[x],
            properties={
                "kind": StringAttr(kind),
                "axes": _ints(axes),
                "keepdim": BoolAttr.from_bool(keepdim),
            },
            result_types=[type_],
        )

    def verify_(self) -> None:
        if self.kind.data not in REDUCE_KINDS:
            raise self.fail(f"unknown kind {self.kind.data!r}")
        shape = self.in_types()[0].shape_tuple
        axes = {a % max(len(shape), 1) for a in self.props()["axes"]}
        keep = self.keepdim.value.data
        out = [1 if i in axes else d for i, d in enumerate(shape) if keep or i not in axes]
        self.check_shape(out)


class _SameShapeOp(DfOp):
    def verify_(self) -> None:
        self.check_shape(self.in_types()[0].shape_tuple)


@irdl_op_definition
class SoftmaxOp(_SameShapeOp):
    """Softmax (or log-softmax when ``log``) along ``axis``."""

    name = "df.softmax"
    FAMILY: ClassVar[str] = "reduce"
    input = operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    log = prop_def(BoolAttr)
    result = result_def(TensorType)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, x: SSAValue, axis: int, log: bool, type_: TensorType):
        super().__init__(
            operands=[x],
            properties={"axis": _int(axis), "log": BoolAttr.from_bool(log)},
            result_types=[type_],
        )


@irdl_op_definition
class LayerNormOp(_SameShapeOp):
    """LayerNorm over the trailing ``ndims`` dims, optionally scaled and shifted."""

    name = "df.layernorm"
    FAMILY: ClassVar[str] = "reduce"
    input = operand_def(TensorType)
    weight = opt_operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    ndims = prop_def(IntegerAttr)
    eps = prop_def(FloatAttr)
    result = result_def(TensorType)
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    assembly_format = (
        "$input (`weight` $weight^)? (`bias` $bias^)? attr-dict `:` "
        "type($input) (`,` type($weight)^)? (`,` type($bias)^)? `->` type($result)"
    )

    def __init__(self, x, weight, bias, ndims: int, eps: float, type_: TensorType):
        super().__init__(
            operands=[x, [weight] if weight else [], [bias] if bias else []],
            properties={"ndims": _int(ndims), "eps": _float(eps)},
            result_types=[type_],
        )


@irdl_op_definition
class RMSNormOp(_SameShapeOp):
    """RMSNorm over the trailing ``ndims`` dims, optionally scaled."""

    name = "df.rmsnorm"
    FAMILY: ClassVar[str] = "reduce"
    input = operand_def(TensorType)
    weight = opt_operand_def(TensorType)
    ndims = prop_def(IntegerAttr)
    eps = prop_def(FloatAttr)
    result = result_def(TensorType)
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    assembly_format = (
        "$input (`weight` $weight^)? attr-dict `:` "
        "type($input) (`,` type($weight)^)? `->` type($result)"
    )

    def __init__(self, x, weight, ndims: int, eps: float, type_: TensorType):
        super().__init__(
            operands=[x, [weight] if weight else []],
            properties={"ndims": _int(ndims), "eps": _float(eps)},
            result_types=[type_],
        )


@irdl_op_definition
class AttentionOp(DfOp):
    """softmax(q kᵀ · scale + mask) v over [..., L, E]; k/v heads repeat for GQA."""

    name = "df.attention"
    FAMILY: ClassVar[str] = "reduce"
    q = operand_def(TensorType)
    k = operand_def(TensorType)
    v = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    scale = prop_def(FloatAttr)
    is_causal = prop_def(BoolAttr)
    result = result_def(TensorType)
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    assembly_format = (
        "$q `,` $k `,` $v (`mask` $mask^)? attr-dict `:` type($q) `,` type($k) `,` type($v) "
        "(`,` type($mask)^)? `->` type($result)"
    )

    def __init__(self, q, k, v, mask, scale: float, is_causal: bool, type_: TensorType):
        super().__init__(
            operands=[q, k, v, [mask] if mask else []],
            properties={"scale": _float(scale), "is_causal": BoolAttr.from_bool(is_causal)},
            result_types=[type_],
        )

    def verify_(self) -> None:
        sq, sk, sv = (tensor_type(v).shape_tuple for v in (self.q, self.k, self.v))
        if sq[-1] != sk[-1] or sk[-2] != sv[-2]:
            raise self.fail(f"q {sq}, k {sk}, v {sv} do not line up")
        self.check_shape(sq[:-1] + sv[-1:])


# -- movement --------------------------------------------------------------------------------
@irdl_op_definition
class ReshapeOp(DfOp):
    """Same elements in row-major order, another shape (a view: no data moves)."""

    name = "df.reshape"
    FAMILY: ClassVar[str] = "movement"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, x: SSAValue, type_: TensorType):
        super().__init__(operands=[x], result_types=[type_])

    def verify_(self) -> None:
        if self.in_types()[0].numel != self.out_type.numel:
            raise self.fail(
                f"{self.in_types()[0].shape_tuple} -> {self.out_type.shape_tuple} "
                "changes the element count"
            )


@irdl_op_definition
class PermuteOp(DfOp):
    """Transpose dims: result dim i is input dim ``perm[i]``."""

    name = "df.permute"
    FAMILY: ClassVar[str] = "movement"
    input = operand_def(TensorType)
    perm = prop_def(DenseArrayBase)
    result = result_def(TensorType)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, x: SSAValue, perm: Sequence[int], type_: TensorType):
        super().__init__(operands=[x], properties={"perm": _ints(perm)}, result_types=[type_])

    def verify_(self) -> None:
        shape, perm = self.in_types()[0].shape_tuple, self.props()["perm"]
        if sorted(perm) != list(range(len(shape))):
            raise self.fail(f"perm {perm} is not a permutation of {len(shape)} dims")
        self.check_shape([shape[p] for p in perm])


@irdl_op_definition
class SliceOp(DfOp):
    """``x[start:end:step]`` along ``axis``."""

    name = "df.slice"
    FAMILY: ClassVar[str] = "movement"
    input = operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    start = prop_def(IntegerAttr)
    end = prop_def(IntegerAttr)
    step = prop_def(IntegerAttr)
    result = result_def(TensorType)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, x: SSAValue, axis: int, start: int, end: int, step: int, type_):
        super().__init__(
            operands=[x],
            properties={
                "axis": _int(axis),
                "start": _int(start),
                "end": _int(end),
                "step": _int(step),
            },
            result_types=[type_],
        )

    def verify_(self) -> None:
        p, shape = self.props(), list(self.in_types()[0].shape_tuple)
        if not 0 <= p["axis"] < len(shape):
            raise self.fail(f"axis {p['axis']} out of range for {tuple(shape)}")
        shape[p["axis"]] = len(range(p["start"], p["end"], p["step"]))
        self.check_shape(shape)


@irdl_op_definition
class ConcatOp(DfOp):
    """Concatenate the inputs along ``axis``."""

    name = "df.concat"
    FAMILY: ClassVar[str] = "movement"
    inputs = var_operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    result = result_def(TensorType)
    assembly_format = "$inputs attr-dict `:` type($inputs) `->` type($result)"

    def __init__(self, inputs: Sequence[SSAValue], axis: int, type_: TensorType):
        super().__init__(
            operands=[list(inputs)], properties={"axis": _int(axis)}, result_types=[type_]
        )

    def verify_(self) -> None:
        shapes = [list(t.shape_tuple) for t in self.in_types()]
        axis = self.props()["axis"]
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        self.check_shape(out)


@irdl_op_definition
class BroadcastOp(DfOp):
    """Materialise ``x`` broadcast (NumPy rules) to the result's shape."""

    name = "df.broadcast"
    FAMILY: ClassVar[str] = "movement"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, x: SSAValue, type_: TensorType):
        super().__init__(operands=[x], result_types=[type_])

    def verify_(self) -> None:
        out = self.out_type.shape_tuple
        if broadcast_shapes(self.in_types()[0].shape_tuple, out) != out:
            raise self.fail(f"{self.in_types()[0].shape_tuple} does not broadcast to {out}")


@irdl_op_definition
class GatherOp(DfOp):
    """``take(table, indices, axis)``: rows of ``table`` picked by integer ``indices``."""

    name = "df.gather"
    FAMILY: ClassVar[str] = "movement"
    inputs = var_operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    result = result_def(TensorType)
    assembly_format = "$inputs attr-dict `:` type($inputs) `->` type($result)"

    def __init__(self, table: SSAValue, indices: SSAValue, axis: int, type_: TensorType):
        super().__init__(
            operands=[[table, indices]], properties={"axis": _int(axis)}, result_types=[type_]
        )

    def verify_(self) -> None:
        table, idx = (t.shape_tuple for t in self.in_types())
        axis = self.props()["axis"]
        self.check_shape(table[:axis] + idx + table[axis + 1 :])


@irdl_op_definition
class TopKOp(DfOp):
    """The ``k`` largest of ``input`` along ``axis`` (the smallest unless ``largest``),
    largest first, ties to the lower position: their values, or with ``indices`` their
    positions (i64). A mixture of experts' router picks each token's experts with it."""

    name = "df.topk"
    FAMILY: ClassVar[str] = "reduce"
    input = operand_def(TensorType)
    k = prop_def(IntegerAttr)
    axis = prop_def(IntegerAttr)
    largest = prop_def(BoolAttr)
    indices = prop_def(BoolAttr)
    result = result_def(TensorType)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, x: SSAValue, k: int, axis: int, largest: bool, indices: bool, type_):
        super().__init__(
            operands=[x],
            properties={
                "k": _int(k),
                "axis": _int(axis),
                "largest": BoolAttr.from_bool(largest),
                "indices": BoolAttr.from_bool(indices),
            },
            result_types=[type_],
        )

    def verify_(self) -> None:
        shape, p = list(self.in_types()[0].shape_tuple), self.props()
        if not 0 <= p["axis"] < len(shape) or not 0 <= p["k"] <= shape[p["axis"]]:
            raise self.fail(f"top {p['k']} along axis {p['axis']} of {tuple(shape)}")
        shape[p["axis"]] = p["k"]
        self.check_shape(shape)
        want = "i64" if p["indices"] else self.in_types()[0].dtype
        if self.out_type.dtype != want:
            raise self.fail(f"result dtype {self.out_type.dtype}, not {want}")


@irdl_op_definition
class UpdateOp(DfOp):
    """``dest`` with ``src`` written over ``[start, start + len)`` along ``axis`` (a KV-cache
    append: ``slice_scatter``). Functional here; the backend writes it in place, moving only
    ``src``'s bytes, when nothing else reads ``dest`` (``inplace_dest``)."""

    name = "df.update"
    FAMILY: ClassVar[str] = "movement"
    dest = operand_def(TensorType)
    src = operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    start = prop_def(IntegerAttr)
    result = result_def(TensorType)
    assembly_format = "$dest `,` $src attr-dict `:` type($dest) `,` type($src) `->` type($result)"

    def __init__(self, dest: SSAValue, src: SSAValue, axis: int, start: int):
        super().__init__(
            operands=[dest, src],
            properties={"axis": _int(axis), "start": _int(start)},
            result_types=[dest.type],
        )

    def verify_(self) -> None:
        dest, src = (t.shape_tuple for t in self.in_types())
        axis, start = self.props()["axis"], self.props()["start"]
        if not 0 <= axis < len(dest) or len(src) != len(dest):
            raise self.fail(f"cannot write {src} into {dest} along axis {axis}")
        others = [d for i, d in enumerate(dest) if i != axis]
        if [d for i, d in enumerate(src) if i != axis] != others:
            raise self.fail(f"{src} differs from {dest} off axis {axis}")
        if not 0 <= start <= dest[axis] - src[axis]:
            raise self.fail(f"{src[axis]} rows from {start} overrun {dest[axis]} along {axis}")
        if self.in_types()[0].dtype != self.in_types()[1].dtype:
            raise self.fail("dest and src dtypes differ")
        self.check_shape(dest)


# -- collectives -----------------------------------------------------------------------------
@irdl_op_definition
class AllReduceOp(_SameShapeOp):
    """Sum of ``input`` over every socket, handed back to each (tensor parallelism).

    Travels the peer-to-peer network as a ring: each socket sends and receives
    2·(N−1)/N of the tensor. Elementwise in shape, so it streams inside fused kernels.
    """

    name = "df.allreduce"
    FAMILY: ClassVar[str] = "collective"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, x: SSAValue, type_: TensorType):
        super().__init__(operands=[x], result_types=[type_])


@irdl_op_definition
class AllGatherOp(DfOp):
    """Every socket's ``input`` concatenated along ``axis`` in socket order, handed to each.

    The result's ``axis`` is the input's times the number of sockets (a column-parallel
    layer's shards made whole, e.g. an LM head's logits split by vocabulary). Travels
    the peer-to-peer network as a ring: each socket sends its shard to N−1 peers,
    (N−1)/N of the result. Streams along any other axis.
    """

    name = "df.allgather"
    FAMILY: ClassVar[str] = "collective"
    input = operand_def(TensorType)
    axis = prop_def(IntegerAttr)
    result = result_def(TensorType)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, x: SSAValue, axis: int, type_: TensorType):
        super().__init__(operands=[x], properties={"axis": _int(axis)}, result_types=[type_])

    @property
    def parts(self) -> int:
        """How many shards (sockets) the result joins."""
        axis = self.props()["axis"]
        return self.out_type.shape_tuple[axis] // self.in_types()[0].shape_tuple[axis]

    def verify_(self) -> None:
        shape, axis = list(self.in_types()[0].shape_tuple), self.props()["axis"]
        if not 0 <= axis < len(shape):
            raise self.fail(f"axis {axis} out of range for {tuple(shape)}")
        got = self.out_type.shape_tuple
        if len(got) != len(shape) or shape[axis] == 0 or got[axis] % shape[axis]:
            raise self.fail(f"result shape {got} is not {tuple(shape)} repeated along axis {axis}")
        shape[axis] = got[axis]
        self.check_shape(shape)


# -- kernels ---------------------------------------------------------------------------------
@irdl_op_definition
class YieldOp(DfOp):
    """Terminator of a kernel: the values the kernel hands back."""

    name = "df.yield"
    FAMILY: ClassVar[str] = "kernel"
    values = var_operand_def(TensorType)
    traits = traits_def(IsTerminator())
    assembly_format = "$values attr-dict `:` type($values)"

    def __init__(self, values: Sequence[SSAValue]):
        super().__init__(operands=[list(values)])


@irdl_op_definition
class KernelOp(DfOp):
    """One launch on the RDU: a fused group whose inner values never leave SRAM.

    The region's block arguments stand for ``inputs``; ``df.yield`` names the results.
    """

    name = "df.kernel"
    FAMILY: ClassVar[str] = "kernel"
    inputs = var_operand_def(TensorType)
    sym_name = prop_def(StringAttr)
    outputs = var_result_def(TensorType)
    body = region_def("single_block")
    assembly_format = (
        "$sym_name `(` $inputs `)` attr-dict `:` functional-type($inputs, $outputs) $body"
    )

    def __init__(self, sym_name: str, inputs: Sequence[SSAValue], body: Region, out_types):
        super().__init__(
            operands=[list(inputs)],
            properties={"sym_name": StringAttr(sym_name)},
            result_types=[list(out_types)],
            regions=[body],
        )

    @property
    def block(self) -> Block:
        return self.body.block

    def compute_ops(self) -> list[DfOp]:
        return [op for op in self.block.ops if not isinstance(op, YieldOp)]


# Ops a kernel may hold (everything but kernels and their terminator).
COMPUTE_OPS: tuple[type[DfOp], ...] = (
    WeightOp,
    ConstantOp,
    MatmulOp,
    ElementwiseOp,
    ReduceOp,
    SoftmaxOp,
    LayerNormOp,
    RMSNormOp,
    AttentionOp,
    ReshapeOp,
    PermuteOp,
    SliceOp,
    ConcatOp,
    BroadcastOp,
    GatherOp,
    TopKOp,
    UpdateOp,
    AllReduceOp,
    AllGatherOp,
)
ALL_OPS = (*COMPUTE_OPS, YieldOp, KernelOp)
