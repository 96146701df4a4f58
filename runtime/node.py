"""A node of N sockets running one SPMD schedule together (tensor parallelism).

Every socket executes the same schedule on its own weight shard, in its own
thread; at each collective the sockets meet at a barrier and exchange their tiles:
``df.allreduce`` hands each the sum of all partial results, ``df.allgather`` the
shards concatenated in socket order. Counts are per socket (every socket does the
same work); the ``sram->p2p`` pair is what each socket sends to its peers.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import numpy as np

from coec.backend.schedule import Schedule, as_schedule
from coec.ir.errors import ExecutionError
from coec.runtime.executor import Executor


class _Exchange:
    """Rendezvous of N threads: deposit a tile, wait, take every socket's (in socket order)."""

    def __init__(self, sockets: int, timeout_s: float = 600.0):
        self.parts: list[np.ndarray | None] = [None] * sockets
        self.barrier = threading.Barrier(sockets, timeout=timeout_s)

    def __call__(self, socket: int, x: np.ndarray) -> list[np.ndarray]:
        self.parts[socket] = x
        self.barrier.wait()
        parts = list(self.parts)
        self.barrier.wait()  # everyone has read before the next deposit
        return parts

    def reduce(self, socket: int, x: np.ndarray) -> np.ndarray:
        return np.sum(np.stack(self(socket, x)), axis=0)

    def gather(self, socket: int, x: np.ndarray, axis: int) -> np.ndarray:
        return np.concatenate(self(socket, x), axis=axis)


def run_node(
    schedule: Schedule | dict,
    weights: Sequence[Mapping[str, np.ndarray]],
    inputs: Sequence[Sequence[np.ndarray]],
    *,
    emulate_bf16: bool = False,
    step_rows: int = 256,
) -> tuple[list[list[np.ndarray]], dict]:
    """Run every socket; returns each socket's outputs and socket 0's report."""
    outs, reports = run_node_reports(
        schedule, weights, inputs, emulate_bf16=emulate_bf16, step_rows=step_rows
    )
    return outs, reports[0]


def run_node_reports(
    schedule: Schedule | dict,
    weights: Sequence[Mapping[str, np.ndarray]],
    inputs: Sequence[Sequence[np.ndarray]],
    *,
    emulate_bf16: bool = False,
    step_rows: int = 256,
) -> tuple[list[list[np.ndarray]], list[dict]]:
    """Run every socket; returns each socket's outputs and each socket's report."""
    schedule = as_schedule(schedule)  # read and checked once, for every socket
    sockets = schedule.target.sockets
    if len(weights) != sockets or len(inputs) != sockets:
        raise ExecutionError(
            f"the schedule runs on {sockets} sockets: give weights and inputs for each"
        )
    exchange = _Exchange(sockets)
    results: list = [None] * sockets
    errors: list[BaseException] = []

    def socket(s: int) -> None:
        try:
            ex = Executor(
                schedule,
                weights[s],
                emulate_bf16=emulate_bf16,
                step_rows=step_rows,
                all_reduce=lambda x, s=s: exchange.reduce(s, x),
                all_gather=lambda x, axis, s=s: exchange.gather(s, x, axis),
            )
            results[s] = ex.run(inputs[s])
        except BaseException as e:  # noqa: BLE001 - reported below, after every thread ends
            errors.append(e)
            exchange.barrier.abort()

    threads = [threading.Thread(target=socket, args=(s,)) for s in range(sockets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), None)
    if first or errors:
        raise first or ExecutionError("a socket stopped at a collective")
    return [r[0] for r in results], [r[1] for r in results]
