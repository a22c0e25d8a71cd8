"""An in-memory buffer that flushes telemetry to Redis in batches, off the request path.

The gateway adds encoded events here; a background thread (or an explicit ``flush()``) writes them
per stream in one Lua call each, inside one pipeline. If Redis is down the batch is kept and
retried, up to ``max_pending`` events; beyond that the oldest are dropped and counted, because a
serving path must never block on monitoring.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import redis

from fleet.store import is_cluster
from fleet.telemetry.writer import TelemetryWriter


class TelemetryBuffer:
    """Collects encoded events per stream key and flushes them in pipelined batches."""

    def __init__(
        self,
        writer: TelemetryWriter,
        *,
        flush_interval: float = 0.05,
        max_batch: int = 2_000,
        max_pending: int = 200_000,
        background: bool = True,
    ):
        self.writer = writer
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.dropped = 0
        self.flushed = 0
        self._pending: dict[str, list[str]] = defaultdict(list)
        self._count = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="telemetry-flush", daemon=True)
            self._thread.start()

    def add(self, stream_key: str, payload: str) -> None:
        """Queue one encoded event for ``stream_key``."""
        with self._lock:
            self._pending[stream_key].append(payload)
            self._count += 1
            full = self._count >= self.max_batch
        if full:
            if self._thread is None:
                self.flush()
            else:
                self._wake.set()

    def flush(self) -> int:
        """Write everything pending now; return how many events were written."""
        with self._lock:
            batch, self._pending = self._pending, defaultdict(list)
            self._count = 0
        if not batch:
            return 0
        n = sum(len(v) for v in batch.values())
        try:
            if is_cluster(self.writer.r):
                self._flush_each(batch)
            else:
                with self.writer.r.pipeline(transaction=False) as pipe:
                    for key, payloads in batch.items():
                        self.writer.append_encoded(key, payloads, pipe=pipe)
                    pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError):
            self._requeue(batch)
            raise
        self.flushed += n
        return n

    def _flush_each(self, batch: dict[str, list[str]]) -> None:
        """Write stream by stream, dropping each from ``batch`` once written (Redis Cluster).

        A cluster pipeline queues a script as bare EVALSHA and cannot load it on a node that
        lacks it (NOSCRIPT), so each stream's call goes alone, where redis-py loads the script;
        a failure then requeues only the streams not written yet, so nothing is written twice.
        """
        for key in list(batch):
            self.writer.append_encoded(key, batch[key])
            del batch[key]

    def _requeue(self, batch: dict[str, list[str]]) -> None:
        with self._lock:
            for key, payloads in batch.items():
                self._pending[key][:0] = payloads
                self._count += len(payloads)
            while self._count > self.max_pending:
                key = max(self._pending, key=lambda k: len(self._pending[k]))
                drop = min(len(self._pending[key]), self._count - self.max_pending)
                del self._pending[key][:drop]
                self._count -= drop
                self.dropped += drop

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except (redis.ConnectionError, redis.TimeoutError):
                self._stop.wait(min(1.0, self.flush_interval * 10))

    def close(self) -> None:
        """Stop the background thread after a last flush."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()
