"""ATen lowerings, one handler per op family, registered into ``registry.LOWERINGS``.

Each handler takes the lowering state, the FX node and its bound arguments, and returns
the df value(s) it emitted (``None`` for ops that produce nothing).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from xdsl.ir import SSAValue

from coec.frontend.common import norm_dim, slice_value
from coec.frontend.registry import lowers
from coec.ir import ops as df

if TYPE_CHECKING:
    from coec.frontend.lower import Lowering


# -- lowerings, one per ATen op family ----------------------------------------------------
@lowers("clone", "contiguous", "alias", "detach", "lift_fresh_copy", "dropout", "_to_copy")
@lowers("to", "type_as")
def _identity(lw: Lowering, node, a):
    x = lw.value(node.args[0])
    want = lw.type_of(node)
    if df.tensor_type(x).dtype == want.dtype:
        return x
    return lw.emit(df.ElementwiseOp("cast", [x], want))


@lowers("copy")
def _copy(lw: Lowering, node, a):
    """``self.copy_(src)`` made functional: ``src`` broadcast and cast to ``self``'s type."""
    src = lw.value(a["src"])
    want = lw.type_of(node)
    if df.tensor_type(src).dtype != want.dtype:
        src = lw.emit(df.ElementwiseOp("cast", [src], lw.like(src, dtype=want.dtype)))
    if df.tensor_type(src).shape_tuple != want.shape_tuple:
        src = lw.emit(df.BroadcastOp(src, want))
    return src


_UNARY = {
    "relu": "relu",
    "silu": "silu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "exp": "exp",
    "log": "log",
    "sqrt": "sqrt",
    "rsqrt": "rsqrt",
    "neg": "neg",
    "sin": "sin",
    "cos": "cos",
    "abs": "abs",
    "reciprocal": "reciprocal",
    "erf": "erf",
    "logical_not": "logical_not",
    "bitwise_not": "logical_not",
}


@lowers(*_UNARY)
def _unary(lw: Lowering, node, a):
    return lw.ew(_UNARY[node.target.overloadpacket.__name__], node.args[0], type_=lw.type_of(node))


@lowers("gelu")
def _gelu(lw: Lowering, node, a):
    kind = "gelu_tanh" if a["approximate"] == "tanh" else "gelu"
    return lw.ew(kind, a["self"], type_=lw.type_of(node))


_BINARY = {
    "mul": "mul",
    "div": "div",
    "pow": "pow",
    "maximum": "maximum",
    "minimum": "minimum",
    "eq": "eq",
    "ne": "ne",
    "lt": "lt",
    "le": "le",
    "gt": "gt",
    "ge": "ge",
    "logical_and": "logical_and",
    "logical_or": "logical_or",
    "bitwise_and": "logical_and",
    "bitwise_or": "logical_or",
}


@lowers(*_BINARY)
def _binary(lw: Lowering, node, a):
    name = node.target.overloadpacket.__name__
    if name == "div" and a.get("rounding_mode") is not None:
        raise lw.unsupported(f"aten.div with rounding_mode={a['rounding_mode']!r}")
    if name.startswith("bitwise") and node.meta["val"].dtype != torch.bool:
        raise lw.unsupported(f"aten.{name} on integers")
    x, y = node.args[0], node.args[1]
    return lw.ew(_BINARY[name], x, y, type_=lw.type_of(node))


@lowers("add", "sub", "rsub")
def _add_sub(lw: Lowering, node, a):
    name = node.target.overloadpacket.__name__
    x, y, alpha = a["self"], a["other"], a.get("alpha", 1)
    if alpha != 1:
        y = lw.ew("mul", y, alpha) if isinstance(y, torch.fx.Node) else y * alpha
    kind = "add" if name == "add" else "sub"
    if name == "rsub":
        x, y = y, x
    return lw.ew(kind, x, y, type_=lw.type_of(node))


@lowers("where")
def _where(lw: Lowering, node, a):
    return lw.ew("where", a["condition"], a["self"], a["other"], type_=lw.type_of(node))


@lowers("masked_fill")
def _masked_fill(lw: Lowering, node, a):
    return lw.ew("where", a["mask"], a["value"], a["self"], type_=lw.type_of(node))


@lowers("clamp", "clamp_min", "clamp_max")
def _clamp(lw: Lowering, node, a):
    x = lw.value(a["self"])
    for bound, kind in ((a.get("min"), "maximum"), (a.get("max"), "minimum")):
        if bound is None:
            continue
        # a number or a tensor bound (clamp.Tensor), broadcast against x
        b = lw.value(bound) if isinstance(bound, torch.fx.Node) else lw.scalar(bound, x)
        x = lw.ew(kind, x, b, type_=lw.type_of(node))
    return x


