"""The audit stream's archive: old entries go to JSON-lines files, fsynced, before any trim.

Order of one batch: append the entries to ``audit-YYYY-MM-DD.jsonl`` (UTC day of the entry's
``ts``), flush and fsync the files (and the directory, for a new file), record the last archived
stream id in ``keys.audit_archived``, and only then ``XTRIM MINID`` just past that id. A failed
write raises before the id moves, so nothing unarchived is ever trimmed; a crash between the
write and the id leaves duplicate lines on the next pass (each line carries its stream id), never
a gap. With archiving disabled the stream is trimmed only when ``audit_trim_unarchived`` is set.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from fleet.clock import Clock
from fleet.keys import Keys

if TYPE_CHECKING:
    from fleet.retention import PruneReport, Retention

BATCH = 1_000
"""Entries read, archived and trimmed per round."""


def next_id(stream_id: str) -> str:
    """The smallest stream id after ``stream_id`` (``XTRIM MINID`` keeps ids >= its argument).

    >>> next_id("1700000000000-4")
    '1700000000000-5'
    """
    ms, _, seq = stream_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


class AuditArchiver:
    """Archives then trims audit entries older than ``retention.audit_keep_s``."""

    def __init__(self, r: redis.Redis, keys: Keys, retention: Retention, *, clock: Clock):
        self.r, self.keys, self.retention, self.clock = r, keys, retention, clock

    def run(self, rep: PruneReport, *, dry_run: bool = False) -> None:
        """Archive and trim every entry older than the window, recording counts in ``rep``."""
        cutoff = self.clock.now() - self.retention.audit_keep_s
        directory = self.retention.audit_archive_dir
        if directory is None:
            if self.retention.audit_trim_unarchived:
                self._trim_unarchived(rep, cutoff, dry_run)
            return
        after = self.r.get(self.keys.audit_archived)
        while True:
            old = self._old_entries(after, cutoff)
            if not old:
                return
            if dry_run:
                rep.audit_archived += len(old)
                rep.audit_trimmed += len(old)
                after = old[-1][0]
                continue
            try:
                files = write_lines(directory, old)
            except OSError as exc:
                rep.errors.append(f"audit archive write to {directory} failed, nothing trimmed: "
                                  f"{exc}")
                return
            after = old[-1][0]
            self.r.set(self.keys.audit_archived, after)
            rep.audit_archived += len(old)
            rep.audit_files = sorted({*rep.audit_files, *files})
            rep.audit_trimmed += int(self.r.xtrim(self.keys.audit, minid=next_id(after),
                                                  approximate=False))

    def _old_entries(self, after: str | None, cutoff: float) -> list[tuple[str, dict[str, str]]]:
        """The next entries after ``after`` whose ``ts`` is before ``cutoff``, oldest first.

        Stops at the first younger entry: archiving is always a prefix of the stream, which is
        what makes trimming up to the recorded id safe.
        """
        lo = f"({after}" if after else "-"
        batch = self.r.xrange(self.keys.audit, min=lo, max="+", count=BATCH)
        out = []
        for sid, fields in batch:
            if float(fields.get("ts", 0)) >= cutoff:
                break
            out.append((sid, fields))
        return out

    def _trim_unarchived(self, rep: PruneReport, cutoff: float, dry_run: bool) -> None:
        """No archive, but trimming allowed: drop the old prefix of the stream."""
        after: str | None = None
        while True:
            old = self._old_entries(after, cutoff)
            if not old:
                return
            after = old[-1][0]
            rep.audit_trimmed += len(old) if dry_run else int(
                self.r.xtrim(self.keys.audit, minid=next_id(after), approximate=False))


def write_lines(directory: Path, entries: list[tuple[str, dict[str, str]]]) -> list[str]:
    """Append entries as JSON lines to one file per UTC day, fsynced; return the file names.

    Raises:
        OSError: the directory or a file could not be written (nothing may be trimmed then).
    """
    directory.mkdir(parents=True, exist_ok=True)
    by_day: dict[str, list[str]] = {}
    for sid, fields in entries:
        day = datetime.fromtimestamp(float(fields.get("ts", 0)), UTC).strftime("%Y-%m-%d")
        line: dict[str, Any] = {"id": sid, **fields}
        by_day.setdefault(day, []).append(json.dumps(line, sort_keys=True) + "\n")
    written = []
    for day, lines in sorted(by_day.items()):
        path = directory / f"audit-{day}.jsonl"
        new = not path.exists()
        with open(path, "a", encoding="utf-8") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            _fsync_dir(directory)
        written.append(str(path))
    return written


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable too (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
