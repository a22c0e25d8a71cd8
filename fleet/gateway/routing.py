"""Pure routing: which version answers a request, and which scores it in shadow."""

from __future__ import annotations

import hashlib

from fleet.registry.records import Mode

_SCALE = float(1 << 64)


def bucket(request_id: str) -> float:
    """Map a request id to a stable number in ``[0, 1)``; the same id always lands the same.

    >>> bucket("abc") == bucket("abc"), 0.0 <= bucket("abc") < 1.0
    (True, True)
    """
    h = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / _SCALE


def route(
    request_id: str, *, champion: int, challenger: int | None, mode: Mode, split: float
) -> tuple[int, int | None]:
    """Return ``(answering version, shadow version or None)`` for one request.

    In canary mode the challenger answers the requests whose bucket is below ``split`` — sticky,
    so a client retrying the same request id sees the same version. In shadow mode the champion
    answers everything and the challenger scores everything silently.

    >>> route("r1", champion=1, challenger=None, mode=Mode.FULL, split=0.0)
    (1, None)
    >>> route("r1", champion=1, challenger=2, mode=Mode.SHADOW, split=0.0)
    (1, 2)
    """
    if challenger is None or mode is Mode.FULL:
        return champion, None
    if mode is Mode.SHADOW:
        return champion, challenger
    return (challenger if bucket(request_id) < split else champion), None
