"""Brain fixtures: a guard against real provider models, vcrpy cassettes, a server that never
answers.

The guard against real provider models lives in ``tests/conftest.py`` and covers the whole suite.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import vcr
from pydantic import SecretStr
from vcr.cassette import Cassette

from tests.conftest import RealModelForbiddenError  # noqa: F401 - re-exported for tests

CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"
@dataclass
class Cassettes:
    """Opens hand-written (or re-recorded) cassettes under ``tests/cassettes``.

    Replay only (``record_mode="none"``) unless ``FLYWHEEL_RECORD=1`` and the provider's key is
    set, in which case the cassette is re-recorded against the real provider.
    """

    record: bool
    environ: dict[str, str] = field(default_factory=dict)

    def recording(self, key_env: str) -> bool:
        """Whether this run re-records cassettes of the provider whose key is in ``key_env``."""
        return self.record and bool(self.environ.get(key_env))

    def key(self, key_env: str) -> SecretStr:
        """The real key when re-recording, else the dummy ``sk-test`` the cassettes expect."""
        return SecretStr(self.environ[key_env] if self.recording(key_env) else "sk-test")

    def use(
        self, name: str, *, key_env: str, recordable: bool = True
    ) -> AbstractContextManager[Cassette]:
        """Replay ``tests/cassettes/<name>``; ``recordable=False`` for scripted faults (a 429)
        that a real provider cannot be made to produce on demand."""
        mode = "all" if recordable and self.recording(key_env) else "none"
        return _VCR.use_cassette(str(CASSETTES / name), record_mode=mode)


def json_subset(live: Any, stored: Any) -> None:
    """vcrpy matcher: every field of the stored request body is in the live body.

    Hand-written cassettes keep only the fields that matter (model, max_tokens, tool names), so
    replay still checks what we send without freezing every byte of it.
    """
    want = json.loads(stored.body or b"{}")
    got = json.loads(live.body or b"{}")
    problem = _subset_problem(want, got, "body")
    if problem:
        raise AssertionError(problem)


def _subset_problem(want: Any, got: Any, at: str) -> str | None:
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{at}: expected an object, got {got!r:.80}"
        for key, value in want.items():
            if key not in got:
                return f"{at}.{key}: missing from the request"
            problem = _subset_problem(value, got[key], f"{at}.{key}")
            if problem:
                return problem
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) < len(want):
            return f"{at}: expected at least {len(want)} items, got {got!r:.80}"
        for i, value in enumerate(want):
            problem = _subset_problem(value, got[i], f"{at}[{i}]")
            if problem:
                return problem
        return None
    return None if want == got else f"{at}: expected {want!r}, sent {got!r}"


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    for name in (
        "set-cookie",
        "openai-organization",
        "openai-project",
        "anthropic-organization-id",
    ):
        response["headers"].pop(name, None)
        response["headers"].pop(name.title(), None)
    return response


_VCR = vcr.VCR(
    serializer="yaml",
    match_on=["method", "scheme", "host", "port", "path", "json_subset"],
    filter_headers=["authorization", "x-api-key", "api-key", "openai-organization", "cookie"],
    before_record_response=_scrub_response,
    decode_compressed_response=True,
)
_VCR.register_matcher("json_subset", json_subset)


@pytest.fixture()
def cassette(monkeypatch: pytest.MonkeyPatch) -> Cassettes:
    """Cassettes for the real litellm wire path; see ``tests/cassettes/README.md``."""
    import litellm

    # litellm prints a "Give Feedback" banner on every provider error; the tests expect errors.
    monkeypatch.setattr(litellm, "suppress_debug_info", True)
    return Cassettes(record=os.environ.get("FLYWHEEL_RECORD") == "1", environ=dict(os.environ))


@dataclass
class SilentServer:
    """A TCP server on loopback that accepts connections and never sends a byte."""

    url: str
    """``http://127.0.0.1:<port>/v1``, to use as ``api_base``."""
    accepted: list[socket.socket]
    """Connections accepted so far (one per request attempt)."""


@pytest.fixture()
def silent_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentServer]:
    """A real server on 127.0.0.1 that never answers, for timeouts without a cassette."""
    import litellm

    monkeypatch.setattr(litellm, "suppress_debug_info", True)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(conn)  # held open, never answered

    thread = threading.Thread(target=serve, name="silent-server", daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    yield SilentServer(url=f"http://127.0.0.1:{port}/v1", accepted=accepted)
    stop.set()
    thread.join(timeout=2)
    listener.close()
    for conn in accepted:
        conn.close()
