"""ONNX handlers for CNN ops: Conv, pooling, BatchNormalization (inference) and Pad, built
by ``coec.frontend.spatial`` as the ATen lowering builds them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from coec.frontend import spatial
from coec.frontend.registry import onnx_op
from coec.ir import ops as df

if TYPE_CHECKING:
    from coec.frontend.onnx_import import OnnxImport


def _window_args(imp: OnnxImport, x, kernel: list[int], ceil: bool = False) -> dict:
    """Strides, dilations, pads (``auto_pad`` resolved) and output size of a windowed op."""
    size = list(imp.shape(x)[2:])
    r = len(size)
    stride = [int(v) for v in imp.attr("strides", [1] * r)]
    dilation = [int(v) for v in imp.attr("dilations", [1] * r)]
    pads = [int(v) for v in imp.attr("pads", [0] * (2 * r))]
    before, after = pads[:r], pads[r:]
    auto = imp.attr("auto_pad", "NOTSET")
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-s // st) for s, st in zip(size, stride, strict=True)]
        total = [
            max(0, (o - 1) * st + sp - s)
            for o, st, sp, s in zip(out, stride, span, size, strict=True)
        ]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        before, after = (small, big) if auto == "SAME_UPPER" else (big, small)
    else:
        if auto == "VALID":
            before, after = [0] * r, [0] * r
        rounding = math.ceil if ceil else math.floor
        out = [
            int(rounding((s + lo + hi - sp) / st)) + 1
            for s, lo, hi, sp, st in zip(size, before, after, span, stride, strict=True)
        ]
        if ceil:  # a last window starting past the input and its leading pad is dropped
            out = [
                o - 1 if (o - 1) * st >= s + lo else o
                for o, st, s, lo in zip(out, stride, size, before, strict=True)
            ]
    return dict(stride=stride, before=before, after=after, dilation=dilation, out=out)


def _window_counts(size, kernel, args: dict, include_pad: bool) -> np.ndarray:
    """How many elements each window of an average pool divides by, shape ``out``: those
    in the input (``include_pad`` False) or in the padded input; never the overhang of a
    ceil-mode window past the padded edge."""
    counts = np.ones((), dtype=np.float64)
    for i, (s, k) in enumerate(zip(size, kernel, strict=True)):
        st, d, lo, hi, o = (args[f][i] for f in ("stride", "dilation", "before", "after", "out"))
        first, last = (0, s) if not include_pad else (-lo, s + hi)
        taps = np.arange(o)[:, None] * st - lo + np.arange(k)[None, :] * d
        per_dim = ((taps >= first) & (taps < last)).sum(axis=1)
        counts = np.multiply.outer(counts, per_dim)
    return counts


@onnx_op("Conv")
def _conv(imp: OnnxImport, node):
    x, w = imp.value(node.input[0]), imp.value(node.input[1])
    kernel = [int(k) for k in imp.attr("kernel_shape", imp.shape(w)[2:])]
    bias = imp.value(node.input[2]) if imp.has_input(2) else None
    args = _window_args(imp, x, kernel)
    groups = int(imp.attr("group", 1))
    return spatial.conv(imp, x, w, bias, groups=groups, name=node.output[0], **args)


def _pool(imp: OnnxImport, node, kind: str):
    x = imp.value(node.input[0])
    kernel = [int(k) for k in imp.attr("kernel_shape")]
    args = _window_args(imp, x, kernel, ceil=bool(imp.attr("ceil_mode", 0)))
    y = spatial.pool(imp, x, kind, kernel=kernel, name=node.output[0], **args)
    if kind == "max" and len(node.output) > 1 and node.output[1]:
        return [y, _argmax(imp, x, y, kernel, args, node.output[1])]
    if kind == "max":
        return y
    # the pool divides by the whole window; ONNX by the elements it counts
    counts = _window_counts(
        imp.shape(x)[2:], kernel, args, include_pad=bool(imp.attr("count_include_pad", 0))
    )
    ratio = math.prod(kernel) / np.maximum(counts, 1)
    if np.all(ratio == 1.0):
        return y
    scale = imp.constant(ratio.astype(np.float32), f"{node.output[0]}_count")
    return imp.emit(df.ElementwiseOp("mul", [y, scale], imp.like(y)), node.output[0])


def _argmax(imp: OnnxImport, x, y, kernel: list[int], args: dict, name: str):
    """MaxPool's Indices: where in ``x`` (flattened, ``storage_order`` 0 row-major, 1
    column-major over the spatial dims) each window's first maximum is.

    Built of df ops: the first tap k* equal to the max (a ``where`` over tap numbers, then
    a min), then the index each (tap, output position) stands for, picked by k* (a known
    table, masked and summed)."""
    n, c, *size = imp.shape(x)
    out, k = args["out"], math.prod(kernel)
    win = spatial.pool_windows(imp, x, spatial.MAX_FILL, kernel=kernel, name=name, **args)
    win = imp.reshape(win, [n, k, c, *out], f"{name}_byk")
    hit = imp.ew("eq", [win, imp.reshape(y, [n, 1, c, *out])], "i1")
    ones = [1] * len(out)
    taps = imp.constant(np.arange(k, dtype=np.int64).reshape(1, k, 1, *ones), f"{name}_taps")
    first = imp.ew("where", [hit, taps, imp.scalar(k, "i64")], "i64")
    first = imp.emit(df.ReduceOp("min", first, [1], True, imp.like(first, [n, 1, c, *out])))
    # the spatial index of tap t at output position o, per dim: o·stride - pad + t·dilation
    coords = np.meshgrid(*(range(kk) for kk in kernel), *(range(o) for o in out), indexing="ij")
    r = len(kernel)
    dims = [
        coords[r + i] * args["stride"][i] - args["before"][i] + coords[i] * args["dilation"][i]
        for i in range(r)
    ]
    strides = [math.prod(size[i + 1 :]) for i in range(r)]
    if imp.attr("storage_order", 0):
        strides = [math.prod(size[:i]) for i in range(r)]
    flat = sum(d * s for d, s in zip(dims, strides, strict=True)).reshape(1, k, 1, *out)
    table = imp.constant(flat.astype(np.int64), f"{name}_table")
    picked = imp.ew("where", [imp.ew("eq", [taps, first], "i1"), table, imp.scalar(0, "i64")])
    index = imp.emit(df.ReduceOp("sum", picked, [1], False, imp.like(picked, [n, c, *out])))
    base = np.arange(n * c, dtype=np.int64).reshape(n, c, *ones) * math.prod(size)
    return imp.ew("add", [index, imp.constant(base, f"{name}_base")], "i64")


@onnx_op("MaxPool")
def _max_pool(imp: OnnxImport, node):
    return _pool(imp, node, "max")


@onnx_op("AveragePool")
def _avg_pool(imp: OnnxImport, node):
    return _pool(imp, node, "mean")


@onnx_op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(imp: OnnxImport, node):
    x = imp.value(node.input[0])
    shape = imp.shape(x)
    axes = list(range(2, len(shape)))
    kind = "mean" if node.op_type == "GlobalAveragePool" else "max"
    return imp.emit(df.ReduceOp(kind, x, axes, True, imp.like(x, [*shape[:2], *[1] * len(axes)])))


@onnx_op("BatchNormalization")
def _batch_norm(imp: OnnxImport, node):
    """Inference batch norm folded into a per-channel scale and shift at import time;
    training mode (opset 14+) normalises by the batch's statistics."""
    if imp.attr("training_mode", 0) and imp.opset >= 14:
        return _batch_norm_training(imp, node)
    if imp.attr("training_mode", 0) or any(node.output[1:]):
        raise imp.unsupported("BatchNormalization in training mode before opset 14")
    x = imp.value(node.input[0])
    rank = len(imp.shape(x))
    weight, bias, mean, var = (
        torch.from_numpy(np.asarray(imp.const(k, "batch-norm statistics"), dtype=np.float32))
        for k in range(1, 5)
    )
    eps = float(imp.attr("epsilon", 1e-5))
    scale, shift = spatial.fold_batch_norm(weight, bias, mean, var, eps, rank)
    out = node.output[0]
    scale_v = imp.constant(scale.numpy(), f"{out}_scale")
    shift_v = imp.constant(shift.numpy(), f"{out}_shift")
    y = imp.emit(df.ElementwiseOp("mul", [x, scale_v], imp.like(x)), f"{out}_scaled")
    return imp.emit(df.ElementwiseOp("add", [y, shift_v], imp.like(x)))