@lowers("hardtanh")
def _hardtanh(lw: Lowering, node, a):
    """``clamp(x, min_val, max_val)`` (ReLU6 is hardtanh(0, 6))."""
    x = lw.value(a["self"])
    x = lw.ew("maximum", x, lw.scalar(a["min_val"], x))
    return lw.ew("minimum", x, lw.scalar(a["max_val"], x))


@lowers("leaky_relu")
def _leaky_relu(lw: Lowering, node, a):
    x = lw.value(a["self"])
    negative = lw.ew("mul", x, lw.scalar(a["negative_slope"], x))
    return (
        lw.ew("maximum", x, negative) if a["negative_slope"] <= 1 else lw.ew("minimum", x, negative)
    )


@lowers("hardsigmoid", "hardswish")
def _hard_gates(lw: Lowering, node, a):
    """``relu6(x + 3) / 6``, times ``x`` for hardswish (MobileNetV3)."""
    x = lw.value(a["self"])
    gate = lw.ew("add", x, lw.scalar(3.0, x))
    gate = lw.ew("minimum", lw.ew("maximum", gate, lw.scalar(0.0, x)), lw.scalar(6.0, x))
    gate = lw.ew("div", gate, lw.scalar(6.0, x))
    return lw.ew("mul", x, gate) if node.target.overloadpacket.__name__ == "hardswish" else gate


# -- matmuls -------------------------------------------------------------------------------
@lowers("linear")
def _linear(lw: Lowering, node, a):
    out = lw.type_of(node)
    x = lw.value(a["input"])
    t = df.tensor_type(x)
    if len(t.shape_tuple) == 1:  # a vector: one row, then back to a vector
        row = lw.emit(df.ReshapeOp(x, lw.like(x, (1, *t.shape_tuple))), f"{node.name}_row")
        y = lw.emit(
            df.MatmulOp(row, lw.value(a["weight"]), True, lw.like(row, (1, *out.shape_tuple)))
        )
        y = lw.emit(df.ReshapeOp(y, out))
    else:
        y = lw.emit(df.MatmulOp(x, lw.value(a["weight"]), True, out))
    if a["bias"] is None:
        return y
    return lw.ew("add", y, lw.value(a["bias"]), type_=out)


@lowers("mm", "bmm", "matmul")
def _matmul(lw: Lowering, node, a):
    x, w = lw.value(node.args[0]), lw.value(node.args[1])
    if len(df.tensor_type(x).shape_tuple) < 2 or len(df.tensor_type(w).shape_tuple) < 2:
        raise lw.unsupported("matmul of a 1-d tensor")
    return lw.emit(df.MatmulOp(x, w, False, lw.type_of(node)))


@lowers("addmm")
def _addmm(lw: Lowering, node, a):
    out = lw.type_of(node)
    y: SSAValue = lw.emit(df.MatmulOp(lw.value(a["mat1"]), lw.value(a["mat2"]), False, out))
    if a["alpha"] != 1:
        y = lw.ew("mul", y, lw.scalar(a["alpha"], y), type_=out)
    bias = lw.value(a["self"])
    if a["beta"] != 1:
        bias = lw.ew("mul", bias, lw.scalar(a["beta"], bias))
    return lw.ew("add", y, bias, type_=out)


# -- reductions and composites ---------------------------------------------------------------
_REDUCE = {"sum": "sum", "mean": "mean", "amax": "max", "amin": "min", "prod": "prod"}


@lowers(*_REDUCE)
def _reduce(lw: Lowering, node, a):
    x = lw.value(a["self"])
    rank = len(df.tensor_type(x).shape_tuple)
    dims = a.get("dim")
    if dims is None or dims == []:
        dims = list(range(rank))
    elif isinstance(dims, int):
        dims = [dims]
    axes = sorted(norm_dim(d, rank) for d in dims)
    keep = bool(a.get("keepdim", False))
    kind = _REDUCE[node.target.overloadpacket.__name__]
    return lw.emit(df.ReduceOp(kind, x, axes, keep, lw.type_of(node)))


@lowers("softmax", "_softmax", "log_softmax", "_log_softmax")
def _softmax(lw: Lowering, node, a):
    x = lw.value(a["self"])
    axis = norm_dim(a["dim"], len(df.tensor_type(x).shape_tuple))
    log = "log" in node.target.overloadpacket.__name__
    return lw.emit(df.SoftmaxOp(x, axis, log, lw.type_of(node)))


