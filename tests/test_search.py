"""The partition search: exact over every valid partition, checked by brute force."""

from __future__ import annotations

import networkx as nx
import torch
from hypothesis import given, settings
from test_differential import COMMON, RandomGraph, programs

from coec.backend.plan import plan_streams
from coec.backend.target import load_target
from coec.frontend.export import export_module
from coec.frontend.lower import lower_program
from coec.passes.bounds import kernel_bound, phase_bound
from coec.passes.fusion import (
    _steps,
    can_fuse_dataflow,
    compute_ops,
    kernel_cycles,
    partition_dataflow,
    partition_searched,
    step_graph,
)
from coec.passes.search import ideals, search_partition


def set_partitions(items: list[int]):
    """Every partition of ``items`` into non-empty groups."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in set_partitions(rest):
        yield [[first], *part]
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]


def valid(graph: nx.DiGraph, groups: list[list[int]]) -> bool:
    """Each group convex and the groups in some order with every edge pointing forward."""
    group_of = {v: g for g, members in enumerate(groups) for v in members}
    quotient = nx.DiGraph()
    quotient.add_nodes_from(range(len(groups)))
    quotient.add_edges_from(
        (group_of[u], group_of[v]) for u, v in graph.edges if group_of[u] != group_of[v]
    )
    return nx.is_directed_acyclic_graph(quotient)  # a cycle through a group: not convex


def brute_force(graph, fits, cost) -> int:
    best = None
    for groups in set_partitions(list(graph.nodes)):
        if not valid(graph, groups) or not all(fits(tuple(sorted(g))) for g in groups):
            continue
        total = sum(cost(tuple(sorted(g))) for g in groups)
        best = total if best is None else min(best, total)
    return best


def test_convexity_alone_is_checked_by_the_quotient():
    """a -> b -> c: {a, c} is not convex (the path leaves it through b): no valid order."""
    chain = nx.DiGraph([(0, 1), (1, 2)])
    assert not valid(chain, [[0, 2], [1]]) and valid(chain, [[0, 1], [2]])
    # two groups with edges both ways are each convex, yet cannot run one after the other
    cross = nx.DiGraph([(0, 1), (2, 3)])
    assert not valid(cross, [[0, 3], [1, 2]])


def test_the_search_beats_cutting_the_program_order_on_a_toy_cost():
    """Two independent chains interleaved in program order (0 2 1 3, edges 0->1, 2->3):
    the best kernels are the two chains, which no cutting of that order makes."""
    graph = nx.DiGraph([(0, 1), (2, 3)])
    order = [0, 2, 1, 3]  # the program order, renumbered as the search numbers units
    g = nx.relabel_nodes(graph, {v: order.index(v) for v in graph})

    def cost(units):  # a kernel of one chain is cheap; anything else pays per unit
        chains = {frozenset({order.index(a), order.index(b)}) for a, b in graph.edges}
        return 1 if frozenset(units) in chains else 5 * len(units)

    found = search_partition(g, lambda u: True, cost, limit=10_000)
    assert found.cycles == 2 == brute_force(g, lambda u: True, cost)
    assert found.method == "every partition"
    cut = search_partition(g, lambda u: True, cost, limit=10_000, max_ideals=1)
    assert cut.method == "cut points of the program order" and cut.cycles > found.cycles


def test_ideals_of_a_diamond():
    diamond = nx.DiGraph([(0, 1), (0, 2), (1, 3), (2, 3)])
    assert ideals(diamond) == [0b0, 0b1, 0b11, 0b101, 0b111, 0b1111]
    assert ideals(diamond, cap=3) is None


def test_a_limit_too_small_stops_the_search_at_the_limit():
    graph = nx.DiGraph([(0, 1), (1, 2), (2, 3)])
    asked = []
    found = search_partition(graph, lambda u: True, lambda u: asked.append(u) or 1, limit=2)
    assert not found.complete and found.method == "stopped at 2 kernels costed"
    assert len(asked) == found.asked == 2


def lowered_ops(program):
    shapes, steps, outputs = program
    torch.manual_seed(0)
    model = RandomGraph(shapes, steps, outputs).eval()
    lowered = lower_program(export_module(model, (torch.randn(*shapes[0]),)), "f32")
    fn = next(op for op in lowered.module.ops)
    return compute_ops(fn)


@settings(max_examples=40, **COMMON)
@given(programs())
def test_the_search_equals_brute_force_on_random_graphs(program):
    """Every partition of the ops (movement ops glued to the next, as the search does)
    enumerated: the search's cost is the least, and never above the greedy's."""
    target = load_target("sn40l").with_launch("hardware")
    ops = lowered_ops(program)
    steps = _steps(ops)
    if len(steps) > 8:  # Bell(8) = 4,140 partitions: enough
        return

    def flat(units):
        return [op for k in units for op in steps[k]]

    def fits(units):
        return can_fuse_dataflow(flat(units), target).ok

    def cost(units):
        group = flat(units)
        if all(op.name == "df.reshape" for op in group):
            return 0
        return kernel_cycles(group, target)

    best = brute_force(step_graph(steps), fits, cost)
    groups, searched = partition_searched(ops, target, limit=10**6)
    greedy = sum(kernel_cycles(g, target) for g in partition_dataflow(ops, target))
    assert searched.cycles == best <= greedy
    # the partition handed back costs what the search says
    units = [tuple(k for k, step in enumerate(steps) if step[0] in set(g)) for g in groups]
    assert sum(cost(u) for u in units) == best


def test_an_incumbent_is_beaten_only_by_a_cheaper_partition():
    """The toy of the two chains: with the greedy's cost in hand the search finds the
    optimum below it, and says so when nothing is cheaper (no groups, the incumbent)."""
    graph = nx.DiGraph([(0, 2), (1, 3)])  # chains 0->2 and 1->3, interleaved

    def cost(units):
        return 1 if set(units) in ({0, 2}, {1, 3}) else 5 * len(units)

    best = brute_force(graph, lambda u: True, cost)
    found = search_partition(graph, lambda u: True, cost, 10_000, incumbent=20)
    assert found.cycles == best == 2 and sorted(found.groups) == [(0, 2), (1, 3)]
    none = search_partition(graph, lambda u: True, cost, 10_000, incumbent=2)
    assert none.groups == [] and none.cycles == 2 and none.complete


@settings(max_examples=25, **COMMON)
@given(programs())
def test_the_bounds_are_below_the_costs_they_prune(program):
    """Every kernel of a random graph: ``kernel_bound`` (with and without its plan) is at
    most its modeled cycles, and the bound of the whole less two cycles a unit (the
    search's ``rest``) is at most the cheapest partition of it (brute force)."""
    target = load_target("sn40l-node").with_launch("hardware")  # p2p and fill counted
    ops = lowered_ops(program)
    steps = _steps(ops)
    if len(steps) > 7:
        return

    def flat(units):
        return [op for k in units for op in steps[k]]

    def fits(units):
        return can_fuse_dataflow(flat(units), target).ok

    graph = step_graph(steps)
    for mask in ideals(graph)[1:]:
        units = tuple(k for k in range(len(steps)) if mask >> k & 1)
        group = flat(units)
        if not fits(units) or all(op.name == "df.reshape" for op in group):
            continue
        cycles = kernel_cycles(group, target)
        assert kernel_bound(group, target) <= cycles
        assert kernel_bound(group, target, plan_streams(group)) <= cycles

    def cost(units):
        group = flat(units)
        return 0 if all(op.name == "df.reshape" for op in group) else kernel_cycles(group, target)

    least = brute_force(graph, fits, cost)
    if not all(op.name == "df.reshape" for op in ops):  # views alone: no kernel, no bound
        assert kernel_bound(ops, target) - 2 * len(steps) <= least


def test_phase_bound_by_hand():
    """Two phases on 10 PCUs: stages of 40 and 40 PCU-cycles in phase 0, 20 in phase 1
    (C = 100, n = 3). Phase 0 holds at most 2·2 + 7·80/100 = 9.6 PCUs: ≥ 80/9.6 = 8.33;
    phase 1 at most 2 + 7·20/100 = 3.4: ≥ 20/3.4 = 5.88; the bound is int(14.22) = 14.
    One PCU each when stages outnumber PCUs: the slowest stage of each phase."""
    assert phase_bound([(0, 40.0), (0, 40.0), (1, 20.0)], 10) == 14
    assert phase_bound([(0, 40.0), (0, 30.0), (1, 20.0)], 2) == 40 + 20
    assert phase_bound([], 10) == 0
