"""The partition search: the cheapest way to cut a DAG of ops into kernels, exactly.

A valid partition groups the ops into kernels that can run one after another: each
group convex, and the groups ordered so that every edge points forward. Such a
partition is a chain of *ideals* (downward-closed op sets) ∅ = I0 ⊂ I1 ⊂ … ⊂ In = all,
each kernel one difference ``I(k+1) − I(k)`` (which is always convex). So the cheapest
partition is a shortest path over the lattice of ideals (``by_ideals``), exact over
every valid partition. Where the lattice is too large it falls back to the cut points
of the program order (``by_cut_points``), exact over partitions into runs of that
order (a run of a topological order is always convex). The cut points are walked
first in any case: their best cutting is the incumbent the walk over ideals prunes
against.

The hardware model stays outside: ``fits(units)`` says whether a set of units may be
one kernel, ``cost(units)`` what that kernel costs (modeled cycles). Each set is asked
once. ``limit`` bounds the sets costed (a count, not a clock, so the same model and
options always get the same partition): a walk that needs more stops there, and the
search says so. Lower bounds on a kernel's cost prune what cannot beat the best way
known, and, given an incumbent partition, what cannot beat it, so a walk costs far
fewer kernels than the pairs of ideals it could.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import networkx as nx

#: the ideal lattice is walked only below this many ideals (a chain of n units has n + 1)
MAX_IDEALS = 1000

Units = tuple[int, ...]


@dataclass
class Search:
    """A search's answer and what it took."""

    groups: list[Units]  # unit indices per kernel, kernels in an executable order
    cycles: int  # the partition's modeled cost
    method: str  # "every partition" or "cut points of the program order"
    asked: int  # distinct unit sets costed (each found to fit)
    complete: bool = True


class OverLimit(Exception):
    """The search would cost more unit sets than its limit allows."""


@dataclass
class _Oracle:
    """``fits`` and ``cost`` of unit sets, each asked once, at most ``limit`` costed.

    ``bounds``: lower bounds on ``cost(units)``, cheapest first (a tighter one is asked
    only when the cheaper ones do not prune); ``rest(units)``: a lower bound on any
    partition of ``units`` into kernels; ``incumbent``: the cost of a partition already
    in hand (the greedy's), which only a cheaper one is worth finding.
    """

    fits: Callable[[Units], bool]
    cost: Callable[[Units], int]
    limit: int
    seen: dict[Units, int | None] = field(default_factory=dict)
    bounds: Sequence[Callable[[Units], int]] = ()
    rest: Callable[[Units], int] = lambda units: 0
    incumbent: int | None = None
    _fit: dict[Units, bool] = field(default_factory=dict)

    def to_go(self, units: Units) -> int:
        """``rest(units)``, when there is an incumbent to beat and units are left."""
        return self.rest(units) if self.incumbent is not None and units else 0

    def beaten(self, before: int, units: Units, best: int | None, to_go: int = 0) -> bool:
        """Whether ``before`` plus any kernel of ``units`` cannot beat ``best`` (the best
        known way to the same point), or, with ``to_go`` (a lower bound on the kernels
        after it), the incumbent."""
        ceiling = math.inf if best is None else best
        if self.incumbent is not None:
            ceiling = min(ceiling, self.incumbent - to_go)
        return any(before + bound(units) >= ceiling for bound in self.bounds)

    def fit(self, units: Units) -> bool:
        """Whether the units fit in one kernel, asked once."""
        if units not in self._fit:
            self._fit[units] = self.fits(units)
        return self._fit[units]

    def __call__(self, units: Units) -> int | None:
        """The kernel's cost, or None when the units do not fit in one kernel."""
        if not self.fit(units):
            return None
        if units not in self.seen:
            if len(self.seen) >= self.limit:
                raise OverLimit
            self.seen[units] = self.cost(units)
        return self.seen[units]


def ideals(graph: nx.DiGraph, cap: int = MAX_IDEALS) -> list[int] | None:
    """Every ideal of ``graph`` (nodes 0..n−1) as a bit mask, smallest first; None past ``cap``."""
    preds = [sum(1 << p for p in graph.predecessors(v)) for v in range(len(graph))]
    found, frontier = {0}, [0]
    while frontier:
        grown = []
        for ideal in frontier:
            for v in range(len(graph)):
                bit = 1 << v
                if not ideal & bit and preds[v] & ~ideal == 0 and ideal | bit not in found:
                    found.add(ideal | bit)
                    grown.append(ideal | bit)
                    if len(found) > cap:
                        return None
        frontier = grown
    return sorted(found, key=lambda m: (m.bit_count(), m))


def _units(mask: int) -> Units:
    return tuple(i for i in range(mask.bit_length()) if mask >> i & 1)


