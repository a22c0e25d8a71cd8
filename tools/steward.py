"""Data Steward tools: validate a window, quarantine it, build a training set."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, InjectedToolCallId, tool

from tools.deps import ToolDeps, action_context
from tools.results import Status, guarded, ok, result

READ_ONLY = frozenset({"validate_window", "build_training_set"})


def make_steward_tools(deps: ToolDeps) -> list[BaseTool]:
    """The Data Steward's tools over ``deps``."""

    @tool(parse_docstring=True)
    @guarded
    def validate_window(service: str, rows: int | None = None) -> str:
        """Check the recent labelled window: schema, nulls, ranges, duplicates, label coverage.

        Args:
            service: service name.
            rows: window size in labelled rows (default: the policy's training window).
        """
        return ok(**deps.monitor.validate_window(service, rows=rows))

    @tool(parse_docstring=True)
    @guarded
    def quarantine_window(
        service: str, first_id: str, last_id: str, reason: str, config: RunnableConfig,
        tool_call_id: Annotated[str, InjectedToolCallId],
    ) -> str:
        """Quarantine a window of telemetry so it is never trained on again.

        Args:
            service: service name.
            first_id: telemetry stream id of the window's first row, like "1700000000000-0".
            last_id: telemetry stream id of the window's last row.
            reason: why, one line.
        """
        ctx = action_context(config, role="data_steward", reason=reason, step=tool_call_id)
        res = deps.ops.quarantine(service, first_id, last_id, ctx)
        return ok(**res.stored(), replayed=res.replayed)

    @tool(parse_docstring=True)
    @guarded
    def build_training_set(service: str, rows: int | None = None) -> str:
        """Describe the training set a retrain would use now (quarantined data left out).

        Args:
            service: service name.
            rows: labelled rows wanted (default: the policy's training window).
        """
        win = deps.ops.training_window(service, rows)
        if len(win) == 0:
            return result(Status.NO_DATA, service=service, searched="labelled telemetry",
                          note="no labelled rows outside quarantined ranges")
        classes = {str(k): int(v) for k, v in zip(*_counts(win.y), strict=True)}
        return ok(service=service, rows=len(win), first_id=win.first_id, last_id=win.last_id,
                  label_counts=classes, quarantined_ranges=len(deps.ops.quarantined(service)))

    return [validate_window, quarantine_window, build_training_set]


def _counts(y: np.ndarray) -> tuple[list[float], list[int]]:
    vals, counts = np.unique(y, return_counts=True)
    return vals.tolist(), counts.tolist()
