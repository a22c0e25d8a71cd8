"""Where replayed traffic goes: the ``Target`` protocol and an HTTP target for the gateway API.

Wire format (the gateway's): ``POST /v1/models/{svc}/predict`` with ``{"instances": [...],
"request_ids": [...]}`` answers ``{"predictions": [{"request_id", "version", "prediction",
"error"}, ...], "errors": [{"index", "request_id", "reason"}, ...]}`` (a rejected row's
``version`` is null); ``POST /v1/models/{svc}/feedback`` with ``{"labels": [{"request_id",
"label"}]}`` answers ``{"accepted": int, "rejected": int, "errors": [{"index", "reason"}, ...]}``.
"""

from __future__ import annotations

from typing import Any, Protocol, TypedDict

Row = dict[str, float | None]
"""One request's features; None is a null."""


class Served(TypedDict):
    """The gateway's answer to one replayed row."""

    request_id: str
    version: int | None
    """Version that answered; None when the request failed before routing."""
    prediction: float | None
    """None when the request failed."""
    error: str | None
    """Why it failed, else None."""


class Target(Protocol):
    """Anything that serves predictions and takes labels for a service."""

    def predict(self, service: str, rows: list[Row], request_ids: list[str]) -> list[Served]:
        """Score ``rows`` (one answer per row, in order)."""
        ...

    def feedback(self, service: str, labels: list[tuple[str, Any]]) -> int:
        """Send ``(request_id, label)`` pairs; return how many were accepted."""
        ...


class Response(Protocol):
    """The part of an httpx response :class:`HttpTarget` uses."""

    status_code: int
    text: str

    def json(self) -> Any:
        """Decode the JSON body."""
        ...

    def raise_for_status(self) -> Any:
        """Raise on a 4xx/5xx status."""
        ...


class HttpClient(Protocol):
    """The part of an httpx-style client :class:`HttpTarget` uses."""

    def post(self, url: str, *, json: Any = None) -> Response:
        """POST ``json`` to ``url`` (relative to the client's base URL)."""
        ...


class HttpTarget:
    """Speaks the gateway's HTTP API through an httpx-style client.

    Works with ``httpx.Client(base_url="http://127.0.0.1:PORT")`` and with starlette's
    ``TestClient(app)`` (an in-process ASGI client; recent starlette builds it on ``httpx2``,
    hence the structural :class:`HttpClient` type rather than ``httpx.Client``).

    A 4xx/5xx answer to a predict call becomes an error on every row of the batch, so the replay
    records it and goes on; transport failures (gateway down) raise.
    """

    def __init__(self, client: HttpClient):
        self.client = client

    def predict(self, service: str, rows: list[Row], request_ids: list[str]) -> list[Served]:
        """POST a batch to ``/v1/models/{service}/predict``."""
        resp = self.client.post(
            f"/v1/models/{service}/predict", json={"instances": rows, "request_ids": request_ids}
        )
        if resp.status_code >= 400:
            error = f"http {resp.status_code}: {resp.text[:200]}"
            return [
                Served(request_id=rid, version=None, prediction=None, error=error)
                for rid in request_ids
            ]
        return [
            Served(
                request_id=p["request_id"],
                version=p.get("version"),
                prediction=p.get("prediction"),
                error=p.get("error"),
            )
            for p in resp.json()["predictions"]
        ]

    def feedback(self, service: str, labels: list[tuple[str, Any]]) -> int:
        """POST labels to ``/v1/models/{service}/feedback``; return the accepted count.

        Raises:
            HTTPStatusError: the client library's, when the gateway refuses the body (a bug,
                not traffic).
        """
        body = {"labels": [{"request_id": rid, "label": _plain(v)} for rid, v in labels]}
        resp = self.client.post(f"/v1/models/{service}/feedback", json=body)
        resp.raise_for_status()
        return int(resp.json()["accepted"])


def _plain(v: Any) -> Any:
    """Turn numpy scalars into Python numbers so they serialise as JSON."""
    return v.item() if hasattr(v, "item") else v
