"""Canonicalize df IR: fold movement chains, drop no-op views and dead ops.

Each pattern does one rewrite; the walker applies them to a fixed point. Meant for
frontend IR (before ``fuse``): it does not look inside kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from coec.ir import ops as df


def _same_type(a, b) -> bool:
    return df.tensor_type(a) == df.tensor_type(b)


class FoldReshapeChain(RewritePattern):
    """reshape(reshape(x)) -> reshape(x): a view of a view is one view."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: df.ReshapeOp, rewriter: PatternRewriter) -> None:
        inner = op.input.owner
        if isinstance(inner, df.ReshapeOp):
            rewriter.replace(op, df.ReshapeOp(inner.input, df.tensor_type(op.result)))


class DropNoOpReshape(RewritePattern):
    """reshape(x) to x's own type -> x."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: df.ReshapeOp, rewriter: PatternRewriter) -> None:
        if _same_type(op.input, op.result):
            rewriter.replace(op, [], [op.input])


class DropIdentityPermute(RewritePattern):
    """permute(x, [0, 1, ..., n-1]) -> x."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: df.PermuteOp, rewriter: PatternRewriter) -> None:
        perm = op.props()["perm"]
        if list(perm) == list(range(len(perm))) and _same_type(op.input, op.result):
            rewriter.replace(op, [], [op.input])


class FoldPermuteChain(RewritePattern):
    """permute(permute(x, p), q) -> permute(x, p∘q), or x when that is the identity."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: df.PermuteOp, rewriter: PatternRewriter) -> None:
        inner = op.input.owner
        if not isinstance(inner, df.PermuteOp):
            return
        p, q = inner.props()["perm"], op.props()["perm"]
        rewriter.replace(op, df.PermuteOp(inner.input, [p[i] for i in q], op.out_type))


def unrepeated(v):
    """``x`` when ``v`` is x's K/V heads repeated for grouped-query attention (HF's
    ``repeat_kv``: [.., H, S, D] -> [.., H, 1, S, D] -> broadcast [.., H, r, S, D] ->
    [.., H·r, S, D], head h from x's head h // r), else None."""
    outer = v.owner
    if not isinstance(outer, df.ReshapeOp) or not isinstance(outer.input.owner, df.BroadcastOp):
        return None
    wide = outer.input.owner
    inner = wide.input.owner
    if not isinstance(inner, df.ReshapeOp):
        return None
    x = inner.input
    xs, mid = df.tensor_type(x).shape_tuple, df.tensor_type(inner.result).shape_tuple
    ws, out = df.tensor_type(wide.result).shape_tuple, df.tensor_type(outer.result).shape_tuple
    if len(xs) < 3 or mid != (*xs[:-2], 1, *xs[-2:]):
        return None
    rep = ws[-3]
    if ws != (*xs[:-2], rep, *xs[-2:]) or out != (*xs[:-3], xs[-3] * rep, *xs[-2:]):
        return None
    return x


class FoldKVRepeat(RewritePattern):
    """attention(q, repeat(k), repeat(v)) -> attention(q, k, v): ``df.attention`` repeats
    grouped K/V heads itself, so the model's own repeat (``unrepeated``) is one too many
    (and a sharding of heads can then split the K/V heads, not their copies)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: df.AttentionOp, rewriter: PatternRewriter) -> None:
        k, v = unrepeated(op.k), unrepeated(op.v)
        if k is None or v is None:
            return
        p = op.props()
        rewriter.replace(
            op, df.AttentionOp(op.q, k, v, op.mask, p["scale"], p["is_causal"], op.out_type)
        )


class EraseDeadOp(RewritePattern):
    """A df op whose results nobody reads computes nothing anyone sees (df ops have no effects)."""

    def match_and_rewrite(self, op, rewriter: PatternRewriter) -> None:
        if not isinstance(op, df.DfOp) or isinstance(op, df.YieldOp):
            return
        if not isinstance(op.parent_op(), func.FuncOp):
            return  # inside a kernel the yield keeps what matters
        if op.results and all(not r.uses for r in op.results):
            rewriter.erase(op)


PATTERNS = (
    FoldReshapeChain(),
    DropNoOpReshape(),
    DropIdentityPermute(),
    FoldPermuteChain(),
    FoldKVRepeat(),
    EraseDeadOp(),
)


@dataclass(frozen=True)
class CanonicalizePass(ModulePass):
    """Simplify movement ops and remove dead ones.

    Requires: verified df IR. Guarantees: the same function of the inputs, with no
    reshape-of-reshape, permute-of-permute, identity view or unused df op at the
    function's top level.
    """

    name = "canonicalize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(GreedyRewritePatternApplier(list(PATTERNS))).rewrite_module(op)
