"""The one shape every dataset takes: a feature matrix, labels and the known drift points."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DriftStream:
    """A labelled stream in time order.

    ``drift_points`` are the true onsets (row indices) where the concept changes; empty for real
    streams whose drifts are unknown and for stationary controls.
    """

    name: str
    """Short name used in reports, e.g. ``sea_abrupt``."""
    X: np.ndarray
    """Features, shape ``(n, d)``, float64."""
    y: np.ndarray
    """Labels, shape ``(n,)``, int64 for classification."""
    feature_names: tuple[str, ...]
    """Column names of ``X``."""
    drift_points: tuple[int, ...] = ()
    """True drift onsets (row index)."""
    drift_widths: tuple[int, ...] = ()
    """Rows each drift takes to complete (1 = abrupt); same length as ``drift_points``."""
    meta: dict[str, object] = field(default_factory=dict)
    """Generator parameters, for reports."""

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def head(self, n: int) -> DriftStream:
        """The first ``n`` rows, keeping the drift points that fall inside."""
        keep = [(p, w) for p, w in zip(self.drift_points, self.drift_widths, strict=True) if p < n]
        return DriftStream(
            self.name, self.X[:n], self.y[:n], self.feature_names,
            tuple(p for p, _ in keep), tuple(w for _, w in keep), dict(self.meta),
        )
