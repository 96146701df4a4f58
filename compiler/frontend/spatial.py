"""Convolution and pooling built of df ops, shared by the ATen and ONNX frontends.

The df dialect has no convolution: a convolution is im2col, built of movement ops, then
one matmul — the shape a dataflow compiler streams anyway:

- pad the spatial dims (concat with broadcast fill);
- one strided slice of the input per kernel offset, stacked along channels, so each
  output position holds its receptive field, then viewed as ``(N, positions, K·C)``;
- a matmul with the weight viewed as ``(O, K·C)``, like ``linear``. Groups are separate
  matmuls on their channel slices, concatenated.

Two shapes take shortcuts. A kernel equal to its stride with no padding (ViT's and
Whisper's patch embeddings) needs no slices: one reshape and a permute give the patches.
A depthwise convolution (one filter per channel) is the windows times the taps, summed.
Pooling reduces the same windows by max or mean.

A builder is the frontend's lowering state: anything with ``emit(op, hint)`` and
``like(value, shape, dtype)``.
"""

from __future__ import annotations

import itertools
import math
from typing import Protocol

import torch
from xdsl.ir import Operation, SSAValue

from coec.ir import ops as df
from coec.ir.types import TensorType

#: what a max pool pads with: the lowest finite bf16, so a schedule stays strict JSON; every
#: window holds at least one real element, so the max is unchanged
MAX_FILL = float(torch.finfo(torch.bfloat16).min)


class Builder(Protocol):
    def emit(self, op: Operation, hint: str | None = None) -> SSAValue: ...
    def like(self, v: SSAValue, shape=None, dtype: str | None = None) -> TensorType: ...


def _shape(v: SSAValue) -> list[int]:
    return list(df.tensor_type(v).shape_tuple)


def pad(
    b: Builder,
    x: SSAValue,
    before: list[int],
    after: list[int],
    value: float,
    name: str,
    first: int = 2,
) -> SSAValue:
    """``x`` with ``before[i]`` / ``after[i]`` elements of ``value`` around dim ``first + i``
    (the spatial dims by default; ``first=0`` pads any dim)."""
    fill = None
    for i, (lo, hi) in enumerate(zip(before, after, strict=True)):
        if lo == 0 and hi == 0:
            continue
        if fill is None:
            fill = b.emit(df.ConstantOp(float(value), df.tensor_type(x).dtype), f"{name}_fill")
        axis, shape = first + i, _shape(x)
        parts = []
        for size in (lo, None, hi):
            if size is None:
                parts.append(x)
            elif size > 0:
                edge = [*shape[:axis], size, *shape[axis + 1 :]]
                parts.append(b.emit(df.BroadcastOp(fill, b.like(x, edge)), f"{name}_edge{i}"))
        shape[axis] += lo + hi
        x = b.emit(df.ConcatOp(parts, axis, b.like(x, shape)), f"{name}_pad{i}")
    return x


def fold_batch_norm(weight, bias, mean, var, eps: float, rank: int) -> tuple:
    """Inference batch norm as ``x · scale + shift``: both per channel, shaped to broadcast
    over an input of ``rank`` dims (torch tensors in, float32 torch tensors out)."""
    with torch.no_grad():
        scale = weight.float() * torch.rsqrt(var.float() + eps)
        shift = bias.float() - mean.float() * scale
    per_channel = (-1,) + (1,) * (rank - 2)
    return scale.reshape(per_channel), shift.reshape(per_channel)


def windows(b: Builder, x, kernel, stride, dilation, out, name: str) -> SSAValue:
    """``(N, K·C, *out)``: for each kernel offset (row-major), the strided slice of ``x``
    it sees, stacked along channels. Slices of a shared offset prefix are made once, so a
    k×k window costs k + k² slices and one concat."""
    n, c = _shape(x)[:2]
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
            shape = _shape(v)
            if (start, end, stride[i]) != (0, shape[2 + i], 1):
                shape[2 + i] = out[i]
                v = b.emit(
                    df.SliceOp(v, 2 + i, start, end, stride[i], b.like(v, shape)),
                    f"{name}_at{'_'.join(map(str, prefix))}",
                )
            made[prefix] = v
    parts = [made[o] for o in offsets]
    if len(parts) == 1:
        return parts[0]
    return b.emit(df.ConcatOp(parts, 1, b.like(x, [n, len(offsets) * c, *out])), name)


