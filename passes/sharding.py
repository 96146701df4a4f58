"""Sharding: one socket's program (SPMD) of a function run over N sockets, found by
propagating layouts through the graph, as GSPMD does — not written per model family.

Every value gets a layout:

- ``R``: replicated, whole on every socket;
- ``S(d, k)``: split along dim ``d`` into ``k`` parts, ``k`` dividing N; sockets
  ``s·k/N`` hold part ``s // (N/k)`` (with ``k`` < N each part is on N/k sockets: 28
  heads on 8 sockets are 4 parts of 7, each on two);
- ``P(k)``: a partial sum over ``k`` parts (each on N/k sockets): an all-reduce sums it,
  scaled by k/N when parts repeat.

Walking the ops in program order, a matmul of a replicated activation and a weight
splits the weight by output columns (in as many parts as the heads its output is
reshaped into allow, at most N: Megatron's column-parallel layer); an embedding table
is split by columns and the rows it looks up gathered whole; a matmul of an
activation split along its contraction splits the weight by rows and makes a partial
sum (the row-parallel layer); elementwise ops, reshapes that keep the split's
boundaries, permutes, attention over split heads and norms over unsplit dims keep
the split; a weight or constant read whole beside a split operand is split too (its
data is sliced per socket, as the weights are). Where a layout cannot go on (a norm
over a split dim, a reduction over it, a reshape that cuts across it, an op with no
rule), the value is made whole first: an all-reduce for a partial sum, an all-gather
for a split. The function's results are made whole, except values written in place
into an argument (a KV cache), which keep their argument's layout.

The pass rewrites the function in place to one socket's shapes, and records the
layouts it chose as attributes: ``shard = [dim, parts]`` on each split weight, and on
the function ``arg_shards`` / ``result_shards`` (``[-1, 1]``: whole). ``socket_slice``
cuts a tensor for a socket by such a layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DenseArrayBase, IntegerAttr, ModuleOp, i64
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass

from coec.ir import ops as df
from coec.ir.errors import ConfigError, UnsupportedOpError
from coec.ir.types import TensorType

WHOLE = (-1, 1)


@dataclass(frozen=True)
class Layout:
    kind: str  # "R", "S", "P"
    dim: int = -1
    parts: int = 1
    #: a split dim made of blocks (a fused projection's q, k and v columns), each block
    #: split in ``parts``: a socket holds its part of every block, side by side
    blocks: tuple[int, ...] = ()

    @property
    def whole(self) -> bool:
        return self.kind == "R"


R = Layout("R")


def split(dim: int, parts: int) -> Layout:
    return R if parts == 1 else Layout("S", dim, parts)


def socket_slice(x, dim: int, parts: int, socket: int, sockets: int, blocks=()):
    """Socket ``socket``'s part of ``x`` (a tensor or array) under ``S(dim, parts)``: of
    each block when the dim is made of ``blocks``, side by side."""
    if dim < 0 or parts == 1:
        return x
    part = socket // (sockets // parts)
    pieces, start = [], 0
    for block in blocks or (x.shape[dim],):
        size = block // parts
        index = [slice(None)] * len(x.shape)
        index[dim] = slice(start + part * size, start + (part + 1) * size)
        pieces.append(x[tuple(index)])
        start += block
    if len(pieces) == 1:
        return pieces[0]
    if isinstance(x, np.ndarray):
        return np.concatenate(pieces, axis=dim)
    import torch

    return torch.cat(pieces, dim=dim)


def _local(t: TensorType, layout: Layout) -> TensorType:
    if layout.kind != "S":
        return t
    shape = list(t.shape_tuple)
    shape[layout.dim] //= layout.parts
    return TensorType(shape, t.dtype)


def _parts_for(size: int, sockets: int, grain: int = 1) -> int:
    """The most parts (dividing ``sockets``) that cut ``size`` at multiples of ``grain``."""
    units = size // grain if grain and size % grain == 0 else size
    return max((k for k in range(1, sockets + 1) if sockets % k == 0 and units % k == 0), default=1)


class _Sharder:
    """The walk: old value -> (new value, layout), in the rebuilt block."""

    def __init__(self, fn: func.FuncOp, sockets: int, arg_layouts: Sequence[Layout | None]):
        self.n = sockets
        self.old = fn.body.block
        self.block = Block()
        self.value: dict[SSAValue, SSAValue] = {}
        self.layout: dict[SSAValue, Layout] = {}
        self.free: dict[SSAValue, SSAValue] = {}  # old arg -> new arg, layout not chosen yet
        #: ops on weights alone (a weight transposed or reshaped), laid out with the weight
        #: when a reader asks for a layout: old value -> the op
        self.views: dict[SSAValue, Operation] = {}
        for a, given in zip(self.old.args, arg_layouts, strict=True):
            new = self.block.insert_arg(a.type, len(self.block.args))
            new.name_hint = a.name_hint
            self.value[a] = new
            if given is None:
                self.free[a] = new
            else:
                self.layout[a] = given

    # -- values ---------------------------------------------------------------------------
    def emit(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0]

    def get(self, v: SSAValue, want: Layout | None = None) -> tuple[SSAValue, Layout]:
        """The new value of ``v`` and its layout; ``want``: make it so (only R or S of a
        weight or free argument can be chosen; a computed value is made whole)."""
        first_read = isinstance(v.owner, df.WeightOp | df.ConstantOp) and v not in self.value
        if v in self.free or first_read:
            return self._source(v, want or R)
        if v in self.views and v not in self.value:
            return self._view(v, want or R)
        new, layout = self.value[v], self.layout[v]
        if want is None or want == layout:
            return new, layout
        if want.whole:
            return self.whole(v), R
        raise UnsupportedOpError(f"cannot lay {v.name_hint} out as {want}")

    def _source(self, v: SSAValue, layout: Layout) -> tuple[SSAValue, Layout]:
        """A weight, constant or argument first read: laid out as its reader wants."""
        if v in self.free:
            new = self.free.pop(v)
            new._type = _local(v.type, layout)
            self.layout[v] = layout
            return new, layout
        op = v.owner
        if isinstance(op, df.ConstantOp) or len(v.type.shape_tuple) == 0:
            layout = R
        clone = op.clone()
        clone.results[0]._type = _local(v.type, layout)
        clone.results[0].name_hint = v.name_hint
        if layout.kind == "S" and isinstance(clone, df.WeightOp):
            recorded = [layout.dim, layout.parts, *layout.blocks]
            clone.attributes["shard"] = DenseArrayBase.from_list(i64, recorded)
        self.value[v], self.layout[v] = self.emit(clone), layout
        return self.value[v], layout

    def _view(self, v: SSAValue, layout: Layout) -> tuple[SSAValue, Layout]:
        """A weight's view (permute, reshape, cast) laid out as its reader wants: its
        weight laid out along the dim that becomes the wanted one."""
        op = self.views.pop(v)
        source = op.operands[0]
        if layout.kind == "S":
            if isinstance(op, df.PermuteOp):
                dim = list(op.perm.get_values())[layout.dim]
                inner = Layout("S", dim, layout.parts, layout.blocks)
            elif isinstance(op, df.GatherOp):  # the rows looked up keep the table's other dims
                picked = len(op.operands[1].type.shape_tuple)
                dim = layout.dim - picked + 1
                inner = Layout("S", dim, layout.parts, layout.blocks) if dim >= 1 else None
            elif isinstance(op, df.ReshapeOp):
                inner = _reshape_back(source.type.shape_tuple, v.type.shape_tuple, layout)
            else:
                inner = layout
            if inner is None:
                layout, inner = R, R
        else:
            inner = R
        new, _ = self.get(source, inner)
        self.put(op, [new, *(self.get(x, R)[0] for x in op.operands[1:])], layout)
        return self.value[v], layout

    def _is_view(self, op: Operation) -> bool:
        """An op that only views weights, not yet laid out: laid out with them, later (a
        transpose, a reshape, a cast; a lookup of whole experts' matrices by index)."""
        if isinstance(op, df.GatherOp):
            table = op.operands[0]
            if op.props()["axis"] != 0 or len(table.type.shape_tuple) < 3:
                return False
            return isinstance(table.owner, df.WeightOp) and table not in self.value
        if not isinstance(op, df.PermuteOp | df.ReshapeOp | df.ElementwiseOp):
            return False
        if isinstance(op, df.ElementwiseOp) and op.kind.data != "cast":
            return False
        x = op.operands[0]
        lazy = isinstance(x.owner, df.WeightOp) and x not in self.value
        return lazy or (x in self.views and x not in self.value)

    def whole(self, v: SSAValue) -> SSAValue:
        """``v`` made whole on every socket (all-reduce a partial sum, all-gather a split)."""
        new, layout = self.value[v], self.layout[v]
        if layout.kind == "P":
            out = self.emit(df.AllReduceOp(new, new.type))
            if layout.parts < self.n:  # each part summed N/k times
                scale = self.emit(df.ConstantOp(layout.parts / self.n, new.type.dtype))
                out = self.emit(df.ElementwiseOp("mul", [out, scale], new.type))
        elif layout.kind == "S":
            if layout.blocks:
                raise UnsupportedOpError(f"{v.name_hint}'s blocks cannot be gathered whole")
            if layout.parts != self.n:
                raise UnsupportedOpError(
                    f"{v.name_hint} is split in {layout.parts} parts over {self.n} sockets: "
                    "it cannot be gathered whole"
                )
            out = self.emit(df.AllGatherOp(new, layout.dim, v.type))
        else:
            return new
        self.value[v], self.layout[v] = out, R
        return out

    def put(self, old: Operation, operands: list[SSAValue], layout: Layout) -> None:
        """``old`` rebuilt on the new ``operands``, its result laid out as ``layout``."""
        t = old.results[0].type
        new = type(old).create(
            operands=operands,
            result_types=[_local(t, layout)],
            properties=dict(old.properties),
            attributes=dict(old.attributes),
        )
        new.results[0].name_hint = old.results[0].name_hint
        self.emit(new)
        self.value[old.results[0]], self.layout[old.results[0]] = new.results[0], layout

    def replicated(self, op: Operation) -> None:
        """``op`` on whole operands (no rule keeps a split through it)."""
        self.put(op, [self.get(v, R)[0] for v in op.operands], R)

    # -- the walk --------------------------------------------------------------------------
    def run(self, in_place: dict[int, int | None]) -> list[Layout]:
        """Walk the ops; the results are made whole, but for those written in place into
        an argument (``in_place``: result -> argument), which keep its layout, or lay out
        an argument no op read (a cache written whole) as they are."""
        args = list(self.old.args)
        for op in self.old.ops:
            if isinstance(op, func.ReturnOp):
                outs, layouts = [], []
                for i, v in enumerate(op.operands):
                    arg = args[in_place[i]] if in_place.get(i) is not None else None
                    if i in in_place and arg is None:  # written into an argument elsewhere
                        new, layout = self.get(v)
                        if layout.kind == "P":
                            new, layout = self.whole(v), R
                    elif arg is not None and arg in self.free:
                        new, layout = self.get(v)
                        if layout.kind == "P":
                            new, layout = self.whole(v), R
                        self._source(arg, layout)
                    else:
                        want = self.layout.get(arg, R) if arg is not None else R
                        new, layout = self.get(v, want) if want.whole else self.get(v)
                    if arg is not None and layout != self.layout[arg]:
                        raise UnsupportedOpError(
                            f"result {i} ({v.name_hint}) is laid out {layout}, not as the "
                            f"argument it is written into, {self.layout[arg]}"
                        )
                    outs.append(new)
                    layouts.append(layout)
                self.block.add_op(func.ReturnOp(*outs))
                return layouts
            if isinstance(op, df.WeightOp | df.ConstantOp):
                continue  # laid out when first read
            if self._is_view(op):
                self.views[op.results[0]] = op
                continue
            rule = getattr(self, "_" + op.name.removeprefix("df."), None)
            if rule is None or not rule(op):
                self.replicated(op)
        raise UnsupportedOpError("a function without a return")

    def _aligned(self, op: Operation, out_dim: int, v: SSAValue) -> int | None:
        """The dim of operand ``v`` NumPy broadcasting aligns with ``out_dim`` (None: a
        broadcast dim of size 1, or not there)."""
        out, shape = op.results[0].type.shape_tuple, v.type.shape_tuple
        i = out_dim - (len(out) - len(shape))
        return i if i >= 0 and shape[i] == out[out_dim] else None

    def _elementwise(self, op: df.ElementwiseOp) -> bool:
        kind = op.kind.data
        layouts = [self.layout.get(v) for v in op.operands]
        partial = [lay for lay in layouts if lay is not None and lay.kind == "P"]
        if partial:
            summed = kind in ("add", "sub") and all(lay == partial[0] for lay in layouts)
            # a partial sum scaled by a whole value is the partial sum of the scaled parts
            scaled = (
                (kind == "mul" or (kind == "div" and layouts[0] == partial[0]))
                and len(partial) == 1
                and all(lay == partial[0] or (lay is not None and lay.whole) for lay in layouts)
            )
            if not (summed or scaled):
                return False
            self.put(op, [self.value[v] for v in op.operands], partial[0])
            return True
        rank = len(op.results[0].type.shape_tuple)
        splits = set()
        for v, lay in zip(op.operands, layouts, strict=True):
            if lay is not None and lay.kind == "S":
                d = lay.dim + rank - len(v.type.shape_tuple)
                splits.add((d, lay.parts, lay.blocks))
        if len(splits) != 1:
            return False
        (d, k, blocks), operands = next(iter(splits)), []
        for v in op.operands:
            lay = self.layout.get(v)
            at = self._aligned(op, d, v)
            if lay is not None and lay.kind == "S":
                operands.append(self.value[v])
            elif at is None:
                operands.append(self.get(v, R)[0])  # broadcast along the split
            elif v in self.free or isinstance(v.owner, df.WeightOp):
                # slice its data per socket
                operands.append(self.get(v, Layout("S", at, k, blocks))[0])
            else:
                return False
        self.put(op, operands, Layout("S", d, k, blocks))
        return True

    def _matmul(self, op: df.MatmulOp) -> bool:
        a, b = op.a, op.b
        rank = len(op.results[0].type.shape_tuple)
        b_rank = len(b.type.shape_tuple)
        n_dim = b_rank - 2 if op.transpose_b.value.data else b_rank - 1
        k_dim = b_rank - 1 if op.transpose_b.value.data else b_rank - 2
        weight = b not in self.value and (isinstance(b.owner, df.WeightOp) or b in self.views)
        la = self.layout.get(a)
        if weight and la is not None:
            if la.kind == "P":
                self.whole(a)
                la = R
            if la.whole and _normalized(op.results[0]):
                return False  # a router's logits, normalized at once: kept whole
            if la.whole:  # column parallel: split the weight's output columns
                blocks = _blocks(op.results[0])
                k = min(_parts_for(b, self.n, g) for b, g in blocks)
                if k == 1:
                    return False
                cut = tuple(b for b, _ in blocks) if len(blocks) > 1 else ()
                w = self.get(b, Layout("S", n_dim, k, cut))[0]
                self.put(op, [self.value[a], w], Layout("S", rank - 1, k, cut))
                return True
            if la.kind == "S" and la.dim == len(a.type.shape_tuple) - 1:  # row parallel
                self.put(
                    op,
                    [self.value[a], self.get(b, split(k_dim, la.parts))[0]],
                    Layout("P", -1, la.parts),
                )
                return True
            if la.kind == "S" and la.dim < len(a.type.shape_tuple) - 2:  # a batch dim
                d = la.dim + rank - len(a.type.shape_tuple)
                self.put(op, [self.value[a], self.get(b, R)[0]], Layout("S", d, la.parts))
                return True
            return False
        lb = self.layout.get(b)
        if lb is not None and a not in self.value and self._is_weight(a):
            return self._weight_first(op, lb)
        if la is None or lb is None:
            return False
        if la.kind == "S" and lb.kind == "S":  # a shared batch dim (attention's heads)
            da = la.dim + rank - len(a.type.shape_tuple)
            db = lb.dim + rank - b_rank
            if da == db and la.parts == lb.parts and da < rank - 2:
                self.put(op, [self.value[a], self.value[b]], Layout("S", da, la.parts))
                return True
        return False

    def _is_weight(self, v: SSAValue) -> bool:
        return isinstance(v.owner, df.WeightOp) or v in self.views

    def _weight_first(self, op: df.MatmulOp, lb: Layout) -> bool:
        """``W @ x`` (a batched linear, experts' weights first: [.., N, K] @ [.., K, 1]):
        W's rows split when x is whole (its output rows split), its columns when x's rows
        (the contraction) are (a partial sum)."""
        a, b = op.a, op.b
        rank, a_rank = len(op.results[0].type.shape_tuple), len(a.type.shape_tuple)
        if op.transpose_b.value.data or lb.kind == "P":
            return False
        if lb.whole:
            out = op.results[0]
            users = [u.operation for u in out.uses]
            if len(users) == 1 and isinstance(users[0], df.ReshapeOp):
                squeezed = users[0].results[0]
                rows = out.type.shape_tuple[-2]
                blocks = _blocks(squeezed) if squeezed.type.shape_tuple[-1:] == (rows,) else None
            else:
                blocks = None
            blocks = blocks or [(a.type.shape_tuple[-2], 1)]
            k = min(_parts_for(n, self.n, g) for n, g in blocks)
            if k == 1:
                return False
            cut = tuple(n for n, _ in blocks) if len(blocks) > 1 else ()
            w = self.get(a, Layout("S", a_rank - 2, k, cut))[0]
            self.put(op, [w, self.value[b]], Layout("S", rank - 2, k, cut))
            return True
        if lb.kind == "S" and lb.dim == len(b.type.shape_tuple) - 2:  # x's rows: the K dim
            w = self.get(a, Layout("S", a_rank - 1, lb.parts, lb.blocks))[0]
            self.put(op, [w, self.value[b]], Layout("P", -1, lb.parts))
            return True
        return False

    def _reshape(self, op: df.ReshapeOp) -> bool:
        x = op.input
        lay = self.layout.get(x)
        if lay is None or lay.kind != "S":
            return lay is not None and lay.kind == "P" and self._keep(op, lay)
        src, out = x.type.shape_tuple, op.results[0].type.shape_tuple
        prefix = math.prod(src[: lay.dim])
        if lay.blocks:  # blocks stay blocks only in a view that keeps their dim whole
            for e in range(len(out)):
                if math.prod(out[:e]) == prefix and out[e] == src[lay.dim]:
                    return self._keep(op, Layout("S", e, lay.parts, lay.blocks))
            return False
        for e in range(len(out)):
            if math.prod(out[:e]) == prefix and out[e] % lay.parts == 0 and out[e] > 1:
                self.put(op, [self.value[x]], Layout("S", e, lay.parts))
                return True
        return False

    def _keep(self, op: Operation, layout: Layout) -> bool:
        self.put(op, [self.value[v] for v in op.operands], layout)
        return True

    def _permute(self, op: df.PermuteOp) -> bool:
        lay = self.layout.get(op.input)
        if lay is None or lay.kind != "S":
            return lay is not None and lay.kind == "P" and self._keep(op, lay)
        perm = list(op.perm.get_values())
        return self._keep(op, Layout("S", perm.index(lay.dim), lay.parts, lay.blocks))

    def _along(self, op: Operation, axes: set[int]) -> bool:
        """Keep a split that is not along ``axes`` (of the op's one operand and result)."""
        lay = self.layout.get(op.operands[0])
        if lay is None or lay.kind != "S" or lay.dim in axes:
            return False
        return self._keep(op, lay)

    def _slice(self, op: df.SliceOp) -> bool:
        lay, p = self.layout.get(op.input), op.props()
        if lay is not None and lay.kind == "S" and lay.blocks and lay.dim == p["axis"]:
            # a slice of whole blocks (q, k or v of a fused projection) keeps their split
            edges, at = [0], 0
            for block in lay.blocks:
                at += block
                edges.append(at)
            if p["step"] != 1 or p["start"] not in edges or p["end"] not in edges:
                return False
            kept = lay.blocks[edges.index(p["start"]) : edges.index(p["end"])]
            local = Layout("S", lay.dim, lay.parts, kept if len(kept) > 1 else ())
            self.put(op, [self.value[op.input]], local)
            # its bounds on one socket: the parts of the blocks before it
            new = self.value[op.results[0]].owner
            start = sum(b // lay.parts for b in lay.blocks[: edges.index(p["start"])])
            width = sum(b // lay.parts for b in kept)
            new.properties["start"] = IntegerAttr(start, i64)
            new.properties["end"] = IntegerAttr(start + width, i64)
            return True
        if lay is not None and lay.blocks:
            return False
        return self._along(op, {p["axis"]})

    def _softmax(self, op: df.SoftmaxOp) -> bool:
        rank = len(op.results[0].type.shape_tuple)
        return self._along(op, {op.props()["axis"] % rank})

    def _norm(self, op) -> bool:
        rank = len(op.results[0].type.shape_tuple)
        lay = self.layout.get(op.input)
        if lay is None or lay.kind != "S" or lay.dim >= rank - op.props()["ndims"]:
            return False
        operands = [self.value[op.input]] + [self.get(v, R)[0] for v in op.operands[1:]]
        self.put(op, operands, lay)
        return True

    _layernorm = _norm
    _rmsnorm = _norm

    def _concat(self, op: df.ConcatOp) -> bool:
        layouts = {self.layout.get(v) for v in op.operands}
        if len(layouts) != 1:
            return False
        (lay,) = layouts
        if lay is None or lay.kind != "S" or lay.dim == op.props()["axis"]:
            return False
        return self._keep(op, lay)

    def _broadcast(self, op: df.BroadcastOp) -> bool:
        lay = self.layout.get(op.input)
        if lay is None or lay.kind != "S":
            return False
        d = lay.dim + len(op.results[0].type.shape_tuple) - len(op.input.type.shape_tuple)
        return self._keep(op, Layout("S", d, lay.parts, lay.blocks))

    def _reduce(self, op: df.ReduceOp) -> bool:
        lay = self.layout.get(op.input)
        if lay is not None and lay.kind == "P" and op.kind.data == "sum":
            return self._keep(op, lay)  # a sum of partial sums
        rank = len(op.input.type.shape_tuple)
        axes = {a % max(rank, 1) for a in op.props()["axes"]}
        if lay is None or lay.kind != "S" or lay.dim in axes:
            return False
        d = lay.dim if op.keepdim.value.data else lay.dim - sum(a < lay.dim for a in axes)
        return self._keep(op, Layout("S", d, lay.parts, lay.blocks))

    def _attention(self, op: df.AttentionOp) -> bool:
        lq = self.layout.get(op.q)
        rank = len(op.q.type.shape_tuple)
        if lq is None or lq.kind != "S" or lq.dim >= rank - 2 or lq.blocks:
            return False
        operands = [self.value[op.q]]
        for v in (op.k, op.v):
            lay = self.layout.get(v)
            d = lq.dim - rank + len(v.type.shape_tuple)
            if d < 0:
                return False
            if lay is None:
                lay = self._kv_layout(op, v, d, lq)
                if lay is None:
                    return False
                operands.append(self.get(v, lay)[0])
            elif self._kv_agrees(op, v, d, lq, lay):
                operands.append(self.value[v])
            else:
                return False
        if op.mask:
            at = self._aligned(op, lq.dim, op.mask)
            want = R if at is None else split(at, lq.parts)
            lay = self.layout.get(op.mask)
            if lay is not None and lay != want:  # a computed mask of every head: no rule
                return False
            operands.append(self.get(op.mask, want)[0])
        self.put(op, operands, lq)
        return True

    def _kv_layout(self, op, v, d: int, lq: Layout) -> Layout | None:
        """The layout of ``v`` (keys or values, not yet laid out) that serves each socket's
        query heads: its heads split as far as they go, at most as the queries'."""
        heads = v.type.shape_tuple[d]
        for k in sorted({k for k in range(1, self.n + 1) if self.n % k == 0}, reverse=True):
            lay = split(d, k) if heads % k == 0 else None
            if lay is not None and k <= lq.parts and self._kv_agrees(op, v, d, lq, lay):
                return lay
        return None

    def _kv_agrees(self, op, v, d: int, lq: Layout, lay: Layout) -> bool:
        """Whether every socket holds the K/V heads its query heads read (grouped-query
        attention: query head h reads K/V head h // (H / H_kv))."""
        hq, hk = op.q.type.shape_tuple[lq.dim], v.type.shape_tuple[d]
        if hq % hk or lay.kind == "P" or (lay.kind == "S" and lay.dim != d):
            return False
        k_parts = lay.parts if lay.kind == "S" else 1
        group = hq // hk
        for s in range(self.n):
            q_part = s // (self.n // lq.parts)
            first, last = q_part * hq // lq.parts, (q_part + 1) * hq // lq.parts - 1
            kv_part = s // (self.n // k_parts)
            lo, hi = kv_part * hk // k_parts, (kv_part + 1) * hk // k_parts - 1
            if not lo <= first // group <= last // group <= hi:
                return False
            # the socket's K/V heads are exactly those its queries read, in order
            if k_parts > 1 and (last // group - first // group + 1) != hk // k_parts:
                return False
        return True

    def _update(self, op: df.UpdateOp) -> bool:
        lay = self.layout.get(op.src)
        if lay is None or lay.kind != "S" or lay.dim == op.props()["axis"] or lay.blocks:
            return False
        dest, _ = self.get(op.dest, lay) if op.dest in self.free else (None, None)
        if dest is None:
            if self.layout.get(op.dest) != lay:
                return False
            dest = self.value[op.dest]
        self.put(op, [dest, self.value[op.src]], lay)
        return True

    def _gather(self, op: df.GatherOp) -> bool:
        table, idx = op.operands
        axis = op.props()["axis"]
        if not isinstance(table.owner, df.WeightOp) or table in self.value:
            return False
        shape = table.type.shape_tuple
        if axis != 0 or len(shape) != 2:
            return False
        # an embedding table split by hidden columns, the rows looked up made whole at once
        # (the residual stream stays whole: a split one would turn the layers' column-
        # and row-parallel pairs around)
        k = _parts_for(shape[1], self.n)
        if k < self.n:
            return False
        rank = len(op.results[0].type.shape_tuple)
        self.put(op, [self.get(table, split(1, k))[0], self.get(idx, R)[0]], split(rank - 1, k))
        self.whole(op.results[0])
        return True


def _reshape_back(src: Sequence[int], out: Sequence[int], layout: Layout) -> Layout | None:
    """The layout of a reshape's input that gives its output ``layout`` (same prefix)."""
    prefix = math.prod(out[: layout.dim])
    for d in range(len(src)):
        if math.prod(src[:d]) == prefix and src[d] % layout.parts == 0 and src[d] > 1:
            return Layout("S", d, layout.parts)
    return None


def _blocks(out: SSAValue) -> list[tuple[int, int]]:
    """(columns, grain) of each block a matmul's output ``out`` is sliced into along its
    last dim (a fused projection: q, k, v; gate, up), or one block of all its columns:
    each block must be split at multiples of its grain (``_grain``)."""
    v, n = out, out.type.shape_tuple[-1]
    while len(users := [u.operation for u in v.uses]) == 1 and _keeps_last(users[0], n):
        v = users[0].results[0]  # a bias, a view that keeps the columns
    last = len(v.type.shape_tuple) - 1
    cuts = [u for u in users if isinstance(u, df.SliceOp) and u.props()["axis"] == last]
    if len(users) < 2 or len(cuts) != len(users):
        return [(n, _grain(out))]
    spans = sorted((c.props()["start"], c.props()["end"], c) for c in cuts)
    edges = [0] + [end for _, end, _ in spans]
    if any(c.props()["step"] != 1 for c in cuts) or [st for st, _, _ in spans] != edges[:-1]:
        return [(n, _grain(out))]
    if edges[-1] != n:
        return [(n, _grain(out))]
    return [(end - start, _grain(c.results[0])) for start, end, c in spans]


def _normalized(v: SSAValue) -> bool:
    """Whether ``v``'s last dim goes (through elementwise ops) into a softmax or top-k over
    it, which would need it whole at once (a mixture of experts' router)."""
    while len(users := [u.operation for u in v.uses]) == 1:
        user = users[0]
        if isinstance(user, df.SoftmaxOp | df.TopKOp):
            rank = len(v.type.shape_tuple)
            return user.props()["axis"] % rank == rank - 1
        if not isinstance(user, df.ElementwiseOp):
            return False
        v = user.results[0]
    return False


def _keeps_last(op: Operation, n: int) -> bool:
    """An elementwise op, or a reshape keeping the last dim (``n`` columns) whole."""
    if isinstance(op, df.ElementwiseOp):
        return True
    return isinstance(op, df.ReshapeOp) and op.results[0].type.shape_tuple[-1:] == (n,)


def _grain(v: SSAValue) -> int:
    """The columns ``v`` (a matmul's output, or a block of it) must be split at multiples
    of: when a reshape (after elementwise ops: a bias; and reshapes that keep the last
    dim) cuts its last dim into heads (or groups of heads, [.., G, g, D]), one head's
    (group's) columns."""
    n = v.type.shape_tuple[-1]
    for _ in range(8):
        users = [u.operation for u in v.uses]
        if len(users) != 1:
            return 1
        user = users[0]
        if isinstance(user, df.ElementwiseOp):
            v = user.results[0]
            continue
        if not isinstance(user, df.ReshapeOp):
            return 1
        out = user.results[0].type.shape_tuple
        if out and out[-1] == n:  # the last dim kept (a batch dim merged or split)
            v = user.results[0]
            continue
        tail = 1
        for d in reversed(out):  # the trailing dims the last one was cut into
            tail *= d
            if tail == n:
                return n // d
            if tail > n:
                return 1
        return 1
    return 1


def shard_function(
    fn: func.FuncOp,
    sockets: int,
    arg_layouts: Sequence[Layout | None] | None = None,
    in_place: dict[int, int | None] | None = None,
) -> tuple[list[Layout], list[Layout]]:
    """Rewrite ``fn`` in place to one socket's program over ``sockets``.

    ``arg_layouts``: each argument's layout, or None to let its first reader choose
    (default: R for every argument); ``in_place``: result index -> argument index of
    results written into an argument (they keep its layout), or None for one written
    into an argument of another function (it keeps the layout it has). Returns the arguments' and
    results' layouts, also recorded on the function as ``arg_shards``/``result_shards``.
    """
    args = list(fn.body.block.args)
    layouts = list(arg_layouts) if arg_layouts is not None else [R] * len(args)
    from xdsl.pattern_rewriter import GreedyRewritePatternApplier, PatternRewriteWalker

    from coec.passes.canonicalize import EraseDeadOp, FoldKVRepeat

    # the attention's own repeat of grouped K/V heads, so heads split, not their copies
    patterns = GreedyRewritePatternApplier([FoldKVRepeat(), EraseDeadOp()])
    PatternRewriteWalker(patterns).rewrite_region(fn.body)
    sharder = _Sharder(fn, sockets, layouts)
    layouts_out = sharder.run(in_place or {})
    arg_out = [sharder.layout.get(a, R) for a in args]
    for a in args:  # an argument no op read stays whole
        if a in sharder.free:
            sharder.free.pop(a)
    old = fn.body.block
    fn.body.detach_block(old)
    fn.body.add_block(sharder.block)
    fn.function_type = func.FunctionType.from_lists(
        [a.type for a in sharder.block.args], [v.type for v in sharder.block.last_op.operands]
    )
    fn.attributes["arg_shards"] = _layouts_attr(arg_out)
    fn.attributes["result_shards"] = _layouts_attr(layouts_out)
    return arg_out, layouts_out


def _layouts_attr(layouts: Sequence[Layout]) -> ArrayAttr:
    return ArrayAttr(
        [
            DenseArrayBase.from_list(i64, [lay.dim, lay.parts] if lay.kind == "S" else list(WHOLE))
            for lay in layouts
        ]
    )


def read_layouts(fn: func.FuncOp, key: str) -> list[tuple[int, int]]:
    """The ``(dim, parts)`` layouts the pass recorded on ``fn`` (``[-1, 1]``: whole)."""
    if key not in fn.attributes:
        return []
    return [tuple(a.get_values()) for a in fn.attributes[key].data]


def weight_layout(op: df.WeightOp) -> tuple[int, ...]:
    """The ``(dim, parts, *blocks)`` a weight is split as (whole: ``(-1, 1)``)."""
    if "shard" not in op.attributes:
        return WHOLE
    return tuple(int(v) for v in op.attributes["shard"].get_values())


def slice_for(x, layout: tuple[int, ...], socket: int, sockets: int):
    """``socket_slice`` by a recorded ``(dim, parts, *blocks)`` layout."""
    dim, parts, *blocks = layout
    return socket_slice(x, dim, parts, socket, sockets, tuple(blocks))


def layout_between(whole: Sequence[int], local: Sequence[int]) -> tuple[int, int]:
    """The ``(dim, parts)`` that cut a ``whole`` shape to one socket's ``local`` one."""
    cut = [(d, w // p) for d, (w, p) in enumerate(zip(whole, local, strict=True)) if w != p]
    if len(cut) > 1 or any(whole[d] % local[d] for d, _ in cut):
        raise UnsupportedOpError(f"{tuple(local)} is not one split of {tuple(whole)}")
    return cut[0] if cut else WHOLE


def join_parts(parts: Sequence[np.ndarray], layout: tuple[int, int]) -> np.ndarray:
    """The whole array from every socket's part (a split's distinct parts concatenated)."""
    dim, k = layout
    if dim < 0 or k == 1:
        return parts[0]
    step = len(parts) // k
    return np.concatenate([parts[i * step] for i in range(k)], axis=dim)


@dataclass(frozen=True)
class ShardPass(ModulePass):
    """Rewrite each function to one socket's program over ``sockets`` (SPMD).

    Requires: the frontend's df IR, before fusion. Guarantees: every value has one
    socket's shape; collectives make whole what the layouts cannot carry on; the
    function's results are whole (``result_shards`` records any that are not)."""

    name = "shard"
    sockets: int = 1

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.sockets < 1:
            raise ConfigError(f"shard pass: sockets={self.sockets} must be at least 1")
        if self.sockets == 1:
            return
        for fn in op.ops:
            if isinstance(fn, func.FuncOp):
                shard_function(fn, self.sockets)
