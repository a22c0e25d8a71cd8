"""Who hears about incident events: the Slack channel when Slack is configured, else nobody.

The driver calls the notifier when an incident ends ``failed``; the incident graph calls it when
an incident closes (resolved or escalated). Every such event is in the audit trail regardless;
a notifier outage is logged and never stops the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from apps.settings import Settings
from fleet.incidents import IncidentStore

log = logging.getLogger("flywheel.notify")

Notify = Callable[[str, dict[str, Any]], None]


def incident_notifier(settings: Settings, incidents: IncidentStore) -> Notify | None:
    """A notifier posting incident events to ``FLYWHEEL_SLACK_CHANNEL``; None without Slack.

    Args:
        settings: needs ``slack_bot_token`` and ``slack_channel`` (``slack_api_url`` optional).
        incidents: where the notifier reads the incident the event names.
    """
    if settings.slack_bot_token is None or not settings.slack_channel:
        return None
    from apps.slack.app import notify_incident, web_client

    client = web_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    channel = settings.slack_channel

    def notify(event: str, payload: dict[str, Any]) -> None:
        try:
            notify_incident(client, channel, incidents.get(str(payload["incident"])))
        except Exception:  # Slack down must not fail an incident; the audit has the event
            log.exception("posting %s of incident %s to Slack failed", event,
                          payload.get("incident"))

    return notify
