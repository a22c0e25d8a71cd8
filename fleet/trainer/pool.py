"""The trainer's executor, replaced when it breaks, and the health it reports.

A local ``ProcessPoolExecutor`` whose worker dies (SIGKILL, the OOM killer) is broken for good:
every later ``submit`` raises ``BrokenProcessPool``. :class:`WorkerPool` notices that on submit,
on a job's result and on a health check, and swaps in a fresh executor from its factory, so
training goes on without restarting the process. Any ``concurrent.futures.Executor`` works (a
thread pool in tests, a Dask ``Client.get_executor()`` for a cluster).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

ExecutorFactory = Callable[[], Executor]
"""Builds a fresh executor (called once at start and again after each breakage)."""


def local_pool(max_workers: int = 1) -> ProcessPoolExecutor:
    """The embedded default: worker processes started with ``spawn``.

    "spawn": a forked child of a threaded parent (Redis pools, gateways) can deadlock.
    """
    return ProcessPoolExecutor(max_workers=max_workers,
                               mp_context=multiprocessing.get_context("spawn"))


@dataclass(frozen=True)
class TrainerHealth:
    """What the trainer's pool looks like now (reported by the loop and ``/healthz``)."""

    state: Literal["ok", "broken"]
    """``broken``: the executor cannot run jobs and could not be replaced."""
    rebuilds: int = 0
    """Times a broken executor was replaced since the process started."""
    backend: str = "local"
    """Executor kind: ``local`` (process pool), ``dask`` or the executor's class name."""
    error: str | None = None
    """Why it last broke (or why it cannot be replaced)."""
    workers: tuple[int, ...] = field(default_factory=tuple)
    """Process ids of a local pool's live workers (empty for other executors)."""

    @property
    def summary(self) -> str:
        """``ok``, ``rebuilt N times`` or ``broken: why``, for one log field or health line."""
        if self.state == "broken":
            return f"broken: {self.error}"
        return f"rebuilt {self.rebuilds} times" if self.rebuilds else "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the loop publishes it in Redis for ``/healthz``)."""
        return {"state": self.state, "summary": self.summary, "rebuilds": self.rebuilds,
                "backend": self.backend, "error": self.error, "workers": list(self.workers)}


class WorkerPool:
    """An executor that is replaced when it breaks.

    Args:
        factory: builds the executor, now and after each breakage; None with ``executor``: a
            shared executor this pool never replaces nor shuts down (it reports ``broken``).
        executor: a shared executor to use instead of building one.
        backend: the name health reports (default: ``local`` for a process pool).
        on_close: called after the pool shut down (e.g. to close a cluster client).
    """

    def __init__(
        self,
        factory: ExecutorFactory | None = None,
        *,
        executor: Executor | None = None,
        backend: str | None = None,
        on_close: Callable[[], None] | None = None,
    ):
        if factory is None and executor is None:
            factory = local_pool
        self._factory = factory if executor is None else None
        self._owned = executor is None
        self._executor: Executor = executor if executor is not None else factory()  # type: ignore[misc]
        self._on_close = on_close
        self._lock = threading.Lock()
        self._rebuilds = 0
        self._error: str | None = None
        self._broken: str | None = None
        self.backend = backend or ("local" if isinstance(self._executor, ProcessPoolExecutor)
                                   else type(self._executor).__name__)

    def submit(self, fn: Callable[..., Any], *args: Any) -> tuple[Future[Any], Executor]:
        """Submit ``fn(*args)``; return its future and the executor that runs it.

        A broken executor is replaced and the job submitted to the new one.

        Raises:
            BrokenExecutor: the executor is broken and cannot be replaced.
        """
        pool = self._executor
        try:
            return pool.submit(fn, *args), pool
        except BrokenExecutor as exc:
            self.replace(pool, exc)
            pool = self._executor
            return pool.submit(fn, *args), pool

    def replace(self, broken: Executor, cause: BaseException) -> bool:
        """Swap ``broken`` for a fresh executor if it is still the current one.

        Safe to call from a future's callback (the process pool's own manager thread): the
        broken executor is dropped, not joined; its manager thread cleans up after itself.

        Returns:
            Whether the current executor can run jobs now.
        """
        with self._lock:
            if self._executor is not broken:
                return self._broken is None  # another thread replaced it already
            why = f"{type(cause).__name__}: {cause}"[:300]
            self._error = why
            if self._factory is None:
                self._broken = f"{why} (a shared executor: restart the process to replace it)"
                return False
            try:
                self._executor = self._factory()
            except Exception as exc:  # e.g. no memory to start workers: reported as broken
                self._broken = f"{why}; replacing it failed: {type(exc).__name__}: {exc}"[:300]
                return False
            self._rebuilds += 1
            self._broken = None
            return True

    def health(self) -> TrainerHealth:
        """The pool's state; a process pool whose idle worker died is replaced here already."""
        pool = self._executor
        # ProcessPoolExecutor marks itself broken (``_broken``) as soon as a worker dies, even
        # between jobs; there is no public accessor, and waiting for the next submit to find
        # out would leave health saying "ok" about a pool that cannot run anything.
        dead = getattr(pool, "_broken", False)
        if dead and self._broken is None:
            self.replace(pool, BrokenExecutor(str(dead)))
        if self._broken is not None:
            return TrainerHealth("broken", self._rebuilds, self.backend, self._broken)
        return TrainerHealth("ok", self._rebuilds, self.backend, self._error, self.worker_pids())

    def worker_pids(self) -> tuple[int, ...]:
        """Process ids of a local pool's worker processes (empty for other executors)."""
        procs = getattr(self._executor, "_processes", None) or {}
        return tuple(sorted(p.pid for p in list(procs.values()) if p.pid is not None))

    def close(self) -> None:
        """Shut the executor down if this pool built it, then run ``on_close``."""
        if self._owned:
            try:
                self._executor.shutdown(wait=True, cancel_futures=True)
            except TypeError:  # an executor without cancel_futures (Dask's ClientExecutor)
                self._executor.shutdown(wait=True)
        if self._on_close is not None:
            self._on_close()
