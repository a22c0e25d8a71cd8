"""``POST /v1/chat``: one message to the supervisor, answered whole or streamed as NDJSON lines.

The chat itself is a callable given to the app, ``chat(thread_id, message, user)`` yielding the
reply in pieces; the caller's token identity is the ``user`` (the chat's action requests go
through the same policy and approvals as the agents').
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse

from apps.api.auth import Caller
from apps.api.errors import documented
from apps.api.models import ChatChunk, ChatIn, ChatOut
from fleet.errors import FleetError

log = logging.getLogger(__name__)

Chat = Callable[[str, str, str], Iterator[str]]
"""``chat(thread_id, message, user)`` -> the reply, in pieces."""
NDJSON = "application/x-ndjson"
NO_CHAT = (
    "chat is not configured in this API process; start it with `flywheel serve` (which wires "
    "the supervisor chat), or use `flywheel chat`"
)


def new_thread_id() -> str:
    """A fresh conversation id."""
    return f"chat-{uuid.uuid4().hex[:12]}"


def chat_router(chat: Chat | None, caller: Caller) -> APIRouter:
    """The chat route; with ``chat`` None it answers 503 saying how to enable it."""
    router = APIRouter(tags=["chat"])

    @router.post(
        "/v1/chat", response_model=ChatOut,
        responses={200: {"content": {NDJSON: {"schema": ChatChunk.model_json_schema()}},
                         "description": f"The reply; with `stream=true`, {NDJSON} lines of "
                                        "ChatChunk, the last with `done` or `error`."},
                   **documented(400, 401, 404, 409, 422, 503)},
    )
    def post_chat(
        body: ChatIn,
        stream: bool = Query(False, description=f"Stream the reply as {NDJSON} chunks."),
        user: str = Depends(caller),
    ) -> ChatOut | StreamingResponse:
        """Send one message; the reply comes whole, or streamed line by line."""
        if chat is None:
            raise HTTPException(503, NO_CHAT)
        thread = body.thread_id or new_thread_id()
        pieces = iter(chat(thread, body.message, user))
        if not stream:
            return ChatOut(thread_id=thread, reply="".join(pieces))
        # Take the first piece now, so a failure before the reply starts (unknown service, bad
        # request) still gets its proper status code instead of a 200 with an error line.
        first = next(pieces, None)
        return StreamingResponse(_lines(thread, first, pieces), media_type=NDJSON)

    return router


def _lines(thread: str, first: str | None, rest: Iterator[str]) -> Iterator[str]:
    """The NDJSON body: one line per piece, then a ``done`` line, or an ``error`` line."""
    if first is not None:
        yield _line(ChatChunk(thread_id=thread, delta=first))
    try:
        for piece in rest:
            yield _line(ChatChunk(thread_id=thread, delta=piece))
    except FleetError as exc:
        yield _line(ChatChunk(thread_id=thread, error=str(exc)))
        return
    except Exception as exc:
        # The 200 status is already sent; the only way left to tell the client is a last line.
        log.exception("chat stream of thread %s failed", thread)
        yield _line(ChatChunk(thread_id=thread,
                              error=f"the reply failed ({type(exc).__name__}); see the server "
                                    "log"))
        return
    yield _line(ChatChunk(thread_id=thread, done=True))


def _line(chunk: ChatChunk) -> str:
    return chunk.model_dump_json(exclude_defaults=False) + "\n"
