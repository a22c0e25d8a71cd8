"""Chat with the supervisor: a service object for the API/Slack, and the ``flywheel chat`` REPL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from rich.console import Console

from apps.system import System, raw_client
from fleet.ids import check_thread_id
from graphs.chat import build_chat_graph, chat_turn
from graphs.checkpointer import RedisSaver


class ChatService:
    """Runs chat turns on Redis-persisted threads (one thread per conversation)."""

    def __init__(self, system: System):
        saver = RedisSaver(raw_client(system.fleet.r),
                           prefix=system.fleet.keys.checkpoint_prefix())
        self.graph = build_chat_graph(system.deps, system.brains, checkpointer=saver)

    @staticmethod
    def new_thread() -> str:
        """A fresh conversation id."""
        return f"chat-{uuid.uuid4().hex[:12]}"

    def reply(self, thread_id: str, text: str, *, user: str) -> str:
        """One turn; returns the whole reply.

        Raises:
            InvalidId: ``thread_id`` is not of the form of a conversation id.
        """
        check_thread_id(thread_id)
        if not thread_id.startswith("chat-"):
            thread_id = f"chat-{thread_id}"
        return chat_turn(self.graph, thread_id, text, user=user)

    def __call__(self, thread_id: str, text: str, user: str) -> Iterator[str]:
        """One turn as a stream of chunks (lines), for the HTTP API and Slack."""
        yield from self.reply(thread_id, text, user=user).splitlines(keepends=True)


def repl(system: System, console: Console, *, user: str, thread: str | None = None,
         once: str | None = None, read: Any = input) -> None:
    """Read-eval-print loop until EOF or ``quit``; ``once`` answers one message and returns."""
    chat = ChatService(system)
    thread = thread or chat.new_thread()
    if once is not None:
        console.print(chat.reply(thread, once, user=user), markup=False, highlight=False)
        return
    console.print(f"flywheel chat — thread {thread}, you are {user!r}. Type help, or quit.")
    while True:
        try:
            text = read("> ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if text in ("quit", "exit"):
            break
        if text:
            console.print(chat.reply(thread, text, user=user), markup=False, highlight=False)
