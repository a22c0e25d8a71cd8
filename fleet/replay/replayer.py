"""Replays a labelled stream through a target: batched requests, delayed labels, scheduled faults.

Everything sent is a pure function of the stream, the slice and the seed (see
:meth:`Replayer.iter_batches`); time comes from the injected clock, so a ``ManualClock`` replays
at any rate without real sleeping.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, NamedTuple

from fleet.clock import Clock
from fleet.datasets.stream import DriftStream
from fleet.errors import InvalidInput
from fleet.replay.faults import FaultSchedule, ServingFault
from fleet.replay.targets import Row, Served, Target

FaultSink = Callable[[str, str, ServingFault | None], None]
"""``sink(service, field, fault)`` turns a serving fault on, or off when ``fault`` is None;
``field`` is a version number as a string or ``"challenger"`` (see ``fault_store``)."""

ACCURACY_BLOCK = 1000
"""Rows per entry of :attr:`ReplayStats.accuracy`."""


class Batch(NamedTuple):
    """Exactly what one predict call sends, and the labels that will follow it."""

    start: int
    """Stream row index of the first row."""
    request_ids: list[str]
    rows: list[Row]
    """Features after data faults; nulls are None."""
    labels: list[Any]
    """True labels after concept faults."""


@dataclass(frozen=True)
class ReplayStats:
    """What a replay sent and how the served predictions fared."""

    rows: int = 0
    batches: int = 0
    labels_sent: int = 0
    labels_accepted: int = 0
    errors: int = 0
    """Rows answered with an error."""
    accuracy: tuple[float, ...] = ()
    """Accuracy of served predictions against the true labels per block of
    :data:`ACCURACY_BLOCK` rows (the last block may be partial; NaN if nothing was served)."""
    served_by: dict[int, int] = field(default_factory=dict)
    """Rows answered per version."""


@dataclass(frozen=True)
class BatchReport:
    """Passed to ``on_batch`` after each batch."""

    batch: Batch
    served: list[Served]
    stats: ReplayStats
    """Totals so far."""
    total_rows: int
    """Rows the whole replay will send."""


class Replayer:
    """Sends a stream to a target in batches, with delayed labels and scheduled faults.

    Args:
        target: where predictions and labels go (HTTP or in-process gateway).
        clock: paces the replay; ``ManualClock`` makes it instant and deterministic.
        rate: rows per second; 0 sends as fast as the target answers.
        batch_size: rows per predict call (batches also break where a serving fault starts or
            stops, so it covers exactly its scheduled rows).
        label_delay: a row's label is sent once the row ``label_delay`` rows later has been sent;
            labels still held back when the stream ends are sent at the end.
        seed: makes request ids and random faults reproducible.
        faults: the fault schedule.
        fault_sink: applies serving faults (e.g. ``fault_store.RedisFaultSink``); required when
            the schedule has any.

    Raises:
        InvalidInput: a bad setting, or serving faults without a sink.
    """

    def __init__(
        self,
        target: Target,
        *,
        clock: Clock,
        rate: float = 0.0,
        batch_size: int = 50,
        label_delay: int = 0,
        seed: int = 0,
        faults: FaultSchedule | None = None,
        fault_sink: FaultSink | None = None,
    ):
        if rate < 0 or batch_size < 1 or label_delay < 0:
            raise InvalidInput(
                f"need rate >= 0, batch_size >= 1, label_delay >= 0; got rate={rate!r}, "
                f"batch_size={batch_size!r}, label_delay={label_delay!r}"
            )
        self.target = target
        self.clock = clock
        self.rate = rate
        self.batch_size = batch_size
        self.label_delay = label_delay
        self.seed = seed
        self.faults = faults or FaultSchedule()
        self.fault_sink = fault_sink
        if fault_sink is None and any(f.serving for f in self.faults.faults):
            raise InvalidInput(
                "the fault schedule has serving faults (latency/errors) but no fault_sink; "
                "pass fault_sink=RedisFaultSink(r, keys)"
            )

    def request_id(self, service: str, row: int) -> str:
        """The deterministic request id of stream row ``row``."""
        return f"{service}-{self.seed}-{row}"

    def iter_batches(
        self, service: str, stream: DriftStream, start: int = 0, stop: int | None = None
    ) -> Iterator[Batch]:
        """Yield exactly the batches :meth:`run` sends, without sending anything.

        Raises:
            InvalidInput: an empty or out-of-range slice, or a fault on an unknown feature.
        """
        stop = _check_slice(stream, start, stop)
        self.faults.check(stream.feature_names)
        names = stream.feature_names
        cuts = set(range(start, stop, self.batch_size))
        cuts |= set(self.faults.serving_boundaries(start, stop))
        edges = [*sorted(cuts), stop]
        for lo, hi in pairwise(edges):
            X, y = self.faults.apply(
                stream.X[lo:hi], stream.y[lo:hi], index=lo, feature_names=names, seed=self.seed
            )
            rows = [
                {n: (None if math.isnan(v) else v) for n, v in zip(names, r, strict=True)}
                for r in X.tolist()
            ]
            ids = [self.request_id(service, i) for i in range(lo, hi)]
            yield Batch(lo, ids, rows, y.tolist())

    def run(
        self,
        service: str,
        stream: DriftStream,
        start: int = 0,
        stop: int | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> ReplayStats:
        """Replay rows ``[start, stop)`` of ``stream`` to the target.

        Serving faults are switched on and off before the batch at their start and stop rows,
        and every fault still on is cleared when the replay ends, even by an exception.
        """
        stop = _check_slice(stream, start, stop)
        tally = _Tally(start)
        held: deque[tuple[int, str, Any]] = deque()
        on: dict[str, ServingFault] = {}
        t0 = self.clock.now()
        try:
            for batch in self.iter_batches(service, stream, start, stop):
                on = self._switch_faults(service, on, self.faults.serving_at(batch.start))
                self._pace(t0, batch.start - start)
                served = self.target.predict(service, batch.rows, batch.request_ids)
                tally.add_served(batch, served)
                held.extend(zip(_rows(batch), batch.request_ids, batch.labels, strict=True))
                sent_upto = batch.start + len(batch.rows)
                self._send_labels(service, held, sent_upto - self.label_delay, tally)
                if on_batch is not None:
                    on_batch(BatchReport(batch, served, tally.stats(), stop - start))
            self._send_labels(service, held, stop, tally)
        finally:
            self._switch_faults(service, on, {})
        return tally.stats()

    def _pace(self, t0: float, rows_sent: int) -> None:
        if self.rate > 0:
            self.clock.sleep(t0 + rows_sent / self.rate - self.clock.now())

    def _send_labels(
        self, service: str, held: deque[tuple[int, str, Any]], before: int, tally: _Tally
    ) -> None:
        """Send the held labels of rows ``< before``, oldest first."""
        due: list[tuple[str, Any]] = []
        while held and held[0][0] < before:
            _, rid, label = held.popleft()
            due.append((rid, label))
        if due:
            tally.labels_accepted += self.target.feedback(service, due)
            tally.labels_sent += len(due)

    def _switch_faults(
        self, service: str, on: dict[str, ServingFault], want: dict[str, ServingFault]
    ) -> dict[str, ServingFault]:
        if self.fault_sink is None:
            return want
        for name in on.keys() - want.keys():
            self.fault_sink(service, name, None)
        for name, fault in want.items():
            if on.get(name) != fault:
                self.fault_sink(service, name, fault)
        return want


class _Tally:
    """Running totals of one replay."""

    def __init__(self, start: int):
        self.start = start
        self.rows = self.batches = self.errors = 0
        self.labels_sent = self.labels_accepted = 0
        self.correct: Counter[int] = Counter()
        self.scored: Counter[int] = Counter()
        self.served_by: Counter[int] = Counter()

    def add_served(self, batch: Batch, served: list[Served]) -> None:
        if len(served) != len(batch.rows):
            raise InvalidInput(
                f"target answered {len(served)} predictions for a batch of {len(batch.rows)} rows"
            )
        self.rows += len(batch.rows)
        self.batches += 1
        for i, (s, label) in enumerate(zip(served, batch.labels, strict=True)):
            if s["version"] is not None:
                self.served_by[int(s["version"])] += 1
            if s["error"] is not None or s["prediction"] is None:
                self.errors += s["error"] is not None
                continue
            block = (batch.start + i - self.start) // ACCURACY_BLOCK
            self.scored[block] += 1
            self.correct[block] += s["prediction"] == label

    def stats(self) -> ReplayStats:
        blocks = -(-self.rows // ACCURACY_BLOCK)
        acc = tuple(
            self.correct[b] / self.scored[b] if self.scored[b] else float("nan")
            for b in range(blocks)
        )
        return ReplayStats(
            rows=self.rows, batches=self.batches, labels_sent=self.labels_sent,
            labels_accepted=self.labels_accepted, errors=self.errors, accuracy=acc,
            served_by=dict(self.served_by),
        )


def _rows(batch: Batch) -> range:
    return range(batch.start, batch.start + len(batch.rows))


def _check_slice(stream: DriftStream, start: int, stop: int | None) -> int:
    stop = len(stream) if stop is None else stop
    if not 0 <= start < stop <= len(stream):
        raise InvalidInput(
            f"rows [{start}, {stop}) are not a slice of {stream.name!r} ({len(stream)} rows)"
        )
    return stop

