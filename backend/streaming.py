"""Which input dims follow an op's streamed output dim: the rules tiling rests on.

A kernel streams tiles along one dimension: every value in a phase is sliced
along its *stream axis*, and each op runs once per tile. ``input_axes(op, j)``
says, for an op whose output is streamed along dim ``j``, along which dim each
operand must be sliced (``None``: the operand is used whole, e.g. a weight or a
broadcast dim of size 1) — or returns ``None`` when the op cannot stream along
``j`` (softmax along its own axis, a reduction over ``j``, attention keys...).
The NumPy handlers then compute a tile exactly as they compute a whole tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from coec.ir import ops as df

Axes = list[int | None]


def _shape(v) -> tuple[int, ...]:
    return df.tensor_type(v).shape_tuple


def _aligned(
    out_rank: int, in_shape: Sequence[int], out_shape: Sequence[int], j: int
) -> int | None:
    """NumPy broadcasting: the operand dim aligned with output dim j (None if broadcast)."""
    i = j - (out_rank - len(in_shape))
    if i < 0 or in_shape[i] != out_shape[j]:
        return None
    return i


def _broadcasting(op, j: int) -> Axes:
    out = _shape(op.results[0])
    return [_aligned(len(out), _shape(v), out, j) for v in op.operands]


def _reshape_axis(in_shape: Sequence[int], out_shape: Sequence[int], j: int) -> int | None:
    """The input dim that output dim j keeps intact (same size, same prefix product)."""
    prefix = math.prod(out_shape[:j])
    for i, d in enumerate(in_shape):
        if d == out_shape[j] and math.prod(in_shape[:i]) == prefix:
            return i
    return None


def input_axes(op: df.DfOp, j: int) -> Axes | None:
    """Operand stream axes for output axis ``j``, or None if ``op`` cannot stream along it."""
    found = op.memo(("input_axes", j), lambda: _input_axes(op, j))
    return None if found is None else list(found)


def _input_axes(op: df.DfOp, j: int) -> tuple[int | None, ...] | None:
    axes = _rule(op, j)
    return None if axes is None else tuple(axes)


def _rule(op: df.DfOp, j: int) -> Axes | None:
    out = _shape(op.results[0])
    rank = len(out)
    if not 0 <= j < rank:
        return None
    if isinstance(op, df.ElementwiseOp | df.BroadcastOp | df.AllReduceOp):
        return _broadcasting(op, j)
    if isinstance(op, df.MatmulOp):
        a, b = _shape(op.a), _shape(op.b)
        if j == rank - 2:
            return [len(a) - 2, None]
        if j == rank - 1:
            return [None, len(b) - 2 if op.transpose_b.value.data else len(b) - 1]
        return [_aligned(rank, a[:-2] + (0, 0), out, j), _aligned(rank, b[:-2] + (0, 0), out, j)]
    if isinstance(op, df.ReduceOp):
        src = _shape(op.input)
        axes = set(op.props()["axes"])
        kept = (
            list(range(len(src)))
            if op.keepdim.value.data
            else [i for i in range(len(src)) if i not in axes]
        )
        i = kept[j]
        return None if i in axes else [i]
    if isinstance(op, df.SoftmaxOp | df.TopKOp):
        return None if j == op.props()["axis"] else [j]
    if isinstance(op, df.LayerNormOp | df.RMSNormOp):
        if j >= rank - op.props()["ndims"]:
            return None
        return [j] + [None] * (len(op.operands) - 1)
    if isinstance(op, df.AttentionOp):
        q, k, v = _shape(op.q), _shape(op.k), _shape(op.v)
        mask = [_aligned(rank, _shape(op.mask), out[:-1] + (k[-2],), j)] if op.mask else []
        if j == rank - 2:
            return [j, None, None, *mask]
        if j == rank - 1 or q[j] != k[j - rank + len(k)]:
            return None  # a head dim that k/v do not share (grouped-query attention)
        return [j, j - rank + len(k), j - rank + len(v), *mask]
    if isinstance(op, df.ReshapeOp):
        i = _reshape_axis(_shape(op.input), out, j)
        return None if i is None else [i]
    if isinstance(op, df.PermuteOp):
        return [op.props()["perm"][j]]
    if isinstance(op, df.SliceOp):
        return None if j == op.props()["axis"] else [j]
    if isinstance(op, df.AllGatherOp):
        return None if j == op.props()["axis"] else [j]
    if isinstance(op, df.UpdateOp):
        return None if j == op.props()["axis"] else [j, j]
    if isinstance(op, df.ConcatOp):
        return None if j == op.props()["axis"] else [j] * len(op.operands)
    if isinstance(op, df.GatherOp):
        # only along the indices: the table stays whole, so a lookup reads just the rows
        # it picks (an indirect DMA), never a streamed slice of every row
        axis = op.props()["axis"]
        idx_rank = len(_shape(op.operands[1]))
        return [None, j - axis] if axis <= j < axis + idx_rank else None
    return None
