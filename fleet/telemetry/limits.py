"""What an untrusted event may contain: the time window, id pattern, numbers, versions and classes.

Pure checks over one :class:`Limits` value. The time comes in as ``now`` (the injected clock's),
never from the wall clock here. A check raises :class:`InvalidInput` naming the field, a short
summary of the value received and what is allowed; the caller dead-letters the event with it.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fleet.errors import InvalidInput

TS_MIN = 946_684_800.0
"""Earliest event time accepted: 2000-01-01T00:00:00Z (seconds since the epoch)."""
TS_AHEAD_S = 86_400.0
"""How far past the clock's now an event time may be (clock skew between hosts)."""
MAX_LATENCY_MS = 3_600_000.0
"""Largest latency accepted, one hour; a request slower than that is a measurement error."""
MAX_RID = 128
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@/+=-]{0,127}$"
"""Request ids: 1 to 128 characters, a letter or digit first, then letters, digits and
``_ . : @ / + = -``. Ids never become Redis keys; the pattern keeps them printable and bounded."""
_RID = re.compile(REQUEST_ID_PATTERN)
_MAX_FLOAT = int(sys.float_info.max)


def summarise(v: Any, width: int = 40) -> str:
    """A short, printable account of an untrusted value for an error message.

    >>> summarise("x" * 10_000)
    "string of 10000 chars 'xxxxxxxxxxxxxxxxxxxx'..."
    >>> summarise(float("inf")), summarise(True), summarise([1, 2])
    ('inf', 'boolean True', 'array of 2 items')
    """
    if isinstance(v, str):
        return f"string of {len(v)} chars {v[:20]!r}..." if len(v) > 20 else f"string {v!r}"
    if isinstance(v, bool):
        return f"boolean {v}"
    if isinstance(v, int) and abs(v) > _MAX_FLOAT:
        return f"an integer of {len(str(abs(v)))} digits"
    if isinstance(v, (int, float)) or v is None:
        return repr(v)[:width]
    if isinstance(v, (list, tuple)):
        return f"array of {len(v)} items"
    if isinstance(v, dict):
        return f"object with {len(v)} keys"
    return type(v).__name__


def finite(v: Any, where: str, *, nullable: bool = False) -> float | None:
    """``v`` as a finite float (``None`` for null when ``nullable``).

    Raises:
        InvalidInput: ``v`` is not a number, a boolean, NaN, an infinity or beyond float range.
    """
    if v is None and nullable:
        return None
    what = "a finite number or null" if nullable else "a finite number"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidInput(f"{where}: expected {what}, got {summarise(v)}")
    # JSON integers are unbounded; float() of one beyond the float range raises OverflowError.
    if (isinstance(v, int) and abs(v) > _MAX_FLOAT) or not math.isfinite(v):
        raise InvalidInput(f"{where}: expected {what}, got {summarise(v)}")
    return float(v)


def request_id(v: Any, where: str = "request_id") -> str:
    """``v`` if it is a valid request id.

    Raises:
        InvalidInput: not a string matching :data:`REQUEST_ID_PATTERN`.
    """
    if not isinstance(v, str) or not _RID.fullmatch(v):  # fullmatch: no "id\n"
        raise InvalidInput(
            f"{where}: expected 1-{MAX_RID} characters matching {REQUEST_ID_PATTERN}, "
            f"got {summarise(v)}"
        )
    return v


def model_classes(models: Iterable[Any]) -> frozenset[float] | None:
    """The classes the fitted classifiers ``models`` know (their ``classes_``), as floats.

    None when no model exposes numeric classes (a regressor, or a stand-in without them).
    """
    out: set[float] = set()
    for m in models:
        cls = getattr(m, "classes_", None)
        if cls is None:
            continue
        try:
            out.update(float(c) for c in cls)
        except (TypeError, ValueError):
            return None
    return frozenset(out) or None


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds events of one service are checked against at one moment."""

    now: float
    """The clock's time: events may not be more than :data:`TS_AHEAD_S` past it."""
    versions: frozenset[int] | None = None
    """The service's registered versions; None: not checked (no service context)."""
    classes: frozenset[float] | None = None
    """Classes a prediction or a label of a classifier may take; None: any finite number."""
    label_min: float | None = None
    """Lowest label allowed (declared in the schema's ``label`` spec)."""
    label_max: float | None = None
    """Highest label allowed."""

    def ts(self, v: Any, where: str = "ts") -> float:
        """Check an event time (seconds since the epoch).

        Raises:
            InvalidInput: not finite, before 2000-01-01, or more than a day past ``now``.
        """
        t = finite(v, where)
        assert t is not None
        hi = self.now + TS_AHEAD_S
        if not TS_MIN <= t <= hi:
            raise InvalidInput(
                f"{where}: {summarise(v)} is outside the accepted window [{TS_MIN:.0f} "
                f"(2000-01-01), {hi:.0f} (now + {TS_AHEAD_S:.0f} s)] in seconds since the epoch"
            )
        return t

    def latency(self, v: Any, where: str = "latency_ms") -> float:
        """Check a latency in milliseconds: finite, in ``[0, MAX_LATENCY_MS]``."""
        lat = finite(v, where)
        assert lat is not None
        if not 0.0 <= lat <= MAX_LATENCY_MS:
            raise InvalidInput(f"{where}: expected 0 to {MAX_LATENCY_MS:.0f} ms, "
                               f"got {summarise(v)}")
        return lat

    def version(self, v: Any, where: str = "version") -> int:
        """Check a version number: an integer that is registered for the service."""
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InvalidInput(f"{where}: expected a non-negative integer, got {summarise(v)}")
        if self.versions is not None and v not in self.versions:
            known = sorted(self.versions)
            raise InvalidInput(f"{where}: version {v} does not exist; known versions: "
                               f"{known[-20:]}")
        return v

    def outcome(self, v: Any, where: str, *, nullable: bool = False) -> float | None:
        """Check a prediction or a label: finite, one of the classes, within the declared range."""
        y = finite(v, where, nullable=nullable)
        if y is None:
            return None
        if self.classes is not None and y not in self.classes:
            allowed = sorted(self.classes)
            shown = ", ".join(f"{c:g}" for c in allowed[:20])
            raise InvalidInput(f"{where}: {summarise(v)} is not one of the service's classes "
                               f"[{shown}{', ...' if len(allowed) > 20 else ''}]")
        if (self.label_min is not None and y < self.label_min) or (
                self.label_max is not None and y > self.label_max):
            raise InvalidInput(f"{where}: {summarise(v)} is outside the declared range "
                               f"[{self.label_min}, {self.label_max}]")
        return y