def _batch_norm_training(imp: OnnxImport, node):
    """y by the batch's mean and (biased) variance per channel; the running mean and
    variance updated with ``momentum``: ``running * momentum + batch * (1 - momentum)``."""
    x = imp.value(node.input[0])
    shape = imp.shape(x)
    channels, rank = shape[1], len(shape)
    axes = [a for a in range(rank) if a != 1]
    kept = [channels if a == 1 else 1 for a in range(rank)]
    eps, momentum = float(imp.attr("epsilon", 1e-5)), float(imp.attr("momentum", 0.9))
    out = node.output[0]
    mean = imp.emit(df.ReduceOp("mean", x, axes, True, imp.like(x, kept)), f"{out}_mean")
    centred = imp.ew("sub", [x, mean])
    square = imp.ew("mul", [centred, centred])
    var = imp.emit(df.ReduceOp("mean", square, axes, True, imp.like(x, kept)), f"{out}_var")
    dtype = imp.dtype_of(x)
    inv_std = imp.ew("rsqrt", [imp.ew("add", [var, imp.scalar(eps, dtype)])])
    scale, bias = (imp.reshape(imp.value(node.input[k]), kept) for k in (1, 2))
    y = imp.ew("add", [imp.ew("mul", [imp.ew("mul", [centred, inv_std]), scale]), bias])
    results = [y]
    for k, batch in ((3, mean), (4, var)):
        running = imp.ew("mul", [node.input[k], imp.scalar(momentum, dtype)])
        update = imp.ew("mul", [imp.reshape(batch, (channels,)), imp.scalar(1 - momentum, dtype)])
        results.append(imp.ew("add", [running, update]))
    return results


