"""Test-only training job functions (hand-written stand-ins for ``fleet.trainer.job.run``).

They live in an importable module so a spawned worker process (or a Dask worker) can load them
by name, exactly as it loads the real job function.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fleet.trainer.job import TrainJob, TrainOutput, run

HOLD_S = 120.0
"""Longest a held job waits to be killed before it gives up (the test failed by then)."""


def held_once(marker: str, job: TrainJob) -> TrainOutput:
    """The first call writes ``marker`` (with its pid) and waits to be killed; later calls train.

    Lets a drill kill the worker while it is surely inside a job. Bind ``marker`` with
    ``functools.partial`` (picklable, unlike a closure).
    """
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        deadline = time.monotonic() + HOLD_S
        while time.monotonic() < deadline:
            time.sleep(0.05)
        raise RuntimeError(f"held job was not killed within {HOLD_S} s")
    return run(job)


def fails_first(counter: str, failures: int, job: TrainJob) -> TrainOutput:
    """Raise ``RuntimeError`` on the first ``failures`` calls (counted in file ``counter``)."""
    path = Path(counter)
    n = int(path.read_text()) if path.exists() else 0
    path.write_text(str(n + 1))
    if n < failures:
        raise RuntimeError(f"injected failure #{n + 1}: fit ran out of memory")
    return run(job)
