"""The Electricity market stream (Elec2), shipped as package data; see fleet/data/SOURCES.md."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

from fleet.datasets.stream import DriftStream

ELEC_SHA256 = "cdf901433885f29eca6911f70c0eeafb50d90596c879c30c5b99f5a2e8e734ff"


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    path = resources.files("fleet") / "data" / "elec.csv"
    with resources.as_file(path) as p, open(p) as fh:
        header = fh.readline().strip().split(",")
        data = np.loadtxt(fh, delimiter=",", dtype=np.float64)
    X = np.ascontiguousarray(data[:, :-1])
    y = data[:, -1].astype(np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y, tuple(header[:-1])


def load_elec() -> DriftStream:
    """Return the 45,312-row Electricity stream (6 features, binary ``class``), in time order."""
    X, y, names = _load()
    return DriftStream("elec", X, y, names, meta={"source": "fleet/data/SOURCES.md"})