@onnx_op("Pad")
def _pad(imp: OnnxImport, node):
    mode = imp.attr("mode", "constant")
    if mode not in ("constant", "edge", "reflect", "wrap"):
        raise imp.unsupported(f"Pad mode {mode!r}")
    x = imp.value(node.input[0])
    rank = len(imp.shape(x))
    pads = imp.const_ints(1, "pads", "pads")
    value = 0.0
    if imp.has_input(2):
        value = float(np.asarray(imp.const(2, "the pad value")).reshape(-1)[0])
    axes = list(range(rank))
    if imp.has_input(3):
        axes = [imp.axis(int(a), rank) for a in np.asarray(imp.const(3, "axes")).reshape(-1)]
    before, after = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        before[a], after[a] = pads[i], pads[len(axes) + i]
    if min(before + after) < 0:
        raise imp.unsupported("Pad with negative pads")
    if mode == "constant":
        return spatial.pad(imp, x, before, after, value, node.output[0], first=0)
    # edge, reflect, wrap: each padded dim gathers its elements by a known index
    for axis, (lo, hi) in enumerate(zip(before, after, strict=True)):
        if lo == 0 and hi == 0:
            continue
        n = imp.shape(x)[axis]
        if n == 0 or (mode == "reflect" and n == 1 and lo + hi > 0):
            raise imp.unsupported(f"Pad mode {mode!r} of a dim of size {n}")
        picks = np.pad(np.arange(n, dtype=np.int64), (lo, hi), mode=mode)
        index = imp.constant(picks, f"{node.output[0]}_index{axis}")
        out = list(imp.shape(x))
        out[axis] = len(picks)
        x = imp.emit(df.GatherOp(x, index, axis, imp.like(x, out)), node.output[0])
    return x
