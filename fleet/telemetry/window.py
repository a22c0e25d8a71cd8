"""A window of recent labelled predictions: what training, validation and evaluation read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelledWindow:
    """Predictions joined to their labels, oldest first.

    Rows whose features contained nulls are kept (as NaN) so the Data Steward can see them;
    training code decides what to drop.
    """

    service: str
    X: np.ndarray
    """Features, shape ``(n, d)``, float64 with NaN for nulls."""
    y: np.ndarray
    """Ground-truth labels, shape ``(n,)``."""
    predictions: np.ndarray
    """What the serving version answered, shape ``(n,)`` (NaN where it errored)."""
    versions: np.ndarray
    """Version that answered each row, shape ``(n,)``, int64."""
    request_ids: tuple[str, ...]
    ts: np.ndarray
    """Event time of each prediction, seconds."""
    first_id: str = ""
    """Telemetry stream id of the oldest row ('' when empty)."""
    last_id: str = ""
    """Telemetry stream id of the newest row ('' when empty)."""
    feature_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def bounds(self) -> dict[str, object]:
        """The window as lineage metadata: ``{"from", "to", "rows"}``."""
        return {"from": self.first_id, "to": self.last_id, "rows": len(self)}

    @classmethod
    def from_arrays(
        cls,
        service: str,
        X: np.ndarray,
        y: np.ndarray,
        *,
        feature_names: tuple[str, ...] = (),
        start: int = 0,
    ) -> LabelledWindow:
        """Wrap plain arrays (a dataset slice) as a window; ids are row numbers from ``start``."""
        n = len(y)
        return cls(
            service=service,
            X=np.asarray(X, dtype=np.float64),
            y=np.asarray(y),
            predictions=np.full(n, np.nan),
            versions=np.zeros(n, dtype=np.int64),
            request_ids=tuple(str(start + i) for i in range(n)),
            ts=np.zeros(n),
            first_id=f"row-{start}" if n else "",
            last_id=f"row-{start + n - 1}" if n else "",
            feature_names=feature_names,
        )
