"""Block Kit for Slack: approval prompts, their decided variant, the reason modal, incidents.

Pure: data in, dicts out; the time comes in as an argument.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleet.actions.spec import iso_time
from fleet.approvals import EXPIRED_BY, ApprovalDecision, ApprovalRequest
from fleet.errors import InvalidInput
from fleet.incidents import Incident

APPROVE_ACTION = "flywheel_approve"
"""``action_id`` of the Approve button."""
REJECT_ACTION = "flywheel_reject"
"""``action_id`` of the Reject button (it opens the reason modal)."""
REJECT_VIEW = "flywheel_reject_reason"
"""``callback_id`` of the reason modal."""
REASON_BLOCK = "reason"
"""``block_id`` of the modal's reason input; also the key of its validation error."""
REASON_INPUT = "reason_input"
"""``action_id`` of the modal's reason input."""

RISK_ICON = {"low": ":large_green_circle:", "medium": ":large_orange_circle:",
             "high": ":red_circle:"}
SEVERITY_ICON = {"info": ":information_source:", "warning": ":warning:",
                 "critical": ":rotating_light:"}
# Slack rejects a section text over 3000 characters; stay clear of it.
_MAX_SECTION = 2900


@dataclass(frozen=True)
class Message:
    """A Slack message body: ``text`` is the notification and screen-reader fallback."""

    text: str
    blocks: list[dict[str, Any]]


@dataclass(frozen=True)
class Pointer:
    """What a Reject modal needs to decide and then lock the prompt it came from."""

    approval_id: str
    digest: str
    """The action digest shown in the prompt; the decision binds to it."""
    channel: str
    message_ts: str


# --- values carried through Slack -----------------------------------------------------------
def button_value(request: ApprovalRequest) -> str:
    """The ``value`` of both buttons: the approval id and the digest the clicker is shown."""
    return json.dumps({"id": request.id, "digest": request.action_digest}, separators=(",", ":"))


def parse_button_value(value: str) -> tuple[str, str]:
    """Return ``(approval_id, digest)`` from a button value made by :func:`button_value`.

    Raises:
        InvalidInput: the value is not one of ours.
    """
    try:
        data = json.loads(value)
        return str(data["id"]), str(data["digest"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"button value {value[:80]!r} is not a flywheel approval") from exc


def pointer_metadata(pointer: Pointer) -> str:
    """Encode ``pointer`` as a modal's ``private_metadata`` (at most 3000 characters)."""
    return json.dumps(pointer.__dict__, separators=(",", ":"))


def parse_pointer(metadata: str) -> Pointer:
    """Decode a modal's ``private_metadata`` made by :func:`pointer_metadata`.

    Raises:
        InvalidInput: the metadata is not one of ours.
    """
    try:
        return Pointer(**json.loads(metadata))
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"modal metadata {metadata[:80]!r} is not a flywheel approval") from exc


