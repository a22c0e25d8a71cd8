"""Labelled streams for the replayer, evals and benchmarks: Electricity and synthetic drift."""

from fleet.datasets.elec import load_elec
from fleet.datasets.stream import DriftStream
from fleet.datasets.synthetic import irregular_points, rotating_hyperplane, sea, stationary

__all__ = [
    "DriftStream", "irregular_points", "load_elec", "rotating_hyperplane", "sea", "stationary",
]
