"""Outline a group of ops into one ``df.kernel``: the mechanics every fusion policy shares.

A group's operands defined outside it become the kernel's inputs (scalar
``df.constant`` immediates are cloned in instead); its results used outside
become the kernel's results. Values inside the kernel never leave SRAM.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
from xdsl.ir import Block, Operation, Region, SSAValue

from coec.ir import ops as df


def outline(ops: Sequence[Operation], name: str) -> df.KernelOp:
    """Replace ``ops`` (in program order, convex) with one kernel placed at the last op."""
    members = set(ops)
    inputs: list[SSAValue] = []
    consts: list[df.ConstantOp] = []
    for op in ops:
        for v in op.operands:
            owner = v.owner
            if owner in members:
                continue
            if isinstance(owner, df.ConstantOp):
                if owner not in consts:
                    consts.append(owner)
            elif v not in inputs:
                inputs.append(v)
    outputs = [
        r for op in ops for r in op.results if any(u.operation not in members for u in r.uses)
    ]

    block = Block(arg_types=[v.type for v in inputs])
    mapping: dict[SSAValue, SSAValue] = {}
    for v, arg in zip(inputs, block.args, strict=True):
        arg.name_hint = v.name_hint
        mapping[v] = arg
    for c in consts:
        clone = c.clone()
        block.add_op(clone)
        mapping[c.result] = clone.result
        clone.result.name_hint = c.result.name_hint
    for op in ops:
        clone = op.clone(value_mapper=mapping)
        block.add_op(clone)
        for old, new in zip(op.results, clone.results, strict=True):
            new.name_hint = old.name_hint
            mapping[old] = new
    block.add_op(df.YieldOp([mapping[v] for v in outputs]))

    kernel = df.KernelOp(name, inputs, Region(block), [v.type for v in outputs])
    last = ops[-1]
    last.parent_block().insert_op_after(kernel, last)
    for old, new in zip(outputs, kernel.outputs, strict=True):
        new.name_hint = old.name_hint
        old.replace_all_uses_with(new)
    for op in reversed(ops):
        op.detach()
        op.erase()
    for c in consts:
        if not c.result.uses:
            c.detach()
            c.erase()
    return kernel


def restore_order(block: Block) -> None:
    """Reorder ``block`` topologically (stable), after groups were outlined at their last op.

    Outlining a group that is not contiguous can leave a user of its results ahead
    of the kernel; any convex partition has an order that fixes that.
    """
    ops = list(block.ops)
    index = {op: i for i, op in enumerate(ops)}
    graph = nx.DiGraph()
    graph.add_nodes_from(ops)
    for op in ops:
        for v in op.operands:
            owner = v.owner
            if isinstance(owner, Operation) and owner in index:
                graph.add_edge(owner, op)
    order = list(nx.lexicographical_topological_sort(graph, key=index.__getitem__))
    if order == ops:
        return
    for op in ops:
        op.detach()
    block.add_ops(order)