@lowers("layer_norm")
def _layer_norm(lw: Lowering, node, a):
    w = lw.value(a["weight"]) if a["weight"] is not None else None
    b = lw.value(a["bias"]) if a["bias"] is not None else None
    nd = len(a["normalized_shape"])
    return lw.emit(df.LayerNormOp(lw.value(a["input"]), w, b, nd, a["eps"], lw.type_of(node)))


@lowers("rms_norm")
def _rms_norm(lw: Lowering, node, a):
    w = lw.value(a["weight"]) if a["weight"] is not None else None
    eps = a["eps"] if a["eps"] is not None else torch.finfo(node.meta["val"].dtype).eps
    nd = len(a["normalized_shape"])
    return lw.emit(df.RMSNormOp(lw.value(a["input"]), w, nd, eps, lw.type_of(node)))


@lowers("scaled_dot_product_attention")
def _sdpa(lw: Lowering, node, a):
    if a["dropout_p"]:
        raise lw.unsupported("attention dropout (compile in eval mode)")
    q, k, v = (lw.value(a[n]) for n in ("query", "key", "value"))
    e = df.tensor_type(q).shape_tuple[-1]
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(e)
    mask = lw.value(a["attn_mask"]) if a["attn_mask"] is not None else None
    return lw.emit(df.AttentionOp(q, k, v, mask, scale, bool(a["is_causal"]), lw.type_of(node)))


# -- movement ---------------------------------------------------------------------------------
@lowers("view", "_unsafe_view", "reshape", "unsqueeze", "squeeze", "flatten", "unflatten")
@lowers("view_as")
def _reshape(lw: Lowering, node, a):
    x, out = lw.value(node.args[0]), lw.type_of(node)
    if df.tensor_type(x).shape_tuple == out.shape_tuple:
        return x
    return lw.emit(df.ReshapeOp(x, out))


@lowers("permute", "transpose", "t")
def _permute(lw: Lowering, node, a):
    x = lw.value(node.args[0])
    rank = len(df.tensor_type(x).shape_tuple)
    name = node.target.overloadpacket.__name__
    if name == "permute":
        perm = [norm_dim(d, rank) for d in a["dims"]]
    elif name == "transpose":
        perm = list(range(rank))
        i, j = norm_dim(a["dim0"], rank), norm_dim(a["dim1"], rank)
        perm[i], perm[j] = perm[j], perm[i]
    else:
        perm = list(reversed(range(rank)))
    if perm == list(range(rank)):
        return x
    return lw.emit(df.PermuteOp(x, perm, lw.type_of(node)))


@lowers("expand", "expand_copy", "broadcast_to")
def _expand(lw: Lowering, node, a):
    x, out = lw.value(node.args[0]), lw.type_of(node)
    if df.tensor_type(x).shape_tuple == out.shape_tuple:
        return x
    return lw.emit(df.BroadcastOp(x, out))


@lowers("slice")
def _slice_op(lw: Lowering, node, a):
    x = lw.value(a["self"])
    axis = norm_dim(a["dim"], len(df.tensor_type(x).shape_tuple))
    return slice_value(lw, x, axis, a["start"], a["end"], a["step"])


@lowers("slice_scatter")
def _slice_scatter(lw: Lowering, node, a):
    """``x[..., start:end] = src`` as a new tensor: a ``df.update`` (a KV-cache append)."""
    x, src = lw.value(a["self"]), lw.value(a["src"])
    shape = df.tensor_type(x).shape_tuple
    axis = norm_dim(a.get("dim", 0), len(shape))
    start, end, step = slice(a.get("start"), a.get("end"), a.get("step", 1)).indices(shape[axis])
    if step != 1:
        raise lw.unsupported(f"slice_scatter with step {step} (only contiguous slices)")
    if df.tensor_type(src).shape_tuple[axis] != end - start:
        raise lw.unsupported(f"slice_scatter of {end - start} rows from a source of another size")
    want = df.tensor_type(x).dtype
    if df.tensor_type(src).dtype != want:
        src = lw.emit(df.ElementwiseOp("cast", [src], lw.like(src, dtype=want)))
    return lw.emit(df.UpdateOp(x, src, axis, start))


