"""Reads telemetry back: recent events, incremental tails, and labels joined to predictions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import redis

from fleet.keys import Keys
from fleet.telemetry.events import LabelEvent, PredictionEvent
from fleet.telemetry.window import LabelledWindow

Range = tuple[str, str]
"""An inclusive range of telemetry stream ids ``(first, last)``, as kept for quarantines."""


def stream_id_key(sid: str) -> tuple[int, int]:
    """Redis stream id ``"<ms>-<seq>"`` as a sortable pair (ids do not sort as strings).

    >>> stream_id_key("1700-8") < stream_id_key("1700-26") and not "1700-8" < "1700-26"
    True
    """
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


def in_ranges(sid: str, ranges: Sequence[Range]) -> bool:
    """Whether stream id ``sid`` falls inside any of the inclusive ``ranges``.

    >>> in_ranges("5-0", [("1-0", "9-0")]), in_ranges("10-0", [("1-0", "9-0")])
    (True, False)
    """
    k = stream_id_key(sid)
    return any(stream_id_key(a) <= k <= stream_id_key(b) for a, b in ranges)


class TelemetryReader:
    """Queries the prediction and label streams of services."""

    def __init__(self, r: redis.Redis, keys: Keys):
        self.r = r
        self.keys = keys

    def recent_predictions(self, service: str, count: int) -> list[tuple[str, PredictionEvent]]:
        """The last ``count`` prediction events as ``(stream id, event)``, oldest first."""
        rows = self.r.xrevrange(self.keys.telemetry(service), count=count)
        return [(sid, PredictionEvent.decode(f["d"])) for sid, f in reversed(rows)]

    def predictions_after(
        self, service: str, after_id: str, count: int = 10_000
    ) -> list[tuple[str, PredictionEvent]]:
        """Prediction events strictly after ``after_id`` ('0' for the beginning), oldest first."""
        start = "-" if after_id in ("", "0", "0-0") else f"({after_id}"
        rows = self.r.xrange(self.keys.telemetry(service), min=start, count=count)
        return [(sid, PredictionEvent.decode(f["d"])) for sid, f in rows]

    def labels_after(
        self, service: str, after_id: str, count: int = 10_000
    ) -> list[tuple[str, LabelEvent]]:
        """Label events strictly after ``after_id``, oldest first."""
        start = "-" if after_id in ("", "0", "0-0") else f"({after_id}"
        rows = self.r.xrange(self.keys.labels(service), min=start, count=count)
        return [(sid, LabelEvent.decode(f["d"])) for sid, f in rows]

    def label_map(self, service: str, count: int) -> dict[str, float]:
        """The last ``count`` labels as ``{request_id: label}`` (a later label wins)."""
        rows = self.r.xrevrange(self.keys.labels(service), count=count)
        out: dict[str, float] = {}
        for _, f in reversed(rows):
            ev = LabelEvent.decode(f["d"])
            out[ev.request_id] = ev.label
        return out

    def labelled_window(
        self,
        service: str,
        rows: int,
        *,
        version: int | None = None,
        include_shadow: bool = False,
        exclude: Sequence[Range] = (),
        feature_names: Sequence[str] = (),
        scan_limit: int | None = None,
        since_ts: float | None = None,
    ) -> LabelledWindow:
        """The most recent ``rows`` predictions that have labels, joined, oldest first.

        Args:
            service: service name.
            rows: labelled rows wanted (fewer are returned if the streams hold fewer).
            version: only predictions answered (or shadow-scored) by this version.
            include_shadow: also use shadow-scored events (for comparing versions).
            exclude: quarantined stream-id ranges; rows inside are never returned.
            feature_names: column names to attach to the window.
            scan_limit: most prediction events to scan back (default ``rows * 4``).
            since_ts: only predictions made at or after this time (e.g. a drift's onset).
        """
        labels = self.label_map(service, count=max(rows * 3, 1_000))
        limit = scan_limit or rows * 4
        picked: list[tuple[str, PredictionEvent, float]] = []
        end = "+"
        scanned = 0
        while len(picked) < rows and scanned < limit:
            batch = self.r.xrevrange(
                self.keys.telemetry(service), max=end, count=min(2_000, limit - scanned)
            )
            if not batch:
                break
            scanned += len(batch)
            end = f"({batch[-1][0]}"
            for sid, f in batch:
                ev = PredictionEvent.decode(f["d"])
                if since_ts is not None and ev.ts < since_ts:
                    scanned = limit  # older than the bound: nothing further back qualifies
                    break
                if ev.shadow and not include_shadow:
                    continue
                if version is not None and ev.version != version:
                    continue
                y = labels.get(ev.request_id)
                if y is None or (exclude and in_ranges(sid, exclude)):
                    continue
                picked.append((sid, ev, y))
                if len(picked) >= rows:
                    break
        picked.reverse()
        return _window(service, picked, tuple(feature_names))


def _window(
    service: str, picked: Iterable[tuple[str, PredictionEvent, float]], names: tuple[str, ...]
) -> LabelledWindow:
    items = list(picked)
    n = len(items)
    d = len(items[0][1].features) if n else len(names)
    X = np.full((n, d), np.nan)
    for i, (_, ev, _) in enumerate(items):
        X[i] = [np.nan if v is None else v for v in ev.features]
    return LabelledWindow(
        service=service,
        X=X,
        y=np.array([y for _, _, y in items], dtype=np.float64),
        predictions=np.array(
            [np.nan if ev.prediction is None else ev.prediction for _, ev, _ in items]
        ),
        versions=np.array([ev.version for _, ev, _ in items], dtype=np.int64),
        request_ids=tuple(ev.request_id for _, ev, _ in items),
        ts=np.array([ev.ts for _, ev, _ in items], dtype=np.float64),
        first_id=items[0][0] if n else "",
        last_id=items[-1][0] if n else "",
        feature_names=names,
    )