def _patches(b: Builder, x: SSAValue, kernel: list[int], name: str) -> SSAValue:
    """``(N, positions, C·K)`` for a kernel equal to its stride: pure reshape + permute."""
    n, c, *spatial = _shape(x)
    out = [s // k for s, k in zip(spatial, kernel, strict=True)]
    split = [n, c, *itertools.chain.from_iterable(zip(out, kernel, strict=True))]
    v = b.emit(df.ReshapeOp(x, b.like(x, split)), f"{name}_split")
    r = len(spatial)
    perm = [0, *(2 + 2 * i for i in range(r)), 1, *(3 + 2 * i for i in range(r))]
    v = b.emit(df.PermuteOp(v, perm, b.like(v, [split[p] for p in perm])), f"{name}_perm")
    return b.emit(
        df.ReshapeOp(v, b.like(v, [n, math.prod(out), c * math.prod(kernel)])), f"{name}_cols"
    )


def _channels(b: Builder, x: SSAValue, lo: int, hi: int, name: str, axis: int = 1):
    shape = _shape(x)
    shape[axis] = hi - lo
    return b.emit(df.SliceOp(x, axis, lo, hi, 1, b.like(x, shape)), name)


def _ew(b: Builder, kind: str, x: SSAValue, y: SSAValue) -> SSAValue:
    shape = df.broadcast_shapes(_shape(x), _shape(y))
    return b.emit(df.ElementwiseOp(kind, [x, y], b.like(x, shape)))


def conv(
    b: Builder,
    x: SSAValue,
    w: SSAValue,
    bias: SSAValue | None,
    *,
    stride: list[int],
    before: list[int],
    after: list[int],
    dilation: list[int],
    groups: int,
    out: list[int],
    name: str,
) -> SSAValue:
    """``(N, O, *out)``: the convolution of ``x`` (N, C, *spatial) with ``w`` (O, C/g, *k)."""
    n, c, *spatial = _shape(x)
    o, c_per_group, *kernel = _shape(w)
    r, k, positions = len(spatial), math.prod(kernel), math.prod(out)
    unpadded = not any(before) and not any(after)
    if groups == c == o and groups > 1:
        y = _depthwise(
            b, pad(b, x, before, after, 0.0, name), w, kernel, stride, dilation, out, name
        )
    else:
        patches = (
            unpadded
            and dilation == [1] * r
            and stride == kernel
            and all(s % kk == 0 for s, kk in zip(spatial, kernel, strict=True))
        )
        x = x if patches else pad(b, x, before, after, 0.0, name)
        o_per_group, span = o // groups, k * c_per_group
        ys = []
        for g in range(groups):
            xg, wg = x, w
            if groups > 1:
                xg = _channels(b, x, g * c_per_group, (g + 1) * c_per_group, f"{name}_g{g}")
                wg = _channels(b, w, g * o_per_group, (g + 1) * o_per_group, f"{name}_w{g}", 0)
            if patches:  # channel-major columns; the weight (O, C, *k) is already that order
                cols = _patches(b, xg, kernel, f"{name}_g{g}")
                wk = b.emit(df.ReshapeOp(wg, b.like(wg, [o_per_group, span])), f"{name}_wk{g}")
            else:  # offset-major columns; the weight is permuted to (O, *k, C) to match
                win = windows(b, xg, kernel, stride, dilation, out, f"{name}_im2col{g}")
                perm = [0, *range(2, 2 + r), 1]
                win = b.emit(df.PermuteOp(win, perm, b.like(win, [n, *out, span])), f"{name}_t{g}")
                cols = b.emit(df.ReshapeOp(win, b.like(win, [n, positions, span])), f"{name}_c{g}")
                wt = b.emit(
                    df.PermuteOp(wg, perm, b.like(wg, [o_per_group, *kernel, c_per_group])),
                    f"{name}_wt{g}",
                )
                wk = b.emit(df.ReshapeOp(wt, b.like(wt, [o_per_group, span])), f"{name}_wk{g}")
            out_g = b.like(cols, [n, positions, o_per_group])
            ys.append(b.emit(df.MatmulOp(cols, wk, True, out_g), f"{name}_mm{g}"))
        y = ys[0]
        if groups > 1:
            y = b.emit(df.ConcatOp(ys, 2, b.like(ys[0], [n, positions, o])), f"{name}_cat")
        y = b.emit(df.PermuteOp(y, [0, 2, 1], b.like(y, [n, o, positions])), f"{name}_nc")
        y = b.emit(df.ReshapeOp(y, b.like(y, [n, o, *out])), f"{name}_out")
    if bias is not None:
        per_channel = b.emit(df.ReshapeOp(bias, b.like(bias, [o, *([1] * r)])), f"{name}_b")
        y = _ew(b, "add", y, per_channel)
    return y


def _depthwise(b: Builder, x, w, kernel, stride, dilation, out, name: str) -> SSAValue:
    """One filter per channel (ConvNeXt, MobileNet): windows × taps, summed over the
    window — elementwise and reduce instead of a matmul per channel."""
    n, c = _shape(x)[:2]
    r, k = len(out), math.prod(kernel)
    win = windows(b, x, kernel, stride, dilation, out, f"{name}_win")
    win = b.emit(df.ReshapeOp(win, b.like(win, [n, k, c, *out])), f"{name}_byk")
    # the weight (C, 1, *kernel) as (K, C, 1, ...): offset-major like the windows
    taps = b.emit(df.ReshapeOp(w, b.like(w, [c, k])), f"{name}_w")
    taps = b.emit(df.PermuteOp(taps, [1, 0], b.like(taps, [k, c])), f"{name}_wt")
    taps = b.emit(df.ReshapeOp(taps, b.like(taps, [k, c, *([1] * r)])), f"{name}_taps")
    y = _ew(b, "mul", win, taps)
    return b.emit(df.ReduceOp("sum", y, [1], False, b.like(y, [n, c, *out])), f"{name}_sum")


def pool(
    b: Builder,
    x: SSAValue,
    kind: str,
    *,
    kernel: list[int],
    stride: list[int],
    before: list[int],
    after: list[int],
    dilation: list[int],
    out: list[int],
    name: str,
) -> SSAValue:
    """``(N, C, *out)``: each window of ``x`` reduced by ``kind`` (``max`` or ``mean``).

    Windows that run past the padded edge (ceil mode) get more padding after; a mean
    divides by the full window, so callers must refuse shapes where that differs."""
    n, c = _shape(x)[:2]
    args = dict(kernel=kernel, stride=stride, before=before, after=after, dilation=dilation)
    win = pool_windows(b, x, MAX_FILL if kind == "max" else 0.0, out=out, name=name, **args)
    k = math.prod(kernel)
    if k == 1:
        return win
    win = b.emit(df.ReshapeOp(win, b.like(win, [n, k, c, *out])), f"{name}_byk")
    return b.emit(df.ReduceOp(kind, win, [1], False, b.like(win, [n, c, *out])), name)


def pool_windows(
    b: Builder, x, fill: float, *, kernel, stride, before, after, dilation, out, name: str
) -> SSAValue:
    """``(N, K·C, *out)``: ``x`` padded with ``fill`` (more after where ceil-mode windows
    run past the padded edge), then its ``windows``."""
    spans = zip(out, stride, kernel, dilation, strict=True)
    need = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in spans]
    have = [s + lo + hi for s, lo, hi in zip(_shape(x)[2:], before, after, strict=True)]
    after = [hi + max(0, nd - h) for hi, nd, h in zip(after, need, have, strict=True)]
    x = pad(b, x, before, after, fill, name)
    return windows(b, x, kernel, stride, dilation, out, f"{name}_win")


def past_the_edge(spatial, kernel, stride, before, after, dilation, out) -> bool:
    """Does ceil mode make a window reach past the padded input (a smaller mean divisor)?"""
    return any(
        (o - 1) * st + (k - 1) * d + 1 > s + lo + hi
        for s, k, st, lo, hi, d, o in zip(
            spatial, kernel, stride, before, after, dilation, out, strict=True
        )
    )
