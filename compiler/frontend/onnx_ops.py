"""The ONNX op handlers of the importer, one per op type (``ONNX_LOWERINGS``).

Each handler takes the import state and the node and returns the node's result(s):
df values it emitted, or NumPy arrays when the result is known at import time
(``Shape`` of a static tensor). Handlers compute result shapes from the df types;
the importer checks them against ONNX shape inference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from xdsl.ir import SSAValue

from coec.frontend.common import slice_value
from coec.frontend.registry import onnx_op
from coec.ir import ops as df
from coec.ir.errors import VerifyError

if TYPE_CHECKING:
    from coec.frontend.onnx_import import OnnxImport


def op_key(node: onnx.NodeProto) -> str:
    """The table key of a node: its op type, prefixed by its domain outside the default one."""
    if node.domain in ("", "ai.onnx"):
        return node.op_type
    return f"{node.domain}.{node.op_type}"


# -- handlers, one per ONNX op type -----------------------------------------------------------
@onnx_op("Identity")
def _identity(imp: OnnxImport, node):
    return imp.value(node.input[0])


@onnx_op("Dropout")
def _dropout(imp: OnnxImport, node):
    """Inference dropout: the identity, its mask all true. Training mode (random) is refused
    unless its ratio is 0."""
    training = bool(imp.attr("is_test", 1) == 0) if imp.opset < 7 else False
    if imp.has_input(2):
        training = bool(np.asarray(imp.const(2, "Dropout's training_mode")).reshape(-1)[0])
    ratio = imp.attr("ratio", 0.5)
    if imp.has_input(1):
        ratio = float(np.asarray(imp.const(1, "Dropout's ratio")).reshape(-1)[0])
    if training and ratio != 0.0:
        raise imp.unsupported(f"Dropout in training mode (random, ratio {ratio})")
    x = imp.value(node.input[0])
    if len(node.output) < 2 or not node.output[1]:
        return x
    return [x, np.ones(imp.shape(x), dtype=bool)]


@onnx_op("Shape")
def _shape(imp: OnnxImport, node):
    shape = imp.shape(node.input[0])
    start, end = imp.attr("start", 0), imp.attr("end", None)
    return np.array(shape[slice(start, end)], dtype=np.int64)


@onnx_op("Size")
def _size(imp: OnnxImport, node):
    return np.array(int(np.prod(imp.shape(node.input[0]))), dtype=np.int64)


_UNARY = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Exp": "exp",
    "Log": "log",
    "Sqrt": "sqrt",
    "Neg": "neg",
    "Abs": "abs",
    "Reciprocal": "reciprocal",
    "Erf": "erf",
    "Sin": "sin",
    "Cos": "cos",
    "Not": "logical_not",
    "com.microsoft.Gelu": "gelu",
}


@onnx_op(*_UNARY)
def _unary(imp: OnnxImport, node):
    return imp.ew(_UNARY[op_key(node)], [node.input[0]], imp.out_dtype())


@onnx_op("IsNaN")
def _isnan(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    return imp.ew("ne", [x, x], "i1")  # NaN is the one value unequal to itself


@onnx_op("Gelu")
def _gelu(imp: OnnxImport, node):
    kind = "gelu_tanh" if imp.attr("approximate", "none") == "tanh" else "gelu"
    return imp.ew(kind, [node.input[0]], imp.out_dtype())


_BINARY = {
    "Add": "add",
    "Sub": "sub",
    "Mul": "mul",
    "Div": "div",
    "Pow": "pow",
    "Equal": "eq",
    "Less": "lt",
    "LessOrEqual": "le",
    "Greater": "gt",
    "GreaterOrEqual": "ge",
    "And": "logical_and",
    "Or": "logical_or",
}


_PREDICATES = frozenset({"eq", "lt", "le", "gt", "ge", "logical_and", "logical_or"})


@onnx_op(*_BINARY)
def _binary(imp: OnnxImport, node):
    kind = _BINARY[node.op_type]
    dtype = "i1" if kind in _PREDICATES else imp.out_dtype()
    return imp.ew(kind, node.input[:2], dtype)


@onnx_op("Max", "Min", "Sum", "Mean")
def _variadic(imp: OnnxImport, node):
    kind = {"Max": "maximum", "Min": "minimum"}.get(node.op_type, "add")
    names = [n for n in node.input if n]
    y: str | SSAValue = names[0]
    for n in names[1:]:
        y = imp.ew(kind, [y, n], imp.out_dtype())
    if node.op_type == "Mean" and len(names) > 1:
        y = imp.ew("div", [y, imp.scalar(len(names), imp.out_dtype())], imp.out_dtype())
    return y if isinstance(y, SSAValue) else imp.value(y)


@onnx_op("Where")
def _where(imp: OnnxImport, node):
    return imp.ew("where", node.input[:3], imp.out_dtype())


@onnx_op("Clip")
def _clip(imp: OnnxImport, node):
    """max(min(x, hi), lo) elementwise; bounds from attributes (opset < 11) or inputs,
    known at import time or computed at run time."""
    dtype = imp.out_dtype()
    bounds = [imp.attr("min"), imp.attr("max")]
    for k in (1, 2):
        if imp.has_input(k):
            name = node.input[k]
            bounds[k - 1] = imp.consts[name] if name in imp.consts else imp.value(name)
    y: str | SSAValue = node.input[0]
    for kind, bound in zip(("maximum", "minimum"), bounds, strict=True):
        if bound is None:
            continue
        if not isinstance(bound, SSAValue):
            bound = imp.scalar(np.asarray(bound).item(), dtype)
        y = imp.ew(kind, [y, bound], dtype)
    return y if isinstance(y, SSAValue) else imp.value(y)


_T = onnx.TensorProto
#: ONNX types narrower than what coec computes them in -> the ``round_<type>`` a cast to
#: one applies (floats are stored in one dtype, 4- and 2-bit integers in 8 bits)
_ROUNDING = {
    _T.FLOAT16: "f16",
    _T.BFLOAT16: "bf16",
    _T.FLOAT8E4M3FN: "f8e4m3fn",
    _T.FLOAT8E4M3FNUZ: "f8e4m3fnuz",
    _T.FLOAT8E5M2: "f8e5m2",
    _T.FLOAT8E5M2FNUZ: "f8e5m2fnuz",
    _T.FLOAT4E2M1: "f4e2m1",
    _T.INT4: "i4",
    _T.UINT4: "u4",
    _T.INT2: "i2",
    _T.UINT2: "u2",
}
#: the 8-bit floats whose cast saturates by default (``saturate=1``): clipped to the finite
#: range first (onnx's reference: ``np.clip(x, min, max).astype(type)``)
_SATURATING = {
    _T.FLOAT8E4M3FN: 448.0,
    _T.FLOAT8E4M3FNUZ: 240.0,
    _T.FLOAT8E5M2: 57344.0,
    _T.FLOAT8E5M2FNUZ: 57344.0,
}


@onnx_op("Cast", "CastLike")
def _cast(imp: OnnxImport, node):
    """Convert to the target dtype. To a type narrower than coec computes in (fp16, bf16,
    the 8- and 4-bit floats, the 4- and 2-bit integers) the values are rounded to it:
    floats after the conversion (all floats share one storage dtype), integers before
    it (in the source's type, as onnx's reference converts)."""
    x, want = imp.value(node.input[0]), imp.out_dtype()
    target, source = imp.elem_type(node.output[0]), imp.elem_type(node.input[0])
    rounding = _ROUNDING.get(target) if source != target else None
    y = x
    if rounding and rounding[0] in "iu":
        y = imp.emit(df.ElementwiseOp(f"round_{rounding}", [y], imp.like(y)))
    if imp.dtype_of(y) != want:
        y = imp.emit(df.ElementwiseOp("cast", [y], imp.like(y, dtype=want)))
    if rounding and rounding[0] not in "iu":
        top = _SATURATING.get(target)
        if top is not None and imp.attr("saturate", 1):
            y = imp.ew("minimum", [y, imp.scalar(top, want)])
            y = imp.ew("maximum", [y, imp.scalar(-top, want)])
        y = imp.emit(df.ElementwiseOp(f"round_{rounding}", [y], imp.like(y)))
    return y


# -- matmuls -------------------------------------------------------------------------------
@onnx_op("MatMul")
def _matmul(imp: OnnxImport, node):
    a, b = imp.value(node.input[0]), imp.value(node.input[1])
    sa, sb = imp.shape(a), imp.shape(b)
    if len(sa) == 1:  # ONNX follows numpy.matmul: a 1-d operand gains, then loses, a dim
        a = imp.reshape(a, (1, sa[0]), f"{node.output[0]}_a")
    if len(sb) == 1:
        b = imp.reshape(b, (sb[0], 1), f"{node.output[0]}_b")
    sa2, sb2 = imp.shape(a), imp.shape(b)
    if sa2[-1] != sb2[-2]:
        raise VerifyError(f"{imp.op_label()}: cannot multiply {sa} by {sb}")
    out = df.broadcast_shapes(sa2[:-2], sb2[:-2]) + (sa2[-2], sb2[-1])
    y = imp.emit(df.MatmulOp(a, b, False, imp.like(a, out)))
    final = out[:-2] + (() if len(sa) == 1 else out[-2:-1]) + (() if len(sb) == 1 else out[-1:])
    return imp.reshape(y, final)


@onnx_op("Gemm")
def _gemm(imp: OnnxImport, node):
    a, b = imp.value(node.input[0]), imp.value(node.input[1])
    trans_b = bool(imp.attr("transB", 0))
    if imp.attr("transA", 0):
        a = imp.permute(a, [1, 0], f"{node.output[0]}_at")
    sb = imp.shape(b)
    out = (imp.shape(a)[0], sb[0] if trans_b else sb[1])
    y = imp.emit(df.MatmulOp(a, b, trans_b, imp.like(a, out)))
    alpha, beta = float(imp.attr("alpha", 1.0)), float(imp.attr("beta", 1.0))
    if alpha != 1.0:
        y = imp.ew("mul", [y, imp.scalar(alpha, imp.dtype_of(y))])
    if not imp.has_input(2) or beta == 0.0:
        return y
    c: str | SSAValue = node.input[2]
    if beta != 1.0:
        if c in imp.consts:
            c = imp.constant(imp.consts[c] * np.asarray(beta, imp.consts[c].dtype), f"{c}_beta")
        else:
            c = imp.ew("mul", [c, imp.scalar(beta, imp.dtype_of(y))])
    return imp.ew("add", [y, c])


# -- reductions and composites --------------------------------------------------------------
_REDUCE = {
    "ReduceMean": "mean",
    "ReduceSum": "sum",
    "ReduceMax": "max",
    "ReduceMin": "min",
    "ReduceProd": "prod",
}


@onnx_op(*_REDUCE)
def _reduce(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    rank = len(imp.shape(x))
    axes = imp.const_ints(1, "axes", "reduction axes")
    if not axes:
        if imp.attr("noop_with_empty_axes", 0):
            return x
        axes = list(range(rank))
    axes = sorted({imp.axis(a, rank) for a in axes})
    keep = bool(imp.attr("keepdims", 1))
    shape = imp.shape(x)
    out = [1 if i in axes else d for i, d in enumerate(shape) if keep or i not in axes]
    return imp.emit(df.ReduceOp(_REDUCE[node.op_type], x, axes, keep, imp.like(x, out)))


@onnx_op("Softmax", "LogSoftmax")
def _softmax(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    shape = imp.shape(x)
    log = node.op_type == "LogSoftmax"
    axis = imp.axis(imp.attr("axis", -1 if imp.opset >= 13 else 1), len(shape))
    if imp.opset >= 13 or axis == len(shape) - 1:
        return imp.emit(df.SoftmaxOp(x, axis, log, imp.like(x)))
    # before opset 13 the input is coerced to 2-d at axis and normalised over the rest
    flat = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
    x2 = imp.reshape(x, flat, f"{node.output[0]}_2d")
    y = imp.emit(df.SoftmaxOp(x2, 1, log, imp.like(x2)), f"{node.output[0]}_2d")
    return imp.reshape(y, shape)


def _no_stats(imp: OnnxImport, node) -> None:
    if any(node.output[1:]):
        raise imp.unsupported("the mean / inverse-std-dev outputs")


@onnx_op("LayerNormalization")
def _layer_norm(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    shape = imp.shape(x)
    rank = len(shape)
    ndims = rank - imp.axis(imp.attr("axis", -1), rank)
    w = imp.value(node.input[1]) if imp.has_input(1) else None
    b = imp.value(node.input[2]) if imp.has_input(2) else None
    eps = float(imp.attr("epsilon", 1e-5))
    y = imp.emit(df.LayerNormOp(x, w, b, ndims, eps, imp.like(x)))
    if not any(node.output[1:]):
        return y
    # the statistics ONNX also returns: mean and 1/sqrt(var + eps) over the normalised dims
    axes = list(range(rank - ndims, rank))
    kept = [1 if i in axes else d for i, d in enumerate(shape)]
    out = node.output[0]
    mean = imp.emit(df.ReduceOp("mean", x, axes, True, imp.like(x, kept)), f"{out}_mean")
    centred = imp.ew("sub", [x, mean])
    var = imp.emit(
        df.ReduceOp("mean", imp.ew("mul", [centred, centred]), axes, True, imp.like(x, kept)),
        f"{out}_var",
    )
    inv_std = imp.ew("rsqrt", [imp.ew("add", [var, imp.scalar(eps, imp.dtype_of(var))])])
    return [y, mean, inv_std]


@onnx_op("RMSNormalization", "SimplifiedLayerNormalization")
@onnx_op("com.microsoft.SimplifiedLayerNormalization")
def _rms_norm(imp: OnnxImport, node):
    _no_stats(imp, node)
    x = imp.value(node.input[0])
    rank = len(imp.shape(x))
    ndims = rank - imp.axis(imp.attr("axis", -1), rank)
    w = imp.value(node.input[1]) if imp.has_input(1) else None
    eps = float(imp.attr("epsilon", 1e-5))
    return imp.emit(df.RMSNormOp(x, w, ndims, eps, imp.like(x)))


# -- movement --------------------------------------------------------------------------------
@onnx_op("Reshape")
def _reshape(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    src = imp.shape(x)
    spec = [int(d) for d in imp.const(1, "a shape")]
    allow_zero = bool(imp.attr("allowzero", 0))
    shape = [src[i] if d == 0 and not allow_zero else d for i, d in enumerate(spec)]
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1]))
        shape[shape.index(-1)] = int(np.prod(src)) // max(known, 1)
    return imp.reshape(x, shape)


@onnx_op("Flatten")
def _flatten(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    shape = imp.shape(x)
    axis = imp.attr("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    return imp.reshape(x, (int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))))


@onnx_op("Squeeze")
def _squeeze(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    shape = imp.shape(x)
    axes = imp.const_ints(1, "axes", "squeeze axes")
    drop = (
        {imp.axis(a, len(shape)) for a in axes}
        if axes
        else {i for i, d in enumerate(shape) if d == 1}
    )
    return imp.reshape(x, [d for i, d in enumerate(shape) if i not in drop])


@onnx_op("Unsqueeze")
def _unsqueeze(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    shape = list(imp.shape(x))
    axes = imp.const_ints(1, "axes", "unsqueeze axes") or []
    rank = len(shape) + len(axes)
    for a in sorted(imp.axis(a, rank) for a in axes):
        shape.insert(a, 1)
    return imp.reshape(x, shape)


@onnx_op("Transpose")
def _transpose(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    rank = len(imp.shape(x))
    perm = imp.attr("perm")
    perm = list(reversed(range(rank))) if perm is None else [imp.axis(p, rank) for p in perm]
    return imp.permute(x, perm)


@onnx_op("Expand")
def _expand(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    shape = [int(d) for d in imp.const(1, "a shape")]
    out = df.broadcast_shapes(imp.shape(x), shape)
    if out == imp.shape(x):
        return x
    return imp.emit(df.BroadcastOp(x, imp.like(x, out)))


@onnx_op("Slice")
def _slice_op(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    rank = len(imp.shape(x))
    if imp.opset < 10:
        starts, ends = imp.attr("starts"), imp.attr("ends")
        axes, steps = imp.attr("axes"), None
    else:
        starts = imp.const_ints(1, "", "slice starts")
        ends = imp.const_ints(2, "", "slice ends")
        axes = imp.const_ints(3, "", "slice axes")
        steps = imp.const_ints(4, "", "slice steps")
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for k, (axis, start, end, step) in enumerate(zip(axes, starts, ends, steps, strict=True)):
        axis = imp.axis(axis, rank)
        hint = node.output[0] if k == len(axes) - 1 else f"{node.output[0]}_{k}"
        if step > 0:
            x = slice_value(imp, x, axis, start, end, step, hint)
            continue
        # a reversed slice picks its elements by index (df.slice steps forward)
        dim = imp.shape(x)[axis]
        picks = np.arange(*slice(start, end, step).indices(dim), dtype=np.int64)
        index = imp.constant(picks, f"{node.output[0]}_index{k}")
        out = list(imp.shape(x))
        out[axis] = len(picks)
        x = imp.emit(df.GatherOp(x, index, axis, imp.like(x, out)), hint)
    return x


@onnx_op("Split")
def _split(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    shape = imp.shape(x)
    axis = imp.axis(imp.attr("axis", 0), len(shape))
    sizes = imp.const_ints(1, "split", "split sizes")
    n_out = len(node.output)
    if sizes is None:
        n = imp.attr("num_outputs", n_out)
        chunk = -(-shape[axis] // n)
        sizes = [min(chunk, shape[axis] - i * chunk) for i in range(n)]
    outs, start = [], 0
    for i, size in enumerate(sizes):
        outs.append(slice_value(imp, x, axis, start, start + size, 1, node.output[i] or None))
        start += size
    return outs


@onnx_op("Concat")
def _concat(imp: OnnxImport, node):
    names = [n for n in node.input if n and int(np.prod(imp.shape(n))) > 0]
    xs = [imp.value(n) for n in names]
    if len(xs) == 1:
        return xs[0]
    out = list(imp.shape(xs[0]))
    axis = imp.axis(imp.attr("axis"), len(out))
    out[axis] = sum(imp.shape(v)[axis] for v in xs)
    return imp.emit(df.ConcatOp(xs, axis, imp.like(xs[0], out)))


@onnx_op("Gather")
def _gather(imp: OnnxImport, node):
    table = imp.value(node.input[0])
    shape = imp.shape(table)
    axis = imp.axis(imp.attr("axis", 0), len(shape))
    name = node.input[1]
    if name not in imp.consts:
        idx = imp.value(name)
    else:
        picks = imp.consts[name].astype(np.int64)
        picks = np.where(picks < 0, picks + shape[axis], picks)
        if picks.ndim == 0:  # x[..., i, ...]: a slice that drops the axis
            i = int(picks)
            s = slice_value(imp, table, axis, i, i + 1, 1, f"{node.output[0]}_slice")
            return imp.reshape(s, shape[:axis] + shape[axis + 1 :])
        idx = imp.constant(picks, f"{node.output[0]}_index")
    out = shape[:axis] + imp.shape(idx) + shape[axis + 1 :]
    return imp.emit(df.GatherOp(table, idx, axis, imp.like(table, out)))


@onnx_op("Trilu")
def _trilu(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    k = int(imp.const(1, "Trilu's k")) if imp.has_input(1) else 0
    rows, cols = imp.shape(x)[-2:]
    ones = np.ones((rows, cols), dtype=bool)
    keep = np.triu(ones, k) if imp.attr("upper", 1) else np.tril(ones, k)
    mask = imp.constant(keep, f"{node.output[0]}_mask")
    return imp.ew("where", [mask, x, imp.scalar(0.0, imp.dtype_of(x))], imp.dtype_of(x))
