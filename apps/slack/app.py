"""The Slack app: clicks and reason modals become approval decisions; prompts, notifications, chat.

Served over HTTP (a FastAPI route) or Socket Mode. Chat goes through mentions and DMs.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_sdk import WebClient
from starlette.concurrency import run_in_threadpool

from apps.settings import Settings
from apps.slack import blocks
from apps.slack.blocks import Pointer
from apps.slack.notifier import retrying_client
from apps.slack.records import LocalDeliveries, SlackRecords
from fleet.approvals import ApprovalDecision, ApprovalRequest, ApprovalStore
from fleet.errors import AlreadyDecided, FleetError, InvalidInput, NotFound, PolicyViolation
from fleet.incidents import Incident

log = logging.getLogger(__name__)

Chat = Callable[[str, str], str]
"""``chat(thread_key, text) -> reply``: one conversation per ``thread_key``."""
OnDecision = Callable[[str], None]
"""``on_decision(approval_id)``: lets an in-process runner resume the thread at once."""

CHAT_DISABLED = (
    "Chat is not enabled in this process. Use `flywheel chat`, or run the Slack app from "
    "`flywheel serve` so mentions and DMs reach the supervisor."
)


def build_slack_app(
    *,
    approvals: ApprovalStore,
    signing_secret: str,
    bot_token: str,
    approvers: Mapping[str, str],
    on_decision: OnDecision | None = None,
    chat: Chat | None = None,
    client: WebClient | None = None,
    api_url: str | None = None,
    process_before_response: bool = False,
    records: SlackRecords | None = None,
) -> App:
    """Build the Bolt app; no network I/O until the first request (then ``auth.test``, once).

    Args:
        approvals: where decisions are recorded (first decision wins).
        signing_secret: Slack's signing secret; every HTTP request's signature is checked with it.
        bot_token: the bot token (``xoxb-``) used for Web API calls.
        approvers: Slack user id -> approver identity (e.g. ``{"U123": "alice"}``); a click by
            anyone else is refused.
        on_decision: called with the approval id after a decision is recorded (after the ack).
        chat: answers mentions and DMs; None replies that chat is not enabled here.
        client: the Web API client to use; default: a new one for ``bot_token``.
        api_url: base URL of the Web API when ``client`` is not given (default: Slack's).
        process_before_response: True on FaaS, where nothing may run after the response.
        records: the Slack records shared in Redis: retries are then dropped across processes,
            and a prompt is locked once whichever process (this app or a notifier) gets there
            first. None: in-process only.
    """
    client = client or web_client(bot_token, api_url)
    app = App(
        name="flywheel-slack", signing_secret=signing_secret, client=client,
        token_verification_enabled=False,  # auth.test on the first request, not at build time
        process_before_response=process_before_response, logger=log,
    )
    h = _Handlers(approvals, dict(approvers), on_decision, chat, records)
    app.middleware(h.drop_redeliveries)
    app.action(blocks.APPROVE_ACTION)(ack=_ack, lazy=[h.approve])
    app.action(blocks.REJECT_ACTION)(ack=_ack, lazy=[h.open_reject_modal])
    app.view_submission(blocks.REJECT_VIEW)(ack=h.ack_reason, lazy=[h.reject])
    app.event("app_mention")(ack=_ack, lazy=[h.converse])
    # Every message event is acked (an unmatched one would get a 404, and Slack retries those);
    # only a person's DM is answered: channel mentions arrive as app_mention too.
    app.event("message")(ack=_ack, lazy=[h.converse_dm])
    return app


def slack_app_from_settings(
    settings: Settings,
    *,
    approvals: ApprovalStore,
    on_decision: OnDecision | None = None,
    chat: Chat | None = None,
    records: SlackRecords | None = None,
) -> App:
    """Build the Slack app from the ``FLYWHEEL_SLACK_*`` settings.

    Raises:
        InvalidInput: naming the missing variables.
    """
    missing = [] if settings.slack_bot_token else ["FLYWHEEL_SLACK_BOT_TOKEN"]
    # Socket Mode requests come over an authenticated WebSocket and carry no signature.
    if not settings.slack_signing_secret and not settings.slack_app_token:
        missing.append("FLYWHEEL_SLACK_SIGNING_SECRET (HTTP mode) or FLYWHEEL_SLACK_APP_TOKEN "
                       "(Socket Mode)")
    if missing or settings.slack_bot_token is None:
        raise InvalidInput(f"Slack is not configured: set {' and '.join(missing)}")
    secret = settings.slack_signing_secret
    return build_slack_app(
        approvals=approvals, signing_secret=secret.get_secret_value() if secret else "",
        bot_token=settings.slack_bot_token.get_secret_value(),
        approvers=settings.slack_approvers, on_decision=on_decision, chat=chat,
        api_url=settings.slack_api_url, records=records,
    )


def web_client(bot_token: str, api_url: str | None = None) -> WebClient:
    """A Web API client for ``bot_token``; ``api_url`` points it elsewhere than Slack.

    It retries 429 (after ``Retry-After``), 5xx and dropped connections.
    """
    return retrying_client(bot_token, api_url)


def thread_key(channel: str, thread_ts: str) -> str:
    """The chat thread of one Slack thread.

    >>> thread_key("C1", "1700000000.000100")
    'slack:C1:1700000000.000100'
    """
    return f"slack:{channel}:{thread_ts}"


# --- outbound -------------------------------------------------------------------------------
def post_approval(
    client: WebClient, channel: str, request: ApprovalRequest, *, now: float | None = None,
    slack_ids: Mapping[str, str] | None = None,
) -> str:
    """Post the prompt for ``request`` to ``channel``; return the message ``ts``.

    Args:
        client: the bot's Web API client.
        channel: channel id (or name) to post in.
        request: the pending approval.
        now: clock seconds for the relative expiry; default the wall clock (pass the fleet
            clock's time when it is simulated).
        slack_ids: approver identity -> Slack user id, to mention who may decide.
    """
    msg = blocks.approval_prompt(request, now=time.time() if now is None else now,
                                 slack_ids=slack_ids)
    resp = client.chat_postMessage(channel=channel, text=msg.text, blocks=msg.blocks)
    return str(resp["ts"])


def notify_incident(client: WebClient, channel: str, incident: Incident) -> str:
    """Post an incident notification to ``channel``; return the message ``ts``."""
    msg = blocks.incident_message(incident)
    resp = client.chat_postMessage(channel=channel, text=msg.text, blocks=msg.blocks)
    return str(resp["ts"])


# --- inbound --------------------------------------------------------------------------------
def _ack(ack: Callable[..., Any]) -> None:
    ack()


class _Handlers:
    """The listeners' work; each lazy method runs in a worker thread after Slack got its ack."""

    def __init__(self, approvals: ApprovalStore, approvers: dict[str, str],
                 on_decision: OnDecision | None, chat: Chat | None,
                 records: SlackRecords | None = None):
        self.approvals = approvals
        self.approvers = approvers
        self.slack_ids = {identity: uid for uid, identity in approvers.items()}
        self.on_decision = on_decision
        self.chat = chat
        self.records = records
        self.seen: LocalDeliveries | SlackRecords = records or LocalDeliveries()

    # Slack redelivers an event it thinks was lost (same event_id, X-Slack-Retry-Num set); a
    # repeat must not reply twice. A second click is a new action (new action_ts) and meets the
    # first decision in Redis instead. With ``records`` the handled deliveries are kept in
    # Redis, so a redelivery to another process is dropped too.
    def drop_redeliveries(self, request: BoltRequest, body: dict[str, Any],
                          next: Callable[[], BoltResponse]) -> BoltResponse | None:
        """Global middleware: acknowledge and skip a delivery this process has already handled."""
        key = _delivery_id(body)
        if request.lazy_only or key is None or self.seen.first(key):
            return next()
        retry = request.headers.get("x-slack-retry-num", ["0"])[0]
        log.info("slack: dropped repeated delivery %s (retry %s)", key, retry)
        return BoltResponse(status=200, body="")

    def approve(self, body: dict[str, Any], client: WebClient) -> None:
        """Approve button: decide, then lock the prompt."""
        approval_id, digest = blocks.parse_button_value(body["actions"][0]["value"])
        channel, ts = _message_ref(body)
        self._decide(client, body["user"]["id"], Pointer(approval_id, digest, channel, ts),
                     approve=True, reason="")

    def open_reject_modal(self, body: dict[str, Any], client: WebClient) -> None:
        """Reject button: ask for a reason in a modal (unless the clicker may not decide)."""
        approval_id, digest = blocks.parse_button_value(body["actions"][0]["value"])
        channel, ts = _message_ref(body)
        user = body["user"]["id"]
        pointer = Pointer(approval_id, digest, channel, ts)
        req = self._decidable(client, user, pointer)
        if req is None:
            return
        first = self.approvals.decision(approval_id)
        if first is not None:
            self._show_first(client, user, pointer, req, first)
            return
        # trigger_id lives 3 s from the click; this runs right after the ack, well inside that.
        client.views_open(trigger_id=body["trigger_id"], view=blocks.reject_modal(req, pointer))

    def ack_reason(self, ack: Callable[..., Any], view: dict[str, Any]) -> None:
        """Modal submit: refuse a blank reason in the modal itself, else close it."""
        if not blocks.modal_reason(view):
            ack(response_action="errors",
                errors={blocks.REASON_BLOCK: "A reason is required; it is sent back to the agent."})
            return
        ack()

    def reject(self, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        """Modal submitted: reject with the reason, then lock the prompt."""
        reason = blocks.modal_reason(view)
        if not reason:
            return  # ack_reason kept the modal open with an error
        pointer = blocks.parse_pointer(view["private_metadata"])
        self._decide(client, body["user"]["id"], pointer, approve=False, reason=reason)

    def converse_dm(self, event: dict[str, Any], client: WebClient,
                    context: Mapping[str, Any]) -> None:
        """Message event: answer a person's DM; ignore channels, bots, edits and joins."""
        # Another bot's message (or an edit: any subtype) must not start a reply loop.
        if event.get("channel_type") == "im" and not event.get("bot_id") and \
                not event.get("subtype"):
            self.converse(event, client, context)

    def converse(self, event: dict[str, Any], client: WebClient, context: Mapping[str, Any]
                 ) -> None:
        """Mention or DM: one chat thread per Slack thread; reply in that thread."""
        channel = event["channel"]
        thread_ts = event.get("thread_ts") or event["ts"]
        text = _without_mention(event.get("text") or "", context.get("bot_user_id"))
        if self.chat is None:
            reply = CHAT_DISABLED
        else:
            try:
                reply = self.chat(thread_key(channel, thread_ts), text)
            except FleetError as exc:  # the message names the problem and the fix
                reply = f":warning: {exc}"
        client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=reply)

    # --- shared ---------------------------------------------------------------------------
    def _decide(self, client: WebClient, user: str, pointer: Pointer, *, approve: bool,
                reason: str) -> None:
        req = self._decidable(client, user, pointer)
        if req is None:
            return
        try:
            decision = self.approvals.decide(pointer.approval_id, approve=approve,
                                             by=self.approvers[user], reason=reason,
                                             digest=pointer.digest)
        except AlreadyDecided as exc:
            self._show_first(client, user, pointer, req, exc.decision)
            return
        except (PolicyViolation, InvalidInput) as exc:  # expired, or another action's digest
            self._tell(client, user, pointer.channel, f":no_entry: {exc}")
            return
        self._lock(client, pointer, req, decision, first=True)
        if self.on_decision is not None:
            try:
                self.on_decision(pointer.approval_id)
            except Exception:  # the decision is stored: the background loop resumes the thread
                log.exception("slack: on_decision(%r) failed; the loop will resume it",
                              pointer.approval_id)

    def _decidable(self, client: WebClient, user: str, pointer: Pointer
                   ) -> ApprovalRequest | None:
        """The request, if ``user`` may decide it; otherwise tell them why not and return None."""
        try:
            req = self.approvals.get(pointer.approval_id)
        except NotFound as exc:
            self._tell(client, user, pointer.channel, f":no_entry: {exc}")
            return None
        if self.approvers.get(user) not in req.approvers:
            self._tell(client, user, pointer.channel,
                       blocks.refusal_text(user, req, self.slack_ids))
            return None
        return req

    def _show_first(self, client: WebClient, user: str, pointer: Pointer, req: ApprovalRequest,
                    first: ApprovalDecision) -> None:
        self._lock(client, pointer, req, first)
        self._tell(client, user, pointer.channel,
                   blocks.already_decided_text(req, first, self.slack_ids))

    def _lock(self, client: WebClient, pointer: Pointer, req: ApprovalRequest,
              decision: ApprovalDecision, *, first: bool = False) -> None:
        """Show the decision and drop the buttons.

        After a fresh decision, only if no other process (a notifier that saw it first) has
        locked the prompt already.
        """
        claimed = self.records is not None and self.records.claim_lock(req.id)
        if first and self.records is not None and not claimed:
            self.records.locked(req.id)
            return
        msg = blocks.decided_prompt(req, decision, slack_ids=self.slack_ids)
        try:
            client.chat_update(channel=pointer.channel, ts=pointer.message_ts, text=msg.text,
                               blocks=msg.blocks)
        except Exception:
            if claimed and self.records is not None:
                self.records.release_lock(req.id)  # a notifier locks it on its next pass
            raise
        if self.records is not None:
            self.records.locked(req.id)

    @staticmethod
    def _tell(client: WebClient, user: str, channel: str, text: str) -> None:
        client.chat_postEphemeral(channel=channel, user=user, text=text)


def _delivery_id(body: Mapping[str, Any]) -> str | None:
    """What stays the same when Slack redelivers (or a person double-clicks) the same thing."""
    if body.get("event_id"):
        return f"event:{body['event_id']}"
    if body.get("type") == "block_actions" and body.get("actions"):
        a = body["actions"][0]
        return f"action:{body['user']['id']}:{a.get('action_id')}:{a.get('action_ts')}"
    # Not view submissions: one refused for a blank reason is legitimately submitted again with
    # the same view id and hash; a real duplicate meets the first decision in Redis instead.
    return None


def _message_ref(body: Mapping[str, Any]) -> tuple[str, str]:
    container = body.get("container") or {}
    channel = container.get("channel_id") or body["channel"]["id"]
    ts = container.get("message_ts") or body["message"]["ts"]
    return channel, ts


def _without_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", "", text)
    return text.strip()


# --- transports -----------------------------------------------------------------------------
def fastapi_router(slack_app: App, path: str = "/slack/events") -> APIRouter:
    """A router that serves Slack's Events API and interactivity requests at ``path``.

    Uses the Bolt adapter's request/response conversion, but dispatches in a worker thread:
    Bolt's own Starlette handler calls the synchronous ``App.dispatch`` (which waits up to 3 s
    for an ack) on the event loop, stalling every other request of the server meanwhile.
    """
    router = APIRouter()

    @router.post(path, include_in_schema=False)
    async def slack_events(req: Request) -> Response:
        bolt_req = to_bolt_request(req, await req.body())
        return to_starlette_response(await run_in_threadpool(slack_app.dispatch, bolt_req))

    return router


def mount(fastapi_app: FastAPI, slack_app: App, path: str = "/slack/events") -> FastAPI:
    """Serve ``slack_app`` from ``fastapi_app`` at ``path``; return ``fastapi_app``."""
    fastapi_app.include_router(fastapi_router(slack_app, path))
    return fastapi_app


def socket_mode_handler(slack_app: App, app_token: str) -> SocketModeHandler:
    """A Socket Mode connection for ``slack_app`` (``xapp-`` token); not connected yet."""
    if not app_token.startswith("xapp-"):
        raise InvalidInput(
            "Socket Mode needs an app-level token starting with 'xapp-' "
            "(FLYWHEEL_SLACK_APP_TOKEN); create one under Basic Information > App-Level Tokens "
            "with the connections:write scope"
        )
    return SocketModeHandler(slack_app, app_token, web_client=slack_app.client)


def run_socket_mode(slack_app: App, app_token: str) -> None:
    """Connect over Socket Mode and block; no public URL needed."""
    socket_mode_handler(slack_app, app_token).start()
