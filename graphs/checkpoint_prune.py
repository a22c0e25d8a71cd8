"""The checkpoint store as retention sees it: which threads hold how many keys, and deleting one.

Implements :class:`fleet.retention.CheckpointThreads` over :class:`graphs.checkpointer.RedisSaver`
(deleting goes through the saver, which knows which blobs a thread's checkpoints share).
"""

from __future__ import annotations

from urllib.parse import unquote

from graphs.checkpointer import RedisSaver

_GLOB_SPECIAL = "*?[]\\"


class SaverThreads:
    """Counts and deletes the threads of one :class:`RedisSaver`."""

    def __init__(self, saver: RedisSaver):
        self.saver = saver

    def key_counts(self) -> dict[str, int]:
        """Thread id -> number of keys, from one SCAN over the saver's prefix."""
        prefix = self.saver.prefix
        escaped = "".join("\\" + c if c in _GLOB_SPECIAL else c for c in prefix)
        head = f"{prefix}:{{"
        counts: dict[str, int] = {}
        for raw in self.saver.client.scan_iter(match=escaped + ":{*}:*", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else raw
            if not key.startswith(head):
                continue
            # A quoted thread id never holds "}" (CheckpointKeys quotes it), so the first "}"
            # closes the hash tag.
            end = key.find("}", len(head))
            if end < 0:
                continue
            tid = unquote(key[len(head):end])
            counts[tid] = counts.get(tid, 0) + 1
        return counts

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and blob of one thread."""
        self.saver.delete_thread(thread_id)
