"""Prediction and label events in capped per-service streams, a dead-letter stream, a reader."""

from fleet.telemetry.buffer import TelemetryBuffer
from fleet.telemetry.events import LabelEvent, PredictionEvent
from fleet.telemetry.reader import TelemetryReader
from fleet.telemetry.window import LabelledWindow
from fleet.telemetry.writer import IngestResult, TelemetryWriter

__all__ = [
    "IngestResult",
    "LabelEvent",
    "LabelledWindow",
    "PredictionEvent",
    "TelemetryBuffer",
    "TelemetryReader",
    "TelemetryWriter",
]
