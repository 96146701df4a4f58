"""ATen lowerings for CNNs, vision/audio encoders and encoder position ids: convolution and
pooling (built by ``coec.frontend.spatial``), eval-mode batch norm folded to a scale and
shift, padding, cumulative sums as a triangular matmul, and ``torch.gather``."""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING

import torch

from coec.frontend import spatial
from coec.frontend.common import norm_dim
from coec.frontend.registry import lowers
from coec.ir import ops as df

if TYPE_CHECKING:
    from coec.frontend.lower import Lowering


def _ints(v, n: int) -> list[int]:
    v = list(v) if isinstance(v, list | tuple) else [v]
    return v * n if len(v) == 1 else v


@lowers("convolution")
def _convolution(lw: Lowering, node, a):
    if a["transposed"]:
        raise lw.unsupported("transposed convolution (aten.convolution, transposed=True)")
    x, w = lw.value(a["input"]), lw.value(a["weight"])
    r = len(df.tensor_type(x).shape_tuple) - 2
    padding = _ints(a["padding"], r)
    return spatial.conv(
        lw,
        x,
        w,
        lw.value(a["bias"]) if a["bias"] is not None else None,
        stride=_ints(a["stride"], r),
        before=padding,
        after=padding,
        dilation=_ints(a["dilation"], r),
        groups=int(a["groups"]),
        out=list(lw.type_of(node).shape_tuple[2:]),
        name=node.name,
    )


def _pool(lw: Lowering, node, a, kind: str):
    x = lw.value(a["self"])
    shape = df.tensor_type(x).shape_tuple
    r = len(shape) - 2
    kernel = _ints(a["kernel_size"], r)
    stride = _ints(a.get("stride") or kernel, r)
    padding = _ints(a.get("padding", 0), r)
    dilation = _ints(a.get("dilation", 1), r)
    out_val = node.meta["val"]
    out = list((out_val[0] if isinstance(out_val, tuple | list) else out_val).shape[2:])
    if kind == "mean":
        if any(padding) and not a.get("count_include_pad", True):
            raise lw.unsupported("avg_pool with count_include_pad=False and padding")
        if a.get("divisor_override"):
            raise lw.unsupported("avg_pool with divisor_override")
        if spatial.past_the_edge(shape[2:], kernel, stride, padding, padding, dilation, out):
            raise lw.unsupported("avg_pool in ceil mode with windows past the edge")
    return spatial.pool(
        lw,
        x,
        kind,
        kernel=kernel,
        stride=stride,
        before=padding,
        after=padding,
        dilation=dilation,
        out=out,
        name=node.name,
    )


@lowers("max_pool1d", "max_pool2d", "max_pool3d")
def _max_pool(lw: Lowering, node, a):
    return _pool(lw, node, a, "max")


@lowers("max_pool2d_with_indices", "max_pool3d_with_indices")
def _max_pool_with_indices(lw: Lowering, node, a):
    if any(u.target is not operator.getitem or u.args[1] != 0 for u in node.users):
        raise lw.unsupported("use of max_pool's indices")
    return [_pool(lw, node, a, "max"), None]


@lowers("avg_pool1d", "avg_pool2d", "avg_pool3d")
def _avg_pool(lw: Lowering, node, a):
    return _pool(lw, node, a, "mean")


