"""Where a sweep's tasks run: in this process, on local worker processes, or as Ray tasks
on a Ray cluster. Each gives back results as tasks finish, whatever order they finish in.

Local processes need no server (``--jobs N``); Ray (``--ray``, an optional dependency:
``pip install 'coec[ray]'``) starts a local cluster, or joins a running one
(``--ray-address``, ``ray start --head``), whose workers must have coec installed. A
value many tasks read (a model's lowered IR) is put in Ray's object store once
(``share``), not sent with every task.
"""

from __future__ import annotations

import collections
import queue
import socket
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from coec.ir.errors import ConfigError


class Runner:
    """Runs tasks; ``next_done`` waits for one to finish and returns (its tag, its result)."""

    def submit(self, tag, fn: Callable, *args) -> None:
        raise NotImplementedError

    def next_done(self) -> tuple:
        raise NotImplementedError

    @property
    def pending(self) -> int:
        raise NotImplementedError

    def share(self, value):
        """How a value that many tasks take is passed to them (here: as it is)."""
        return value

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass


class InProcess(Runner):
    """Each task run in this process, in the order submitted, when its result is asked for."""

    def __init__(self) -> None:
        self.queue: collections.deque = collections.deque()

    def submit(self, tag, fn, *args) -> None:
        self.queue.append((tag, fn, args))

    def next_done(self) -> tuple:
        tag, fn, args = self.queue.popleft()
        return tag, fn(*args)

    @property
    def pending(self) -> int:
        return len(self.queue)


class Processes(Runner):
    """Local worker processes (``concurrent.futures``): no server to start."""

    def __init__(self, jobs: int) -> None:
        self.pool = ProcessPoolExecutor(max_workers=jobs)
        self.finished: queue.SimpleQueue = queue.SimpleQueue()
        self.running = 0

    def submit(self, tag, fn, *args) -> None:
        future = self.pool.submit(fn, *args)
        self.running += 1
        future.add_done_callback(lambda f: self.finished.put((tag, f)))

    def next_done(self) -> tuple:
        tag, future = self.finished.get()
        self.running -= 1
        return tag, future.result()

    @property
    def pending(self) -> int:
        return self.running

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class Ray(Runner):
    """Ray tasks, one CPU each, streamed back with ``ray.wait``. Joins the Ray session this
    process already has (``ray.init`` called before), or starts one: a local cluster, or a
    connection to ``address`` (then shut down after)."""

    def __init__(self, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "--ray needs Ray, which is not installed: pip install 'coec[ray]'"
            ) from None
        self.ray = ray
        self.owned = not ray.is_initialized()
        if self.owned:
            if address:
                _check_reachable(address)
            try:
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="ERROR",
                    configure_logging=False,
                )
            except (ConnectionError, ValueError, RuntimeError) as e:
                where = f"at {address}" if address else "on this machine"
                raise ConfigError(f"cannot start or join a Ray cluster {where}: {e}") from e
        self.tasks: dict = {}  # object ref -> tag
        self.ready: collections.deque = collections.deque()  # finished, not yet returned
        self.remotes: dict[Callable, object] = {}

    def submit(self, tag, fn, *args) -> None:
        remote = self.remotes.get(fn)
        if remote is None:
            remote = self.remotes[fn] = self.ray.remote(num_cpus=1)(fn)
        self.tasks[remote.remote(*args)] = tag

    def share(self, value):
        return self.ray.put(value)

    def next_done(self) -> tuple:
        if not self.ready:  # wait for one, then take every other that has finished too
            done, rest = self.ray.wait(list(self.tasks), num_returns=1)
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0) if rest else ([], [])
            self.ready.extend(done + more)
        ref = self.ready.popleft()
        return self.tasks.pop(ref), self.ray.get(ref)

    @property
    def pending(self) -> int:
        return len(self.tasks)

    def close(self) -> None:
        for ref in self.tasks:
            self.ray.cancel(ref)
        if self.owned:
            self.ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` (or ``ray://HOST:PORT``) nothing listens on: Ray itself
    would retry for minutes before saying so."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local": Ray's own ways to find a cluster
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(
            f"no Ray cluster answers at {address} ({e.strerror or e}); start one with "
            "'ray start --head' and pass the address it prints"
        ) from None


def make_runner(jobs: int = 1, ray: bool = False, ray_address: str | None = None) -> Runner:
    """Ray when asked (``ray`` or an address), else ``jobs`` local processes (1: this one)."""
    if ray or ray_address:
        return Ray(ray_address)
    return Processes(jobs) if jobs > 1 else InProcess()
