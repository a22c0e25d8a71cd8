"""The monitor's own settings (windows, batching, deadlines) and per-service detector thresholds.

A service's ``Policy.thresholds`` keys are the field names of
:class:`~fleet.detectors.DetectorConfig` (``psi_threshold``, ``performance_min_effect``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from fleet.detectors import DetectorConfig
from fleet.schema import Policy


@dataclass(frozen=True)
class MonitorConfig:
    """How the monitor windows, batches and paces its work (detector thresholds live in policies).

    Example:
        >>> MonitorConfig().block_rows
        250
    """

    reference_rows: int = 1_000
    """Answered champion events that make the reference window after a champion change."""
    window_rows: int = 1_000
    """Events in a current window (features, per-version latency and errors, labelled errors)."""
    n_blocks: int = 4
    """Blocks a window is kept in; it slides by ``window_rows / n_blocks`` events."""
    batch_services: int = 500
    """Services read and detected together (one pipelined read, one detector call per kind)."""
    max_events: int = 50_000
    """Most prediction (and label) events read per service per tick; a backlog takes more ticks."""
    join_rows: int = 20_000
    """Recent answered predictions kept per service to join late labels to (request id map)."""
    label_grace_blocks: int = 1
    """Newest blocks left out of label coverage: their labels may still be on the way."""
    canary_deadline_s: float = 3_600.0
    """A canary still inconclusive this long after it started raises ``canary_inconclusive``."""
    anchors: int = 128
    """(labelled index, event index, time) anchors kept to date a performance change."""

    def __post_init__(self) -> None:
        if self.window_rows % self.n_blocks:
            raise ValueError(
                f"window_rows ({self.window_rows}) must be a multiple of n_blocks ({self.n_blocks})"
            )
        if min(self.reference_rows, self.window_rows, self.batch_services, self.max_events) < 1:
            raise ValueError(
                "reference_rows, window_rows, batch_services and max_events must be >= 1")

    @property
    def block_rows(self) -> int:
        """Events per block."""
        return self.window_rows // self.n_blocks


def detector_config(policy: Policy) -> DetectorConfig:
    """The detector thresholds of a service: defaults, its policy's overrides, its canary size.

    ``Policy.canary_min_samples`` sets the canary's minimum unless ``thresholds`` names
    ``canary_min_samples`` itself.

    Raises:
        ValueError: an unknown threshold name or a non-integral count (the message lists the
            allowed names).

    Example:
        >>> detector_config(Policy(canary_min_samples=50, thresholds={"psi_threshold": 0.3}))
        ... # doctest: +ELLIPSIS
        DetectorConfig(...psi_threshold=0.3...canary_min_samples=50...)
    """
    return _config(policy.canary_min_samples, tuple(sorted(policy.thresholds.items())))


@lru_cache(maxsize=1_024)
def _config(canary_min_samples: int, thresholds: tuple[tuple[str, float], ...]) -> DetectorConfig:
    # Shared objects for equal policies: the tick groups services by config in O(1) each.
    overrides: dict[str, float] = {"canary_min_samples": canary_min_samples}
    overrides.update(thresholds)
    return DetectorConfig.from_thresholds(overrides)
