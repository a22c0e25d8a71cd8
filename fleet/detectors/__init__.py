"""Pure, vectorised detectors the monitor runs on every tick: quality, drift, performance, canary.

One algorithm per module, numpy only: no I/O, clock or logging. Arrays are shaped
``(services, ...)``; each detector takes its hyperparameters as keyword arguments, ``update``
returns the detector and the frozen outcome is its ``result``.
"""

from fleet.detectors.canary import Arm, Canary, CanaryResult, Verdict
from fleet.detectors.defaults import DetectorConfig
from fleet.detectors.histogram import bin_counts, quantile_edges
from fleet.detectors.ks import KS, KSResult
from fleet.detectors.performance import CusumResult, ErrorRateCusum
from fleet.detectors.psi import PSI, PSIResult
from fleet.detectors.quality import DataQuality, QualityCounts, QualityResult
from fleet.detectors.regression import Regression, RegressionResult, WindowStats

DETECTORS = (PSI, KS, DataQuality, ErrorRateCusum, Regression, Canary)
"""Every detector class; the contract suite in tests/fleet/test_detector_contract.py covers each."""

__all__ = [
    "DETECTORS",
    "KS",
    "PSI",
    "Arm",
    "Canary",
    "CanaryResult",
    "CusumResult",
    "DataQuality",
    "DetectorConfig",
    "ErrorRateCusum",
    "KSResult",
    "PSIResult",
    "QualityCounts",
    "QualityResult",
    "Regression",
    "RegressionResult",
    "Verdict",
    "WindowStats",
    "bin_counts",
    "quantile_edges",
]