def _update_at(lw: Lowering, x, src, axis: int, index):
    """``x`` with ``src`` written at ``index`` along ``axis``, where ``index`` is a
    compile-time tensor of consecutive positions (a static KV cache's ``cache_position``):
    a ``df.update``, as a slice_scatter is."""
    positions = lw.consts.get(index) if isinstance(index, torch.fx.Node) else None
    if positions is None or positions.device.type == "meta":
        raise lw.unsupported("a write at positions known only at run time")
    positions = [int(p) for p in positions.flatten().tolist()]
    start = positions[0] if positions else 0
    if positions != list(range(start, start + len(positions))):
        raise lw.unsupported(f"a write at positions {positions[:4]}... (only consecutive)")
    x, src = lw.value(x), lw.value(src)
    slot = list(df.tensor_type(x).shape_tuple)
    slot[axis] = len(positions)
    if list(df.tensor_type(src).shape_tuple) != slot:
        raise lw.unsupported(f"a write of {df.tensor_type(src).shape_tuple} into rows {slot}")
    want = df.tensor_type(x).dtype
    if df.tensor_type(src).dtype != want:
        src = lw.emit(df.ElementwiseOp("cast", [src], lw.like(src, dtype=want)))
    return lw.emit(df.UpdateOp(x, src, axis, start))


@lowers("index_copy")
def _index_copy(lw: Lowering, node, a):
    """``x.index_copy(dim, index, src)``: rows written at consecutive known positions."""
    x = a["self"]
    axis = norm_dim(a["dim"], len(x.meta["val"].shape))
    return _update_at(lw, x, a["source"], axis, a["index"])


@lowers("index_put")
def _index_put(lw: Lowering, node, a):
    """``x[:, ..., index] = values`` with one index tensor (the others ``None``), known at
    compile time and consecutive: what index_copy decomposes into."""
    indices = list(a["indices"])
    given = [i for i, t in enumerate(indices) if t is not None]
    if a.get("accumulate") or len(given) != 1:
        raise lw.unsupported("index_put other than one index of consecutive known positions")
    return _update_at(lw, a["self"], a["values"], given[0], indices[given[0]])


@lowers("topk")
def _topk(lw: Lowering, node, a):
    """``torch.topk``: its values and its indices, each a ``df.topk`` of the input."""
    x = lw.value(a["self"])
    shape = df.tensor_type(x).shape_tuple
    axis = norm_dim(a.get("dim", -1), len(shape))
    k, largest = a["k"], a.get("largest", True)
    values_t, indices_t = (lw.type_of_value(v) for v in node.meta["val"])
    values = lw.emit(df.TopKOp(x, k, axis, largest, False, values_t), f"{node.name}_values")
    indices = lw.emit(df.TopKOp(x, k, axis, largest, True, indices_t), f"{node.name}_indices")
    return [values, indices]


@lowers("select")
def _select(lw: Lowering, node, a):
    x = lw.value(a["self"])
    shape = df.tensor_type(x).shape_tuple
    axis = norm_dim(a["dim"], len(shape))
    idx = a["index"] % shape[axis]
    s = slice_value(lw, x, axis, idx, idx + 1, 1, f"{node.name}_slice")
    return lw.emit(df.ReshapeOp(s, lw.type_of(node)))


@lowers("split_with_sizes", "split")
def _split(lw: Lowering, node, a):
    x = lw.value(a["self"])
    shape = df.tensor_type(x).shape_tuple
    axis = norm_dim(a["dim"], len(shape))
    sizes = a.get("split_sizes") or a.get("split_size")
    if isinstance(sizes, int):
        sizes = [sizes] * (shape[axis] // sizes) + (
            [shape[axis] % sizes] if shape[axis] % sizes else []
        )
    outs, start = [], 0
    for i, n in enumerate(sizes):
        outs.append(slice_value(lw, x, axis, start, start + n, 1, f"{node.name}_{i}"))
        start += n
    return outs


@lowers("cat", "concat")
def _cat(lw: Lowering, node, a):
    tensors = [t for t in a["tensors"] if t.meta["val"].numel() > 0]
    out = lw.type_of(node)
    xs = [lw.value(t) for t in tensors]
    if len(xs) == 1:
        return xs[0]
    return lw.emit(df.ConcatOp(xs, norm_dim(a["dim"], len(out.shape_tuple)), out))


@lowers("embedding")
def _embedding(lw: Lowering, node, a):
    return lw.emit(df.GatherOp(lw.value(a["weight"]), lw.value(a["indices"]), 0, lw.type_of(node)))


@lowers("index_select")
def _index_select(lw: Lowering, node, a):
    x = lw.value(a["self"])
    axis = norm_dim(a["dim"], len(df.tensor_type(x).shape_tuple))
    return lw.emit(df.GatherOp(x, lw.value(a["index"]), axis, lw.type_of(node)))


@lowers("index")
def _index(lw: Lowering, node, a):
    idx = a["indices"]
    present = [i for i, t in enumerate(idx) if t is not None]
    if len(present) == 1:
        axis = present[0]
        return lw.emit(
            df.GatherOp(lw.value(a["self"]), lw.value(idx[axis]), axis, lw.type_of(node))
        )
    return _multi_index(lw, node, lw.value(a["self"]), idx, present)


