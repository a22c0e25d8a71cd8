"""Default detector thresholds in one frozen config, overridable per service from its policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

PREFIXES = ("histogram", "psi", "ks", "quality", "performance", "regression", "canary")
"""Detector names; a config field ``<prefix>_<arg>`` is constructor argument ``arg`` of it."""


@dataclass(frozen=True)
class DetectorConfig:
    """Every detector threshold with its default.

    ``Policy.thresholds`` keys are these field names, e.g.
    ``{"psi_threshold": 0.25, "performance_min_effect": 0.03}``. :meth:`kwargs` turns one
    detector's fields into its constructor arguments.

    Example:
        >>> cfg = DetectorConfig.from_thresholds({"psi_threshold": 0.3, "canary_min_samples": 500})
        >>> cfg.kwargs("psi")
        {'threshold': 0.3, 'min_count': 200}
        >>> cfg.canary_min_samples
        500
    """

    histogram_n_bins: int = 10
    """Value bins per feature, at reference-window quantiles."""
    psi_threshold: float = 0.2
    """PSI above which a feature has drifted."""
    psi_min_count: int = 200
    """Current values a feature needs before PSI can flag it."""
    ks_alpha: float = 0.001
    """Significance of the binned KS test per (service, feature)."""
    ks_min_statistic: float = 0.1
    """Smallest CDF gap that counts as drift."""
    ks_min_count: int = 200
    """Current values a feature needs before KS can flag it."""
    quality_max_null_rate: float = 0.05
    """Null share per feature above which it is flagged."""
    quality_max_out_of_range_rate: float = 0.01
    """Share outside the schema range above which a feature is flagged."""
    quality_max_duplicate_rate: float = 0.05
    """Duplicate-row share above which a window is a duplicate burst."""
    quality_min_label_coverage: float = 0.5
    """Labelled share of due rows below which labels are missing."""
    quality_max_rejected_rate: float = 0.01
    """Share of requests refused by the schema above which it is flagged."""
    quality_min_rows: int = 100
    """Rows a window needs before any quality signal."""
    performance_threshold: float = 11.0
    """CUSUM log-likelihood-ratio alarm level (about 0.01 false alarms per 10,000 events)."""
    performance_min_effect: float = 0.02
    """Smallest error-rate rise worth an alarm (absolute)."""
    performance_scales: int = 3
    """Effect sizes watched in parallel (2x, 4x, 8x ``min_effect``)."""
    performance_warmup: int = 300
    """Labelled events after a reset spent learning the baseline error rate."""
    performance_baseline_rows: int = 2_000
    """Labelled events after a reset whose mean error is the baseline; then it is held."""
    regression_latency_rel: float = 0.2
    """Relative growth of a latency quantile that counts as a regression."""
    regression_latency_abs_ms: float = 10.0
    """Absolute growth (ms) a latency regression also needs."""
    regression_error_rel: float = 0.5
    """Relative error-rate growth that counts as a regression."""
    regression_error_abs: float = 0.02
    """Absolute error-rate growth a regression also needs."""
    regression_alpha: float = 0.01
    """Significance of the error-rate regression test."""
    regression_min_samples: int = 200
    """Requests each window needs before a regression can be flagged."""
    canary_min_samples: int = 150
    """Samples each arm needs before the canary can pass or fail."""
    canary_alpha: float = 0.05
    """Significance of the canary tests."""
    canary_min_effect: float = 0.02
    """Error-rate rise (absolute) that fails a canary when significant."""
    canary_margin: float = 0.05
    """Non-inferiority margin of the error rate (absolute) a pass must show."""
    canary_latency_margin: float = 0.1
    """Relative p50/p95 slowdown that fails (when significant) or blocks a pass."""

    @classmethod
    def from_thresholds(cls, thresholds: Mapping[str, float]) -> DetectorConfig:
        """The defaults with a policy's ``thresholds`` applied.

        Raises:
            ValueError: naming an unknown key (with the allowed ones) or a non-integral value
                for a count.
        """
        return cls().with_overrides(thresholds)

    def with_overrides(self, thresholds: Mapping[str, float]) -> DetectorConfig:
        """A copy with some fields replaced; keys and checks as :meth:`from_thresholds`."""
        types = {f.name: f.type for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in thresholds.items():
            if key not in types:
                raise ValueError(
                    f"unknown detector threshold {key!r}; allowed: {', '.join(sorted(types))}"
                )
            if types[key] in (int, "int"):
                if float(value) != int(value):
                    raise ValueError(f"threshold {key!r} is a count; got {value!r}")
                value = int(value)
            changes[key] = value if types[key] in (int, "int") else float(value)
        return replace(self, **changes)

    def kwargs(self, prefix: str) -> dict[str, Any]:
        """Constructor arguments of one detector (``prefix`` from :data:`PREFIXES`)."""
        if prefix not in PREFIXES:
            raise ValueError(f"unknown detector {prefix!r}; allowed: {', '.join(PREFIXES)}")
        head = prefix + "_"
        return {k[len(head):]: v for k, v in asdict(self).items() if k.startswith(head)}
