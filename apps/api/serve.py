"""``flywheel serve``: the HTTP API, the gateway's model routes and Slack, in one uvicorn server.

The background loop is not started here (that is ``flywheel run``): decisions made through the
API or Slack are picked up by the loop, which resumes the waiting agent threads.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from apps.api.app import create_api_from_system
from apps.api.chat import Chat
from apps.logs import configure
from apps.serving import build_gateway, single_threaded_models
from apps.settings import Settings
from apps.system import System, open_system

log = logging.getLogger(__name__)


def serve_api_forever(settings: Settings, *, host: str, port: int) -> None:
    """Serve until interrupted.

    Raises:
        InvalidInput: the API tokens or the Slack settings are incomplete.
    """
    configure(settings.log_level, settings.log_format)
    if settings.redis_url is None:
        log.warning("REDIS_URL is not set: serving a fresh private Redis (an empty fleet); set "
                    "REDIS_URL to the fleet's Redis")
    single_threaded_models()
    with open_system(settings, notify=True) as system:
        gateway = build_gateway(system.fleet)
        chat = _chat(system)
        try:
            with _slack(settings, system, chat) as mount_slack:
                app = create_api_from_system(system, settings, gateway=gateway, chat=chat)
                mount_slack(app)
                # log_config=None: uvicorn's lines go through the one handler, in the same format.
                uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(),
                            log_config=None)
        finally:
            gateway.buffer.close()


def _chat(system: System) -> Chat | None:
    """The supervisor chat, when this build has it."""
    try:
        from apps.chat import ChatService
    except ImportError:
        log.info("chat is not available in this build; POST /v1/chat answers 503")
        return None
    return ChatService(system)


@contextlib.contextmanager
def _slack(settings: Settings, system: System, chat: Chat | None) -> Iterator[Any]:
    """Yield ``mount(app)``: adds Slack's HTTP route, or does nothing (Socket Mode, no Slack).

    Socket Mode (``FLYWHEEL_SLACK_APP_TOKEN``) connects here and disconnects on exit.
    """
    if settings.slack_bot_token is None:
        yield lambda app: app
        return
    try:
        from apps.slack import mount, slack_app_from_settings, socket_mode_handler
    except ImportError:
        log.warning("Slack settings are set but this build has no Slack app; Slack is off")
        yield lambda app: app
        return

    def slack_chat(thread_key: str, text: str) -> str:
        # Slack hands over the thread, not an approver identity: chat from Slack speaks as
        # "slack", which no policy lists, so decisions stay with the Approve / Reject buttons.
        return "".join(chat(thread_key, text, "slack")) if chat else ""

    from apps.slack.records import SlackRecords

    def on_decision(approval_id: str) -> None:
        # A chat-made request has no agent thread: run it now (once, whoever else tries).
        if system.approved is not None:
            system.approved.execute(approval_id)

    slack = slack_app_from_settings(settings, approvals=system.approvals,
                                    chat=slack_chat if chat else None, on_decision=on_decision,
                                    records=SlackRecords(system.fleet.r, system.fleet.keys))
    if settings.slack_app_token is not None:
        handler = socket_mode_handler(slack, settings.slack_app_token.get_secret_value())
        handler.connect()
        try:
            yield lambda app: app
        finally:
            handler.close()
        return

    def mount_http(app: FastAPI) -> FastAPI:
        log.info("Slack events and interactivity at /slack/events")
        return mount(app, slack)

    yield mount_http
