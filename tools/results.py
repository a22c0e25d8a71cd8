"""The result shape every tool returns, and the guard that turns domain errors into it.

Results are compact JSON objects with a ``status``: ``success``, ``error`` (the model can fix its
call: the message names the bad input and the valid values), ``no_data`` (nothing to report is
not an error), ``approval_required`` or ``rejected``. Infrastructure failures (Redis down) are not
caught here: they propagate to the loop, which decides.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from enum import StrEnum
from typing import Any, ParamSpec

from fleet.errors import FleetError

P = ParamSpec("P")
MAX_CHARS = 3_000


class Status(StrEnum):
    """Outcome of one tool call."""

    SUCCESS = "success"
    ERROR = "error"
    NO_DATA = "no_data"
    APPROVAL_REQUIRED = "approval_required"
    REJECTED = "rejected"


def result(status: Status, **fields: Any) -> str:
    """Encode a tool result as compact JSON (cut to ``MAX_CHARS``; tools summarise first)."""
    text = json.dumps({"status": status.value, **fields}, default=_plain, separators=(",", ":"))
    if len(text) > MAX_CHARS:
        text = json.dumps({"status": status.value, "truncated": True,
                           "summary": text[: MAX_CHARS - 100]})
    return text


def ok(**fields: Any) -> str:
    """A ``success`` result."""
    return result(Status.SUCCESS, **fields)


def error(message: str, **fields: Any) -> str:
    """An ``error`` result whose message says what was wrong and what is allowed."""
    return result(Status.ERROR, error=message, **fields)


def guarded(fn: Callable[P, str]) -> Callable[P, str]:
    """Turn fleet domain errors raised by ``fn`` into ``error`` results the model can act on."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> str:
        try:
            return fn(*args, **kwargs)
        except FleetError as exc:
            return error(str(exc))

    return wrapper


def _plain(v: Any) -> Any:
    if hasattr(v, "model_dump"):
        return v.model_dump(mode="json")
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, float) and v != v:
        return None
    return str(v)
