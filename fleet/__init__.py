"""The production flywheel manages: Redis state, registry, gateway, telemetry, trainer, monitor.

Nothing in this package knows about LLMs, LangGraph or the CLI; everything above imports it.
"""
