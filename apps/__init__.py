"""Entry points: the flywheel CLI, background loop, chat, Slack app and HTTP API."""