# --- approval prompt ------------------------------------------------------------------------
def approval_prompt(
    request: ApprovalRequest, *, now: float, slack_ids: Mapping[str, str] | None = None
) -> Message:
    """The prompt posted when an action waits for a decision, with Approve / Reject buttons.

    Args:
        request: the pending approval.
        now: current clock seconds, for the relative expiry ("in 15 min").
        slack_ids: approver identity -> Slack user id, to mention who may decide.
    """
    value = button_value(request)
    actions = {
        "type": "actions",
        "block_id": f"decide:{request.id}",
        "elements": [
            {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": REJECT_ACTION, "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": "Reject"}},
        ],
    }
    expiry = f"{slack_time(request.expires_at)} ({relative(request.expires_at - now)})"
    footer = _context(
        f"Expires {expiry} · approvers: {who_may_decide(request, slack_ids)} · "
        f"`{request.id}` · digest `{request.action_digest[:12]}`"
    )
    return Message(
        text=f"Approval needed: {request.action.describe()} ({request.risk} risk)",
        blocks=[*_request_blocks(request), actions, footer],
    )


def decided_prompt(
    request: ApprovalRequest,
    decision: ApprovalDecision,
    *,
    slack_ids: Mapping[str, str] | None = None,
) -> Message:
    """The prompt after its first decision: the same facts, the outcome, no buttons."""
    verdict = _verdict(decision)
    who = _person(decision.by, slack_ids)
    line = f"{verdict} by {who} at {slack_time(decision.decided_at)}"
    if decision.by == EXPIRED_BY:
        line = f":hourglass: *Expired* (auto-denied) at {slack_time(decision.decided_at)}"
    if decision.reason and decision.approved is False:
        line += f"\n>{esc(decision.reason)}"
    return Message(
        text=f"{request.action.describe()}: {_plain_verdict(decision)} by {decision.by}",
        blocks=[
            *_request_blocks(request),
            {"type": "section", "block_id": "decision", "text": _md(line)},
            _context(f"`{request.id}` · digest `{request.action_digest[:12]}`"),
        ],
    )


def _request_blocks(request: ApprovalRequest) -> list[dict[str, Any]]:
    action = request.action
    risk = f"{RISK_ICON.get(request.risk, '')} {request.risk}".strip()
    facts = [
        _md(f"*Service*\n`{esc(action.service)}`"),
        _md(f"*Action*\n`{esc(action.describe())}`"),
        _md(f"*Risk*\n{risk}"),
        _md(f"*Incident*\n`{esc(request.incident)}`"),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header",
         "text": {"type": "plain_text", "text": _clip(f"Approval needed: {action.name} "
                                                      f"{action.service}", 150)}},
        {"type": "section", "fields": facts},
        {"type": "section",
         "text": _md(_clip(f"*Why* ({esc(request.requested_by)})\n{esc(request.rationale)}",
                           _MAX_SECTION))},
    ]
    scores = holdout_line(request.evidence)
    if scores:
        blocks.append({"type": "section", "block_id": "holdout", "text": _md(scores)})
    if request.evidence:
        blocks.append({"type": "section", "text": _md(evidence_lines(request.evidence))})
    return blocks


def holdout_line(evidence: Mapping[str, Any]) -> str:
    """The candidate's and the champion's holdout scores side by side ('' when not in evidence).

    >>> holdout_line({"holdout_accuracy": 0.91234, "champion_holdout_accuracy": 0.87})
    '*Holdout accuracy*: candidate `0.9123` · champion `0.87`'
    """
    for key, value in evidence.items():
        if key.startswith("holdout_") and key != "holdout_rows":
            metric = key.removeprefix("holdout_")
            champion = evidence.get(f"champion_holdout_{metric}")
            line = f"*Holdout {esc(metric)}*: candidate `{fmt(value)}`"
            return line + (f" · champion `{fmt(champion)}`" if champion is not None else "")
    return ""


def evidence_lines(evidence: Mapping[str, Any]) -> str:
    r"""Evidence as a bulleted mrkdwn list with numbers shown to four significant digits.

    >>> evidence_lines({"holdout_accuracy": 0.912345, "samples": 3000})
    '*Evidence*\n• holdout_accuracy: `0.9123`\n• samples: `3000`'
    """
    lines = ["*Evidence*"]
    size = len(lines[0])
    for n, (key, value) in enumerate(evidence.items()):
        line = f"• {esc(str(key))}: `{esc(fmt(value))}`"
        if size + len(line) + 60 > _MAX_SECTION:
            lines.append(f"• … {len(evidence) - n} more (see `flywheel approvals`)")
            break
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


# --- modal ----------------------------------------------------------------------------------
def reject_modal(request: ApprovalRequest, pointer: Pointer) -> dict[str, Any]:
    """The modal that asks why; submitting it rejects ``pointer.approval_id``."""
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "private_metadata": pointer_metadata(pointer),
        "title": {"type": "plain_text", "text": "Reject action"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": _md(f"Reject `{esc(request.action.describe())}`?")},
            {"type": "input", "block_id": REASON_BLOCK,
             "label": {"type": "plain_text", "text": "Reason (sent back to the agent)"},
             "element": {"type": "plain_text_input", "action_id": REASON_INPUT,
                         "multiline": True, "max_length": 2000}},
        ],
    }


def modal_reason(view: Mapping[str, Any]) -> str:
    """The reason typed into a submitted :func:`reject_modal` ('' when blank)."""
    value = view["state"]["values"].get(REASON_BLOCK, {}).get(REASON_INPUT, {}).get("value")
    return (value or "").strip()