def by_ideals(lattice: list[int], oracle: _Oracle) -> tuple[int, list[Units]] | None:
    """The cheapest chain of ideals from ∅ to all (each step one kernel), or None.

    With an incumbent, a way is followed only while its kernels so far, the next one's
    bound and the ``rest`` of the units after it can still beat it."""
    best: dict[int, tuple[int, int]] = {0: (0, -1)}  # ideal -> (cost, previous ideal)
    full = lattice[-1]
    for n, j in enumerate(lattice[1:], 1):
        to_go = oracle.to_go(_units(full & ~j))
        # the smallest kernels first: they set a good best for ``j`` early, against which
        # the bound prunes the larger ones
        for i in reversed(lattice[:n]):
            if i.bit_count() >= j.bit_count() or i & ~j or i not in best:
                continue
            units = _units(j & ~i)
            if oracle.beaten(best[i][0], units, best.get(j, (None,))[0], to_go):
                continue
            c = oracle(units)
            if c is not None and (j not in best or best[i][0] + c < best[j][0]):
                best[j] = (best[i][0] + c, i)
    return _walk_back(best, lattice[-1])


def by_cut_points(n: int, oracle: _Oracle) -> tuple[int, list[Units]] | None:
    """The cheapest cutting of units 0..n−1 (program order) into runs, or None.

    Growing a run backwards stops at the first costed that does not fit (a longer run
    needs at least the stages and, nearly always, the SRAM of a shorter one). With an
    incumbent, what follows a run is bounded by ``rest``."""
    best: dict[int, tuple[int, int]] = {0: (0, -1)}
    for j in range(1, n + 1):
        to_go = oracle.to_go(tuple(range(j, n)))
        for i in range(j - 1, -1, -1):
            units = tuple(range(i, j))
            if i not in best or oracle.beaten(best[i][0], units, best.get(j, (None,))[0], to_go):
                continue
            c = oracle(units)
            if c is None:
                break
            if i in best and (j not in best or best[i][0] + c < best[j][0]):
                best[j] = (best[i][0] + c, i)
    return _walk_back(best, n, runs=True)


def _walk_back(best: dict, end: int, runs: bool = False) -> tuple[int, list[Units]] | None:
    if end not in best:
        return None
    groups, j = [], end
    while j:
        i = best[j][1]
        groups.append(tuple(range(i, j)) if runs else _units(j & ~i))
        j = i
    return best[end][0], groups[::-1]


def search_partition(
    graph: nx.DiGraph,
    fits: Callable[[Units], bool],
    cost: Callable[[Units], int],
    limit: int,
    bounds: Sequence[Callable[[Units], int]] = (),
    max_ideals: int = MAX_IDEALS,
    incumbent: int | None = None,
    rest: Callable[[Units], int] = lambda units: 0,
) -> Search | None:
    """The cheapest valid partition of ``graph``'s nodes 0..n−1 (numbered in program
    order), exact over every partition when its ideals are few enough, else over the
    cut points of the program order; None when no partition fits. ``bounds`` (lower
    bounds on ``cost``, cheapest first) only prune: the answer is the same without them.

    The cut points are walked first (a small space, and the best cutting found is the
    incumbent the walk over every partition then prunes against); when that second
    walk would pass ``limit``, the best cutting stands.

    With an ``incumbent`` (the cost of a partition already in hand) only cheaper
    partitions are sought: a way whose kernels so far, its next kernel's bound and
    ``rest`` (a lower bound on any partition of the units left) cannot beat it is not
    followed; when none is cheaper the answer has no groups and the incumbent's cost."""
    oracle = _Oracle(fits, cost, limit, bounds=bounds, rest=rest, incumbent=incumbent)
    best: tuple[int, list[Units]] | None = None
    method = ""

    def keep(found: tuple[int, list[Units]] | None) -> None:
        nonlocal best
        if found is not None and (oracle.incumbent is None or found[0] < oracle.incumbent):
            best, oracle.incumbent = found, found[0]

    try:
        keep(by_cut_points(len(graph), oracle))
        method = "cut points of the program order"
        lattice = ideals(graph, max_ideals)
        if lattice is not None:
            keep(by_ideals(lattice, oracle))
            method = "every partition"
    except OverLimit:  # a walk needed more kernels costed than the limit: it stops
        stopped = f"stopped at {limit:,} kernels costed"
        if not method:
            return Search([], 0, stopped, len(oracle.seen), complete=False)
        method += f" (every partition: {stopped})"
    if best is None:
        return None if incumbent is None else Search([], incumbent, method, len(oracle.seen))
    return Search(best[1], best[0], method, len(oracle.seen))