@lowers("adaptive_avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool3d")
def _adaptive_avg_pool(lw: Lowering, node, a):
    x = lw.value(a["self"])
    size = df.tensor_type(x).shape_tuple[2:]
    out = list(lw.type_of(node).shape_tuple[2:])
    if any(s % o for s, o in zip(size, out, strict=True)):
        raise lw.unsupported(f"adaptive_avg_pool from {list(size)} to {out} (uneven windows)")
    if out == [1] * len(out):
        axes = list(range(2, 2 + len(out)))
        return lw.emit(df.ReduceOp("mean", x, axes, True, lw.type_of(node)))
    k = [s // o for s, o in zip(size, out, strict=True)]
    zeros = [0] * len(out)
    return spatial.pool(
        lw,
        x,
        "mean",
        kernel=k,
        stride=k,
        before=zeros,
        after=zeros,
        dilation=[1] * len(out),
        out=out,
        name=node.name,
    )


def _known(lw: Lowering, arg) -> torch.Tensor | None:
    """The data of a parameter or folded constant (None for values computed at run time)."""
    if arg in lw.params:
        return lw.weights[lw.params[arg]]
    if arg in lw.consts and isinstance(lw.consts[arg], torch.Tensor):
        return lw.consts[arg]
    return None


@lowers("_native_batch_norm_legit_no_training")
def _batch_norm(lw: Lowering, node, a):
    """Eval-mode batch norm, ``x · scale + shift`` per channel. With its statistics and
    affine parameters known at compile time (always, for a model in eval mode), scale and
    shift are folded into two constants, as inference compilers do."""
    if any(u.target is not operator.getitem or u.args[1] != 0 for u in node.users):
        raise lw.unsupported("use of batch norm's saved statistics")
    x = lw.value(a["input"])
    rank = len(df.tensor_type(x).shape_tuple)
    c = df.tensor_type(x).shape_tuple[1]
    mean, var = _known(lw, a["running_mean"]), _known(lw, a["running_var"])
    weight = _known(lw, a["weight"]) if a["weight"] is not None else torch.ones(c)
    bias = _known(lw, a["bias"]) if a["bias"] is not None else torch.zeros(c)
    if any(t is None for t in (mean, var, weight, bias)):
        raise lw.unsupported("batch norm whose statistics are computed at run time")
    scale, shift = spatial.fold_batch_norm(weight, bias, mean, var, a["eps"], rank)
    scale = lw._constant(f"{node.name}_scale", scale)
    shift = lw._constant(f"{node.name}_shift", shift)
    return [lw.ew("add", lw.ew("mul", x, scale), shift), None, None]


@lowers("cumsum")
def _cumsum(lw: Lowering, node, a):
    """``cumsum(x, dim)`` as ``x @ U`` along ``dim``, ``U`` the upper-triangular ones
    (``n × n`` constant for a dim of ``n``). Integer inputs (RoBERTa's position ids count
    a mask) go through the float matmul, exact below 2**24, and come back as integers."""
    x = lw.value(a["self"])
    shape = list(df.tensor_type(x).shape_tuple)
    rank, axis, out = len(shape), norm_dim(a["dim"], len(shape)), lw.type_of(node)
    n = shape[axis]
    perm = [d for d in range(rank) if d != axis] + [axis]
    v = x
    if perm != list(range(rank)):
        v = lw.emit(
            df.PermuteOp(v, perm, lw.like(v, [shape[d] for d in perm])), f"{node.name}_last"
        )
    moved = list(df.tensor_type(v).shape_tuple)
    if not df.tensor_type(v).dtype.startswith(("bf", "f")):
        v = lw.emit(df.ElementwiseOp("cast", [v], lw.like(v, dtype=lw.dtype)), f"{node.name}_f")
    rows = [math.prod(moved[:-1]), n]
    v = lw.emit(df.ReshapeOp(v, lw.like(v, rows)), f"{node.name}_rows")
    triangle = lw._constant(f"{node.name}_triangle", torch.triu(torch.ones(n, n)))
    s = lw.emit(df.MatmulOp(v, triangle, False, lw.like(v, rows)), f"{node.name}_scan")
    s = lw.emit(df.ReshapeOp(s, lw.like(s, moved)), f"{node.name}_moved")
    if perm != list(range(rank)):
        inverse = [perm.index(d) for d in range(rank)]
        s = lw.emit(df.PermuteOp(s, inverse, lw.like(s, shape)), f"{node.name}_back")
    if df.tensor_type(s).dtype != out.dtype:
        s = lw.emit(df.ElementwiseOp("cast", [s], out))
    return s


@lowers("constant_pad_nd")
def _constant_pad(lw: Lowering, node, a):
    """``F.pad(x, pads, value=v)``: pads run last dim first, (before, after) pairs; negative
    pads crop (a slice), positive ones pad (``spatial.pad`` on every dim)."""
    x = lw.value(a["self"])
    pads = list(a["pad"])
    rank = len(df.tensor_type(x).shape_tuple)
    before, after = [0] * rank, [0] * rank
    for i in range(len(pads) // 2):
        before[rank - 1 - i], after[rank - 1 - i] = pads[2 * i], pads[2 * i + 1]
    for axis in range(rank):
        shape = list(df.tensor_type(x).shape_tuple)
        lo, hi = max(0, -before[axis]), shape[axis] - max(0, -after[axis])
        if (lo, hi) != (0, shape[axis]):
            shape[axis] = hi - lo
            x = lw.emit(df.SliceOp(x, axis, lo, hi, 1, lw.like(x, shape)), f"{node.name}_crop")
    value = float(a.get("value") or 0.0)
    grow = [max(0, p) for p in before], [max(0, p) for p in after]
    return spatial.pad(lw, x, *grow, value, node.name, first=0)


@lowers("gather")
def _torch_gather(lw: Lowering, node, a):
    """``torch.gather(x, dim, index)`` as one take on the flattened ``x``: the flat index is
    ``index × stride(dim)`` plus a constant for the other coordinates."""
    x, index = lw.value(a["self"]), lw.value(a["index"])
    shape = list(df.tensor_type(x).shape_tuple)
    ishape = list(df.tensor_type(index).shape_tuple)
    rank = len(shape)
    axis = norm_dim(a["dim"], rank)
    strides = [math.prod(shape[d + 1 :]) for d in range(rank)]
    grid = torch.meshgrid(*(torch.arange(n) for n in ishape), indexing="ij")
    offsets = sum(g * strides[d] for d, g in enumerate(grid) if d != axis)
    table = lw.emit(df.ReshapeOp(x, lw.like(x, [math.prod(shape)])), f"{node.name}_flat")
    i = index  # torch.gather rejects negative indices, so none need wrapping
    if strides[axis] != 1:
        i = lw.ew("mul", i, lw.scalar(strides[axis], i))
    if rank > 1:
        i = lw.ew("add", i, lw._constant(f"{node.name}_offsets", offsets.to(torch.int64)))
    return lw.emit(df.GatherOp(table, i, 0, lw.type_of(node)))
