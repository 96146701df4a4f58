"""Lowerings of the spatial ops of CNNs and vision/audio encoders, in the df op families.

The df dialect has no convolution: a convolution is im2col, built of movement ops, then
one matmul — the shape a dataflow compiler streams anyway:

- pad the spatial dims (concat with broadcast zeros);
- one strided slice of the input per kernel offset, stacked so each output position
  holds its receptive field: ``(N, positions, C·k₁·k₂…)``;
- a matmul with the weight viewed as ``(O, C·k₁·k₂…)``, like ``linear``; groups are
  separate matmuls on their channel slices, concatenated.

A convolution whose kernel equals its stride and has no padding (ViT's and Whisper's
patch embeddings) needs no slices: one reshape and a permute give the patches. Pooling is
the same receptive-field view reduced by max or mean; eval-mode batch norm is a scale
and shift per channel. Cumulative sums are a matmul with a triangular ones matrix.
"""

from __future__ import annotations

import itertools
import math
import operator

import torch
from xdsl.ir import SSAValue

from coec.frontend.lower import Lowering, _norm_dim, lowers
from coec.ir import ops as df


def _ints(v, n: int) -> list[int]:
    v = list(v) if isinstance(v, list | tuple) else [v]
    return v * n if len(v) == 1 else v


def _pad(lw: Lowering, x: SSAValue, pads: list[int], value: float, name: str) -> SSAValue:
    """``x`` with ``pads[i]`` elements of ``value`` before and after spatial dim ``i``."""
    for i, p in enumerate(pads):
        if p == 0:
            continue
        shape = list(df.tensor_type(x).shape_tuple)
        axis = 2 + i
        edge = lw.emit(
            df.BroadcastOp(lw.scalar(value, x), lw.like(x, [*shape[:axis], p, *shape[axis + 1 :]])),
            f"{name}_pad{i}",
        )
        shape[axis] += 2 * p
        x = lw.emit(df.ConcatOp([edge, x, edge], axis, lw.like(x, shape)), f"{name}_padded{i}")
    return x


def _windows(
    lw: Lowering,
    x: SSAValue,
    kernel: list[int],
    stride: list[int],
    dilation: list[int],
    out: list[int],
    name: str,
) -> SSAValue:
    """``(N, K·C, *out)``: for each kernel offset (row-major), the strided slice of ``x``
    it sees, stacked along channels. Slices of a shared offset prefix are made once, so a
    k×k window costs k + k² slices and one concat."""
    n, c = df.tensor_type(x).shape_tuple[:2]
    offsets = list(itertools.product(*(range(k) for k in kernel)))
    made: dict[tuple[int, ...], SSAValue] = {(): x}
    for offset in offsets:
        for i in range(len(offset)):
            prefix = offset[: i + 1]
            if prefix in made:
                continue
            v = made[offset[:i]]
            start = offset[i] * dilation[i]
            end = start + stride[i] * (out[i] - 1) + 1
            shape = list(df.tensor_type(v).shape_tuple)
            if (start, end, stride[i]) != (0, shape[2 + i], 1):
                shape[2 + i] = out[i]
                v = lw.emit(
                    df.SliceOp(v, 2 + i, start, end, stride[i], lw.like(v, shape)),
                    f"{name}_at{'_'.join(map(str, prefix))}",
                )
            made[prefix] = v
    parts = [made[o] for o in offsets]
    if len(parts) == 1:
        return parts[0]
    return lw.emit(df.ConcatOp(parts, 1, lw.like(x, [n, len(offsets) * c, *out])), name)