# --- incidents ------------------------------------------------------------------------------
def incident_message(incident: Incident) -> Message:
    """The channel notification for an incident: what, where, how bad, and the numbers."""
    icon = SEVERITY_ICON.get(incident.severity, "")
    title = f"{incident.kind.replace('_', ' ')} on {incident.service}"
    facts = [
        _md(f"*Service*\n`{esc(incident.service)}`"),
        _md(f"*Severity*\n{icon} {incident.severity}".rstrip()),
        _md(f"*Status*\n{incident.status.value}"),
        _md(f"*Detector*\n{esc(incident.detector)}"),
    ]
    if incident.version is not None:
        facts.append(_md(f"*Version*\n{incident.version}"))
    blocks: list[dict[str, Any]] = [
        {"type": "header",
         "text": {"type": "plain_text", "text": _clip(f"Incident: {title}", 150)}},
        {"type": "section", "fields": facts},
    ]
    if incident.evidence:
        blocks.append({"type": "section", "text": _md(evidence_lines(incident.evidence))})
    if incident.resolution:  # how it ended: an escalation's reason, a failure's error
        blocks.append({"type": "section",
                       "text": _md(f"*Resolution*\n{esc(_clip(incident.resolution, 2900))}")})
    blocks.append(_context(f"`{incident.id}` · opened {slack_time(incident.opened_at)} · "
                           f"{incident.signal_count} signal(s)"))
    return Message(text=f"{icon} Incident {incident.id}: {title} ({incident.severity})".strip(),
                   blocks=blocks)


# --- texts ----------------------------------------------------------------------------------
def refusal_text(
    user: str, request: ApprovalRequest, slack_ids: Mapping[str, str] | None = None
) -> str:
    """Ephemeral reply to someone who may not decide ``request``: who may, and how to fix it."""
    return (
        f"<@{user}>, you may not decide `{request.id}` ({esc(request.action.describe())}). "
        f"Only its approvers may: {who_may_decide(request, slack_ids)}. Ask one of them, or have "
        "your Slack id mapped to an approver in FLYWHEEL_SLACK_APPROVERS (e.g. `U123=alice`)."
    )


def already_decided_text(request: ApprovalRequest, decision: ApprovalDecision,
                         slack_ids: Mapping[str, str] | None = None) -> str:
    """Ephemeral reply to a click that came after the first (and final) decision."""
    return (
        f"`{request.id}` ({esc(request.action.describe())}) was already "
        f"{_plain_verdict(decision)} by {_person(decision.by, slack_ids)} at "
        f"{slack_time(decision.decided_at)}; the first decision is final."
    )


def who_may_decide(request: ApprovalRequest, slack_ids: Mapping[str, str] | None = None) -> str:
    """The request's approvers, each with a Slack mention when one is mapped to it."""
    return ", ".join(_person(a, slack_ids) for a in request.approvers)


def _person(identity: str, slack_ids: Mapping[str, str] | None) -> str:
    uid = (slack_ids or {}).get(identity)
    return f"{esc(identity)} (<@{uid}>)" if uid else esc(identity)


def _verdict(decision: ApprovalDecision) -> str:
    return ":white_check_mark: *Approved*" if decision.approved else ":x: *Rejected*"


def _plain_verdict(decision: ApprovalDecision) -> str:
    if decision.by == EXPIRED_BY:
        return "denied on expiry"
    return "approved" if decision.approved else "rejected"


# --- formatting -----------------------------------------------------------------------------
def slack_time(ts: float) -> str:
    """A time Slack renders in each reader's time zone, with a UTC fallback.

    >>> slack_time(1_700_000_000.0)
    '<!date^1700000000^{date_short_pretty} {time}|2023-11-14T22:13:20Z>'
    """
    return f"<!date^{int(ts)}^{{date_short_pretty}} {{time}}|{iso_time(ts)}>"


def relative(seconds: float) -> str:
    """A signed duration as people say it.

    >>> relative(900), relative(-90), relative(3900), relative(20)
    ('in 15 min', '1 min ago', 'in 1 h 5 min', 'in 20 s')
    """
    s = abs(int(seconds))
    if s < 60:
        span = f"{s} s"
    elif s < 3600:
        span = f"{s // 60} min"
    else:
        span = f"{s // 3600} h" + (f" {s % 3600 // 60} min" if s % 3600 >= 60 else "")
    return f"in {span}" if seconds >= 0 else f"{span} ago"


def fmt(value: Any) -> str:
    """An evidence value for people: floats to four significant digits, lists joined.

    >>> fmt(0.123456), fmt(12345.678), fmt(True), fmt([1, 2.5])
    ('0.1235', '1.235e+04', 'True', '1, 2.5')
    """
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def esc(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control sequences.

    >>> esc("a < b & c")
    'a &lt; b &amp; c'
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_md(text)]}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
