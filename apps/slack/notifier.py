"""Slack, wired: each approval prompt posted once and locked after the first decision; incidents.

Prompts are locked after the first decision from any channel; each incident gets one thread
(opened, each step, resolved or escalated).

Every process that owns Slack (``flywheel run``, ``flywheel serve``) may run one; they agree
through Redis (:class:`~apps.slack.records.SlackRecords`): a post is claimed with SET NX, a lock
with HSETNX, so each prompt is posted once and updated once. It runs in its own thread, never
the loop's: a slow or failing Slack (429 with Retry-After, 5xx) is retried by the client, and a
post that still fails is retried on the next pass, not lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from apps.slack import blocks
from apps.slack.records import Posted, SlackRecords
from fleet.approvals import ApprovalStore
from fleet.audit import Audit, AuditEntry
from fleet.clock import Clock
from fleet.errors import FleetError
from fleet.incidents import Incident, IncidentStore
from fleet.registry import Registry

if TYPE_CHECKING:
    from apps.settings import Settings
    from apps.system import System

log = logging.getLogger(__name__)

OUTCOMES = ("resolved", "escalated", "failed")
"""Incident statuses announced in the thread (broadcast to the channel)."""
AUDIT_SCAN = 2000
"""Most recent audit entries read per pass to summarise incident steps."""
POST_TIMEOUT_S = 10
"""Seconds one Web API call may take (the notifier's thread waits, never the loop)."""
RECENT_SCAN = 50
"""Most recently opened incidents read per pass, so one that ended failed or escalated between
two passes still gets its thread."""
LATE_OUTCOMES = ("escalated", "failed")
"""Outcomes a person must hear of even when the incident never was open during a pass."""


def retrying_client(bot_token: str, api_url: str | None = None) -> WebClient:
    """A Web API client with a short timeout that retries 429 (after ``Retry-After``) and 5xx.

    Dropped connections are retried too.
    """
    handlers = [ConnectionErrorRetryHandler(max_retry_count=2),
                RateLimitErrorRetryHandler(max_retry_count=2),
                ServerErrorRetryHandler(max_retry_count=2)]
    base = (api_url.rstrip("/") + "/") if api_url else "https://slack.com/api/"
    return WebClient(token=bot_token, base_url=base, timeout=POST_TIMEOUT_S,
                     retry_handlers=handlers)


@dataclass
class SyncReport:
    """What one pass of the notifier did."""

    posted: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class SlackNotifier:
    """Keeps Slack in step with the approvals and incidents in Redis.

    Args:
        client: the bot's Web API client (see :func:`retrying_client`).
        records: the shared Slack records.
        approvals, incidents, registry, audit, clock: the fleet's stores.
        channel: default channel (``FLYWHEEL_SLACK_CHANNEL``); a service's policy
            ``slack_channel`` overrides it. No channel: that service is not posted.
        slack_ids: approver identity -> Slack user id, to mention who may decide.
        interval_s: seconds between passes of the background thread.
    """

    def __init__(self, client: WebClient, records: SlackRecords, *, approvals: ApprovalStore,
                 incidents: IncidentStore, registry: Registry, audit: Audit, clock: Clock,
                 channel: str | None, slack_ids: Mapping[str, str] | None = None,
                 interval_s: float = 2.0):
        self.client, self.records = client, records
        self.approvals, self.incidents, self.registry = approvals, incidents, registry
        self.audit, self.clock = audit, clock
        self.channel, self.slack_ids = channel, dict(slack_ids or {})
        self.interval_s = interval_s
        self.started_at = clock.now()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Run :meth:`sync` in a daemon thread every ``interval_s`` until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="slack-notifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after its current pass."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(POST_TIMEOUT_S * 3)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rep = self.sync()
                if rep.posted or rep.locked:
                    log.info("slack: posted %s, locked %s", rep.posted, rep.locked)
                if rep.failed:
                    log.warning("slack: %d post(s) failed, retried next pass: %s",
                                len(rep.failed), rep.failed)
            except Exception:  # Redis down or a bug: the next pass tries again
                log.exception("slack: notifier pass failed; retrying")
            self._stop.wait(self.interval_s)

    # --- one pass -------------------------------------------------------------------------
    def sync(self) -> SyncReport:
        """Post new prompts, lock decided ones, and bring incident threads up to date."""
        rep = SyncReport()
        self._post_prompts(rep)
        self._lock_prompts(rep)
        self._follow_incidents(rep)
        return rep

    def channel_for(self, service: str) -> str | None:
        """The service's channel: its policy's ``slack_channel``, else the default."""
        try:
            own = self.registry.service(service).policy.slack_channel
        except FleetError:
            own = None
        return own or self.channel

    def _post_prompts(self, rep: SyncReport) -> None:
        for req in self.approvals.pending():
            channel = self.channel_for(req.action.service)
            ref = f"approval:{req.id}"
            if channel is None or self.records.prompt(req.id) is not None:
                continue
            if not self.records.claim_post(ref) or self.records.prompt(req.id) is not None:
                continue  # another process is posting it (or just did)
            msg = blocks.approval_prompt(req, now=self.clock.now(), slack_ids=self.slack_ids)
            try:
                resp = self.client.chat_postMessage(channel=channel, text=msg.text,
                                                    blocks=msg.blocks)
            except Exception as exc:  # kept for the next pass
                self.records.release_post(ref)
                rep.failed[ref] = f"{type(exc).__name__}: {exc}"[:200]
                continue
            self.records.posted_prompt(req.id, Posted(str(resp["channel"]), str(resp["ts"])))
            rep.posted.append(req.id)

    def _lock_prompts(self, rep: SyncReport) -> None:
        for aid in self.records.open_prompts():
            decision = self.approvals.decision(aid)
            where = self.records.prompt(aid)
            if decision is None or where is None:
                continue
            if not self.records.claim_lock(aid):
                self.records.locked(aid)  # the clicker's process (or another) locked it
                continue
            msg = blocks.decided_prompt(self.approvals.get(aid), decision,
                                        slack_ids=self.slack_ids)
            try:
                self.client.chat_update(channel=where.channel, ts=where.ts, text=msg.text,
                                        blocks=msg.blocks)
            except Exception as exc:
                self.records.release_lock(aid)
                rep.failed[f"lock:{aid}"] = f"{type(exc).__name__}: {exc}"[:200]
                continue
            self.records.locked(aid)
            rep.locked.append(aid)

    # --- incident threads -----------------------------------------------------------------
    def _to_thread(self) -> list[Incident]:
        """Open incidents, and those that ended failed or escalated since this notifier started.

        A quick failure may open and end between two passes; a person must still hear of it.
        """
        found = {i.id: i for i in self.incidents.open_incidents()}
        for inc in self.incidents.recent(RECENT_SCAN):
            if (inc.id not in found and inc.status.value in LATE_OUTCOMES
                    and inc.updated_at >= self.started_at):
                found[inc.id] = inc
        return list(found.values())

    def _follow_incidents(self, rep: SyncReport) -> None:
        for inc in self._to_thread():
            channel = self.channel_for(inc.service)
            ref = f"incident:{inc.id}"
            if channel is None or self.records.thread(inc.id)[0] is not None:
                continue
            if not self.records.claim_post(ref):
                continue
            msg = blocks.incident_message(inc)
            try:
                resp = self.client.chat_postMessage(channel=channel, text=msg.text,
                                                    blocks=msg.blocks)
            except Exception as exc:
                self.records.release_post(ref)
                rep.failed[ref] = f"{type(exc).__name__}: {exc}"[:200]
                continue
            self.records.opened_thread(inc.id, Posted(str(resp["channel"]), str(resp["ts"])),
                                       "0-0")
        following = self.records.open_threads()
        # One read of the recent audit trail per pass, shared by every thread.
        recent = self.audit.read(count=AUDIT_SCAN) if following else []
        for incident_id in following:
            ref = f"thread:{incident_id}"
            if not self.records.claim_post(ref):
                continue  # another process is writing this thread now
            try:
                self._advance_thread(incident_id, recent, rep)
            except Exception as exc:
                rep.failed[ref] = f"{type(exc).__name__}: {exc}"[:200]
            finally:
                self.records.release_post(ref)

    def _advance_thread(self, incident_id: str, recent: list[AuditEntry],
                        rep: SyncReport) -> None:
        where, cursor = self.records.thread(incident_id)
        if where is None:
            return
        inc = self.incidents.get(incident_id)
        after = _stream_id(cursor)
        steps = [e for e in recent
                 if e.details.get("incident") == inc.id and _stream_id(e.id) > after]
        if steps:
            text = "\n".join(step_line(e) for e in steps[-20:])
            self.client.chat_postMessage(channel=where.channel, thread_ts=where.ts, text=text)
            self.records.advanced(incident_id, steps[-1].id)
            rep.threads.append(incident_id)
        outcome = inc.status.value
        if outcome in OUTCOMES and self.records.announced(incident_id) != outcome:
            # Escalated is not terminal (a person may hand it back): announced, thread kept.
            self.client.chat_postMessage(channel=where.channel, thread_ts=where.ts,
                                         text=closing_line(inc), reply_broadcast=True)
            self.records.announce(incident_id, outcome)
        if inc.status.terminal:
            self.records.closed_thread(incident_id)


def step_line(e: AuditEntry) -> str:
    """One agent step in an incident thread: what, by whom, the outcome, why."""
    outcome = e.details.get("outcome")
    what = f"`{e.action}`" + (f" ({outcome})" if outcome else "")
    return blocks.esc(f"• {what} by {e.actor}: {e.reason[:200]}")


def closing_line(inc: Incident) -> str:
    """The last reply of an incident thread: resolved, escalated or failed, and why."""
    icon = {"resolved": ":white_check_mark:", "escalated": ":sos:"}.get(inc.status.value,
                                                                        ":x:")
    return blocks.esc(f"{icon} Incident {inc.id} {inc.status.value}: {inc.resolution[:500]}")


def _stream_id(sid: str) -> tuple[int, int]:
    ms, _, seq = sid.partition("-")
    return int(ms or 0), int(seq or 0)


def notifier_from_settings(settings: Settings, system: System) -> SlackNotifier | None:
    """A notifier for ``system`` when Slack is configured (bot token set), else None."""
    if settings.slack_bot_token is None:
        return None
    fleet = system.fleet
    client = retrying_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    records = SlackRecords(fleet.r, fleet.keys)
    slack_ids = {identity: uid for uid, identity in settings.slack_approvers.items()}
    if settings.slack_channel is None:
        log.warning("slack: FLYWHEEL_SLACK_CHANNEL is not set; only services whose policy names "
                    "a slack_channel get prompts")
    return SlackNotifier(client, records, approvals=system.approvals, incidents=system.incidents,
                         registry=fleet.registry, audit=fleet.audit, clock=fleet.clock,
                         channel=settings.slack_channel, slack_ids=slack_ids)