def _multi_index(lw: Lowering, node, x: SSAValue, idx: list, present: list[int]) -> SSAValue:
    """``x[i0, i1, ...]`` with several index tensors as one gather on a flattened axis.

    The indexed dims are brought together (moved to the front when they are not
    adjacent, as torch then puts the broadcast index dims first), merged into one
    axis, and the index tensors combined into row-major flat indices. Constant
    indices (masks built from ``arange``, as HF models do) fold at compile time.
    """
    shape = list(df.tensor_type(x).shape_tuple)
    rank = len(shape)
    if any(
        isinstance(idx[i], torch.fx.Node) and idx[i].meta["val"].dtype == torch.bool
        for i in present
    ):
        raise lw.unsupported("boolean-mask indexing (aten.index) with several index tensors")
    nodes = [idx[d] for d in present]
    adjacent = present == list(range(present[0], present[-1] + 1))
    if not adjacent:
        perm = present + [d for d in range(rank) if d not in present]
        x = lw.emit(
            df.PermuteOp(x, perm, lw.like(x, [shape[d] for d in perm])), f"{node.name}_perm"
        )
        shape, present = [shape[d] for d in perm], list(range(len(present)))
    first, sizes = present[0], [shape[d] for d in present]
    merged = shape[:first] + [math.prod(sizes)] + shape[present[-1] + 1 :]
    table = lw.emit(df.ReshapeOp(x, lw.like(x, merged)), f"{node.name}_flat")
    strides = [math.prod(sizes[k + 1 :]) for k in range(len(sizes))]
    if all(n in lw.consts for n in nodes):
        flat = sum(
            (lw.consts[n].to(torch.int64) % size) * stride
            for n, size, stride in zip(nodes, sizes, strides, strict=True)
        )
        index = lw._constant(f"{node.name}_index", flat)
    else:
        index = None
        for n, size, stride in zip(nodes, sizes, strides, strict=True):
            i = lw.value(n)
            t = df.tensor_type(i)
            negative = lw.ew("lt", i, lw.scalar(0, i), type_=lw.like(i, dtype="i1"))
            i = lw.ew("where", negative, lw.ew("add", i, lw.scalar(size, i)), i, type_=t)
            term = lw.ew("mul", i, lw.scalar(stride, i)) if stride != 1 else i
            index = term if index is None else lw.ew("add", index, term)
    return lw.emit(df.GatherOp(table, index, first, lw.type_of(node)))


@lowers("linalg_vector_norm")
def _vector_norm(lw: Lowering, node, a):
    """``‖x‖_p`` over ``dim``: sqrt(sum x²) for p=2 (F.normalize's case), sum|x|, max|x|, or the p-th root."""
    x = lw.value(a["self"])
    rank = len(df.tensor_type(x).shape_tuple)
    dims = a["dim"]
    axes = (
        list(range(rank)) if dims is None or dims == [] else sorted(norm_dim(d, rank) for d in dims)
    )
    keep, out, p = bool(a["keepdim"]), lw.type_of(node), float(a["ord"])
    if p == 0:
        raise lw.unsupported("aten.linalg_vector_norm with ord=0 (a count, not a norm)")
    reduced = lw.like(x, out.shape_tuple)
    if p == 2:
        summed = lw.emit(df.ReduceOp("sum", lw.ew("mul", x, x), axes, keep, reduced))
        return lw.ew("sqrt", summed, type_=out)
    absolute = lw.ew("abs", x)
    if math.isinf(p):
        return lw.emit(df.ReduceOp("max" if p > 0 else "min", absolute, axes, keep, out))
    if p == 1:
        return lw.emit(df.ReduceOp("sum", absolute, axes, keep, out))
    powered = lw.ew("pow", absolute, lw.scalar(p, absolute))
    summed = lw.emit(df.ReduceOp("sum", powered, axes, keep, reduced))
    return lw.ew("pow", summed, lw.scalar(1.0 / p, summed), type_=out)


@lowers("all_reduce")
def _all_reduce(lw: Lowering, node, a):
    return lw.emit(df.AllReduceOp(lw.value(node.args[0]), lw.type_of(node)))


@lowers("all_gather")
def _all_gather(lw: Lowering, node, a):
    out = lw.type_of(node)
    axis = norm_dim(a["dim"], len(out.shape_tuple))
    return lw.emit(df.AllGatherOp(lw.value(a["x"]), axis, out))
