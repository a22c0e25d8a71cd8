"""Validators of the ids that come from users (HTTP, CLI, Slack, chat) and end up in Redis keys.

One function per kind of id. The stores call them at the entry of their public methods, so an id
shaped like another key (``open:INC:DIGEST`` as an approval id) never reaches Redis: it is an
:class:`~fleet.errors.InvalidId`, which the HTTP API answers with 422 and the CLI with one line.
"""

from __future__ import annotations

import operator
import re
from typing import Any

from fleet.errors import InvalidId
from fleet.keys import check_service_name

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""Approval and incident ids: no ``:``, ``{`` or ``}``, so they cannot spell another key."""
_THREAD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
"""Conversation ids may hold ``:`` (``slack:CHANNEL:TS``); they only key checkpoint data."""
MAX_VERSION = 2**53
"""Version numbers are counters; anything larger is not one (and loses precision in JSON)."""


def _check(value: Any, rule: re.Pattern[str], what: str, example: str, chars: str) -> str:
    if not isinstance(value, str) or not rule.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise InvalidId(
            f"invalid {what} {shown}: {what}s are 1-128 letters, digits, {chars} starting with "
            f"a letter or digit (like {example})"
        )
    return value


def check_approval_id(value: Any) -> str:
    """Return ``value`` if it can be an approval id, else raise :class:`InvalidId`.

    >>> check_approval_id("apr-1a2b3c4d5e6f")
    'apr-1a2b3c4d5e6f'
    >>> check_approval_id("open:inc-1:abc")
    Traceback (most recent call last):
    ...
    fleet.errors.InvalidId: invalid approval id 'open:inc-1:abc': approval ids are 1-128 letters, digits, '_', '.', '-' starting with a letter or digit (like apr-1a2b3c4d5e6f)
    """  # noqa: E501
    return _check(value, _PLAIN, "approval id", "apr-1a2b3c4d5e6f", "'_', '.', '-'")


def check_incident_id(value: Any) -> str:
    """Return ``value`` if it can be an incident id, else raise :class:`InvalidId`.

    >>> check_incident_id("inc-elec-performance-3")
    'inc-elec-performance-3'
    """
    return _check(value, _PLAIN, "incident id", "inc-elec-performance-3", "'_', '.', '-'")


def check_thread_id(value: Any) -> str:
    """Return ``value`` if it can be a conversation id, else raise :class:`InvalidId`.

    >>> check_thread_id("slack:C1:1700000000.000100")
    'slack:C1:1700000000.000100'
    """
    return _check(value, _THREAD, "thread id", "chat-1a2b3c4d5e6f", "'_', '.', ':', '-'")


def check_service(value: Any) -> str:
    """Return ``value`` if it is a valid service name, else raise :class:`InvalidId`.

    The rule is :func:`fleet.keys.check_service_name`'s.

    >>> check_service("elec")
    'elec'
    """
    try:
        return check_service_name(value)
    except ValueError as exc:
        raise InvalidId(str(exc)) from None


def check_version_number(value: Any) -> int:
    """Return ``value`` if it is a version number (a positive int), else raise :class:`InvalidId`.

    Integers of any kind (numpy's too) pass; bools, floats and strings do not.

    >>> check_version_number(3)
    3
    """
    try:
        number = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        number = None
    if number is None or not 1 <= number <= MAX_VERSION:
        shown = repr(value)[:80]
        raise InvalidId(f"invalid version number {shown}: versions are whole numbers from 1")
    return number