def _patches(lw: Lowering, x: SSAValue, kernel: list[int], name: str) -> SSAValue:
    """``(N, positions, C·K)`` for a kernel equal to its stride: pure reshape + permute."""
    n, c, *spatial = df.tensor_type(x).shape_tuple
    out = [s // k for s, k in zip(spatial, kernel, strict=True)]
    split = [n, c, *itertools.chain.from_iterable(zip(out, kernel, strict=True))]
    v = lw.emit(df.ReshapeOp(x, lw.like(x, split)), f"{name}_split")
    r = len(spatial)
    perm = [0, *(2 + 2 * i for i in range(r)), 1, *(3 + 2 * i for i in range(r))]
    v = lw.emit(df.PermuteOp(v, perm, lw.like(v, [split[p] for p in perm])), f"{name}_perm")
    return lw.emit(
        df.ReshapeOp(v, lw.like(v, [n, math.prod(out), c * math.prod(kernel)])), f"{name}_cols"
    )


@lowers("convolution")
def _convolution(lw: Lowering, node, a):
    if a["transposed"]:
        raise lw.unsupported("transposed convolution (aten.convolution, transposed=True)")
    x, w = lw.value(a["input"]), lw.value(a["weight"])
    n, c, *spatial = df.tensor_type(x).shape_tuple
    o, c_per_group, *kernel = df.tensor_type(w).shape_tuple
    r = len(spatial)
    stride, padding = _ints(a["stride"], r), _ints(a["padding"], r)
    dilation, groups = _ints(a["dilation"], r), int(a["groups"])
    out_shape = lw.type_of(node).shape_tuple
    out = list(out_shape[2:])
    positions, k = math.prod(out), math.prod(kernel)
    name = node.name

    if groups == c == o and groups > 1:  # depthwise: a weighted sum over each window
        return _depthwise(lw, node, a, x, w, kernel, stride, padding, dilation, out)
    plain = padding == [0] * r and dilation == [1] * r and stride == kernel
    patches = plain and all(s % kk == 0 for s, kk in zip(spatial, kernel, strict=True))
    x = x if patches else _pad(lw, x, padding, 0.0, name)
    o_per_group = o // groups
    ys = []
    for g in range(groups):
        xg, wg = x, w
        if groups > 1:
            xg = _channels(lw, x, g * c_per_group, (g + 1) * c_per_group, f"{name}_g{g}")
            wg = _channels(lw, w, g * o_per_group, (g + 1) * o_per_group, f"{name}_w{g}", 0)
        span = k * c_per_group
        if patches:  # channel-major columns; the weight (O, C, *k) is already that order
            cols = _patches(lw, xg, kernel, f"{name}_g{g}")
            wk = lw.emit(df.ReshapeOp(wg, lw.like(wg, [o_per_group, span])), f"{name}_wk{g}")
        else:  # offset-major columns; the weight is permuted to (O, *k, C) to match
            win = _windows(lw, xg, kernel, stride, dilation, out, f"{name}_im2col{g}")
            perm = [0, *range(2, 2 + r), 1]
            win = lw.emit(df.PermuteOp(win, perm, lw.like(win, [n, *out, span])), f"{name}_t{g}")
            cols = lw.emit(df.ReshapeOp(win, lw.like(win, [n, positions, span])), f"{name}_c{g}")
            wt = lw.emit(
                df.PermuteOp(wg, perm, lw.like(wg, [o_per_group, *kernel, c_per_group])),
                f"{name}_wt{g}",
            )
            wk = lw.emit(df.ReshapeOp(wt, lw.like(wt, [o_per_group, span])), f"{name}_wk{g}")
        out_g = lw.like(cols, [n, positions, o_per_group])
        ys.append(lw.emit(df.MatmulOp(cols, wk, True, out_g), f"{name}_mm{g}"))
    y = (
        ys[0]
        if groups == 1
        else lw.emit(df.ConcatOp(ys, 2, lw.like(ys[0], [n, positions, o])), f"{name}_cat")
    )
    if a["bias"] is not None:
        y = lw.ew("add", y, lw.value(a["bias"]))
    y = lw.emit(df.PermuteOp(y, [0, 2, 1], lw.like(y, [n, o, positions])), f"{name}_nc")
    return lw.emit(df.ReshapeOp(y, lw.type_of(node)))


def _depthwise(lw: Lowering, node, a, x, w, kernel, stride, padding, dilation, out):
    """One filter per channel (ConvNeXt, MobileNet): windows × weight, summed over the
    window — elementwise and reduce instead of a matmul per channel."""
    n, c = df.tensor_type(x).shape_tuple[:2]
    r, k = len(out), math.prod(kernel)
    x = _pad(lw, x, padding, 0.0, node.name)
    win = _windows(lw, x, kernel, stride, dilation, out, f"{node.name}_win")
    win = lw.emit(df.ReshapeOp(win, lw.like(win, [n, k, c, *out])), f"{node.name}_byk")
    # the weight (C, 1, *kernel) as (K, C, 1, ...): offset-major like the windows
    taps = lw.emit(df.ReshapeOp(w, lw.like(w, [c, k])), f"{node.name}_w")
    taps = lw.emit(df.PermuteOp(taps, [1, 0], lw.like(taps, [k, c])), f"{node.name}_wt")
    taps = lw.emit(df.ReshapeOp(taps, lw.like(taps, [k, c, *([1] * r)])), f"{node.name}_taps")
    y = lw.ew("mul", win, taps)
    y = lw.emit(df.ReduceOp("sum", y, [1], False, lw.like(y, [n, c, *out])))
    if a["bias"] is not None:
        bias = lw.value(a["bias"])
        y = lw.ew("add", y, lw.emit(df.ReshapeOp(bias, lw.like(bias, [c, *([1] * r)]))))
    return y


def _channels(lw: Lowering, x: SSAValue, lo: int, hi: int, name: str, axis: int = 1):
    shape = list(df.tensor_type(x).shape_tuple)
    shape[axis] = hi - lo
    return lw.emit(df.SliceOp(x, axis, lo, hi, 1, lw.like(x, shape)), name)


def _pool(lw: Lowering, node, a, kind: str):
    x = lw.value(a["self"])
    n, c, *spatial = df.tensor_type(x).shape_tuple
    r = len(spatial)
    kernel = _ints(a["kernel_size"], r)
    stride = _ints(a.get("stride") or kernel, r)
    padding = _ints(a.get("padding", 0), r)
    dilation = _ints(a.get("dilation", 1), r)
    out_val = node.meta["val"]
    out = list((out_val[0] if isinstance(out_val, tuple | list) else out_val).shape[2:])
    if kind == "mean" and any(padding) and not a.get("count_include_pad", True):
        raise lw.unsupported("avg_pool with count_include_pad=False and padding")
    if kind == "mean" and a.get("divisor_override"):
        raise lw.unsupported("avg_pool with divisor_override")
    # the lowest finite bf16: a schedule is strict JSON (no -Infinity); every window holds
    # at least one real element, so the max is unchanged
    fill = float(torch.finfo(torch.bfloat16).min) if kind == "max" else 0.0
    x = _pad(lw, x, padding, fill, node.name)
    need = [
        (o - 1) * s + (k - 1) * d + 1
        for o, s, k, d in zip(out, stride, kernel, dilation, strict=True)
    ]
    have = list(df.tensor_type(x).shape_tuple[2:])
    if any(h < nd for h, nd in zip(have, need, strict=True)):  # ceil_mode: windows past the edge
        x = _pad_after(
            lw, x, [max(0, nd - h) for h, nd in zip(have, need, strict=True)], fill, node.name
        )
    win = _windows(lw, x, kernel, stride, dilation, out, f"{node.name}_win")
    k = math.prod(kernel)
    if k == 1:
        return win
    win = lw.emit(df.ReshapeOp(win, lw.like(win, [n, k, c, *out])), f"{node.name}_byk")
    return lw.emit(df.ReduceOp(kind, win, [1], False, lw.like(win, [n, c, *out])))


def _pad_after(lw: Lowering, x: SSAValue, pads: list[int], value: float, name: str) -> SSAValue:
    for i, p in enumerate(pads):
        if p:
            shape = list(df.tensor_type(x).shape_tuple)
            edge_shape = [*shape[: 2 + i], p, *shape[3 + i :]]
            edge = lw.emit(
                df.BroadcastOp(lw.scalar(value, x), lw.like(x, edge_shape)), f"{name}_tail{i}"
            )
            shape[2 + i] += p
            x = lw.emit(df.ConcatOp([x, edge], 2 + i, lw.like(x, shape)), f"{name}_tailed{i}")
    return x


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
    spatial = df.tensor_type(x).shape_tuple[2:]
    out = list(lw.type_of(node).shape_tuple[2:])
    if any(s % o for s, o in zip(spatial, out, strict=True)):
        raise lw.unsupported(f"adaptive_avg_pool from {list(spatial)} to {out} (uneven windows)")
    k = [s // o for s, o in zip(spatial, out, strict=True)]
    if out == [1] * len(out):
        axes = list(range(2, 2 + len(out)))
        return lw.emit(df.ReduceOp("mean", x, axes, True, lw.type_of(node)))
    return _pool(lw, node, {"self": node.args[0], "kernel_size": k, "stride": k}, "mean")


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
    per_channel = [c] + [1] * (rank - 2)
    mean, var = _known(lw, a["running_mean"]), _known(lw, a["running_var"])
    weight = _known(lw, a["weight"]) if a["weight"] is not None else torch.ones(c)
    bias = _known(lw, a["bias"]) if a["bias"] is not None else torch.zeros(c)
    if any(t is None for t in (mean, var, weight, bias)):
        raise lw.unsupported("batch norm whose statistics are computed at run time")
    with torch.no_grad():
        scale = weight.float() * torch.rsqrt(var.float() + a["eps"])
        shift = bias.float() - mean.float() * scale
    scale = lw._constant(f"{node.name}_scale", scale.reshape(per_channel))
    shift = lw._constant(f"{node.name}_shift", shift.reshape(per_channel))
    return [lw.ew("add", lw.ew("mul", x, scale), shift), None, None]


@lowers("cumsum")
def _cumsum(lw: Lowering, node, a):
    """``cumsum(x, dim)`` as ``x @ U`` along ``dim``, ``U`` the upper-triangular ones
    (``n × n`` constant for a dim of ``n``). Integer inputs (RoBERTa's position ids count
    a mask) go through the float matmul, exact below 2**24, and come back as integers."""
    x = lw.value(a["self"])
    shape = list(df.tensor_type(x).shape_tuple)
    rank, axis, out = len(shape), _norm_dim(a["dim"], len(shape)), lw.type_of(node)
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
    pads crop."""
    x = lw.value(a["self"])
    pads, value = list(a["pad"]), float(a.get("value") or 0.0)
    rank = len(df.tensor_type(x).shape_tuple)
    for i in range(len(pads) // 2):
        axis = rank - 1 - i
        before, after = pads[2 * i], pads[2 * i + 1]
        shape = list(df.tensor_type(x).shape_tuple)
        lo, hi = max(0, -before), shape[axis] - max(0, -after)
        if (lo, hi) != (0, shape[axis]):
            shape[axis] = hi - lo
            x = lw.emit(df.SliceOp(x, axis, lo, hi, 1, lw.like(x, shape)), f"{node.name}_crop{i}")
        parts = []
        for size in (before, None, after):
            if size is None:
                parts.append(x)
            elif size > 0:
                edge = [*shape[:axis], size, *shape[axis + 1 :]]
                fill = lw.scalar(value, x)
                parts.append(
                    lw.emit(df.BroadcastOp(fill, lw.like(x, edge)), f"{node.name}_edge{i}")
                )
        if len(parts) > 1:
            shape[axis] += max(0, before) + max(0, after)
            x = lw.emit(df.ConcatOp(parts, axis, lw.like(x, shape)), f"{node.name}_pad{i}")
    return x


@lowers("gather")
def _torch_gather(lw: Lowering, node, a):
    """``torch.gather(x, dim, index)`` as one take on the flattened ``x``: the flat index is
    ``index × stride(dim)`` plus a constant for the other coordinates."""
    x, index = lw.value(a["self"]), lw.value(a["index"])
    shape = list(df.tensor_type(x).shape_tuple)
    ishape = list(df.tensor_type(index).shape_tuple)
    rank = len(shape)
    axis = _norm_dim(a["dim"], rank)
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
