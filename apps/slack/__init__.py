"""Slack: approval prompts (Approve / Reject), incident notifications, chat; HTTP or Socket Mode."""

from apps.slack.app import (
    build_slack_app,
    fastapi_router,
    mount,
    notify_incident,
    post_approval,
    run_socket_mode,
    slack_app_from_settings,
    socket_mode_handler,
    thread_key,
    web_client,
)

__all__ = [
    "build_slack_app",
    "fastapi_router",
    "mount",
    "notify_incident",
    "post_approval",
    "run_socket_mode",
    "slack_app_from_settings",
    "socket_mode_handler",
    "thread_key",
    "web_client",
]
