"""Bearer-token auth: the token says who the caller is, and that identity decides approvals.

With auth off every caller is ``anonymous``, who may decide an approval only if a policy lists
``anonymous`` as an approver.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fleet.errors import InvalidInput

ANONYMOUS = "anonymous"
"""The identity of every caller when auth is off."""

Caller = Callable[..., str]
"""A FastAPI dependency that returns the caller's identity or raises 401."""

_BEARER = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <token>`; tokens map to identities "
                "(FLYWHEEL_API_TOKENS='token=identity,...').",
)


def caller_dependency(tokens: Mapping[str, str] | None, *, auth: bool) -> Caller:
    """Build the dependency that names the caller.

    Args:
        tokens: bearer token -> identity.
        auth: False to skip checking: every caller is :data:`ANONYMOUS`.

    Raises:
        InvalidInput: auth is on but no token is configured (nobody could call the API).
    """
    if not auth:

        def anonymous() -> str:
            return ANONYMOUS

        return anonymous
    if not tokens:
        raise InvalidInput(
            "the HTTP API has auth on but no tokens: set FLYWHEEL_API_TOKENS='token=identity,...'"
            " (e.g. 's3cret=alice'), or FLYWHEEL_API_AUTH=false to let everyone in as "
            f"{ANONYMOUS!r}"
        )
    # Compare bytes: compare_digest refuses non-ASCII str, and header values can be any latin-1.
    table = [(t.encode(), who) for t, who in tokens.items()]

    def caller(creds: HTTPAuthorizationCredentials | None = Depends(_BEARER)) -> str:
        if creds is None:
            raise _unauthorized(
                "missing bearer token: send 'Authorization: Bearer <token>'", error=None
            )
        given = creds.credentials.encode("utf-8", "surrogateescape")
        # Check every token, so the time taken does not tell how much of a guess was right.
        found = [who for token, who in table if hmac.compare_digest(token, given)]
        if not found:
            raise _unauthorized("unknown bearer token; ask an admin for one", error="invalid_token")
        return found[0]

    return caller


def _unauthorized(detail: str, *, error: str | None) -> HTTPException:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})
