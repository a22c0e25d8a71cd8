"""Process logs: one line per event, JSON by default or readable text, with a timestamp and level.

``configure`` installs the one stderr handler of a long-running process (``flywheel run``,
``flywheel serve``). Code logs an event as ``log.info("loop.pass", extra=fields(...))``: the
message is the event name and the fields are structured, so the JSON line is flat and the text
line reads ``key=value``. :class:`AuditTail` turns the fleet's audit stream into such lines, so
every incident transition, retrain, promotion, rollback and escalation is logged exactly once, at
the one place every action already passes through, whichever process made it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from fleet.audit import Audit, AuditEntry

LogFormat = Literal["json", "text"]
FIELDS = "flywheel_fields"
"""Attribute of a log record that holds its structured fields."""
_WARN_STATUSES = frozenset({"escalated", "failed"})
_TAIL_BATCH = 500


def fields(**values: Any) -> dict[str, Any]:
    """The ``extra=`` of a structured log call: ``log.info("loop.pass", extra=fields(...))``."""
    return {FIELDS: values}


def _stamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``event`` and the fields.

    A record without fields (a library's message) keeps its text under ``message``.
    """

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102
        out: dict[str, Any] = {"ts": _stamp(record), "level": record.levelname,
                               "logger": record.name}
        extra = getattr(record, FIELDS, None)
        if extra is None:
            out["message"] = record.getMessage()
        else:
            out["event"] = record.getMessage()
            out.update(extra)
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """``2026-12-04T19:00:00.123+00:00 INFO flywheel.loop loop.pass worker=ab12 started=[]``."""

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102
        line = f"{_stamp(record)} {record.levelname:<7} {record.name} {record.getMessage()}"
        extra = getattr(record, FIELDS, None) or {}
        if extra:
            line += " " + " ".join(f"{k}={_text(v)}" for k, v in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return json.dumps(s) if (" " in s or not s) else s


def configure(level: str = "INFO", fmt: LogFormat = "json") -> logging.Handler:
    """Send every log record of this process to stderr, one line each, in ``fmt``.

    Replaces handlers installed before (a second call reconfigures rather than doubling lines).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def event_name(e: AuditEntry) -> str:
    """The log event of an audit entry: its action; an incident transition is named by its status.

    So an escalation is ``incident.escalated`` and a resolution ``incident.resolved``.

    >>> from fleet.audit import AuditEntry
    >>> event_name(AuditEntry("1-0", 0.0, "agent", "incident.transition", "svc", "",
    ...                       {"status": "escalated"}))
    'incident.escalated'
    """
    if e.action == "incident.transition" and e.details.get("status"):
        return f"incident.{e.details['status']}"
    return e.action


class AuditTail:
    """Logs each new audit entry once, as one line (``logger`` ``flywheel.events``).

    Args:
        audit: the fleet's audit stream.
        logger: where lines go.
        start: stream id after which entries are logged; ``"$"``: only entries written from now.
    """

    def __init__(self, audit: Audit, logger: logging.Logger | None = None, start: str = "$"):
        self.audit = audit
        self.log = logger or logging.getLogger("flywheel.events")
        self.cursor = audit.last_id() if start == "$" else start

    def emit(self, owns: Callable[[str], bool] = lambda _svc: True) -> int:
        """Log the entries written since the last call whose service ``owns`` accepts.

        Several loop workers each log their own shards' services (fleet-wide entries, service
        ``""``, are passed to ``owns`` too), so each entry is logged by one worker.
        """
        n = 0
        while True:
            batch = self.audit.after(self.cursor, count=_TAIL_BATCH)
            for e in batch:
                self.cursor = e.id
                if owns(e.service):
                    self._line(e)
                    n += 1
            if len(batch) < _TAIL_BATCH:
                return n

    def _line(self, e: AuditEntry) -> None:
        name = event_name(e)
        status = str(e.details.get("status", ""))
        failed = e.details.get("outcome") == "failed" or "error" in e.details
        level = logging.WARNING if status in _WARN_STATUSES or failed else logging.INFO
        extra = {"service": e.service,
                 **{k: e.details[k] for k in _DETAIL_FIELDS if k in e.details},
                 "actor": e.actor, "reason": e.reason,
                 "at": datetime.fromtimestamp(e.ts, UTC).isoformat(timespec="seconds"),
                 "audit_id": e.id}
        self.log.log(level, name, extra=fields(**extra))


_DETAIL_FIELDS = ("incident", "status", "previous", "version", "outcome", "error", "approval_id",
                  "champion_before", "challenger_before", "args", "os_user")
"""Audit details copied onto a log line (the rest stay in the audit)."""
