"""Fuzz the HTTP API from its own OpenAPI spec (schemathesis, in-process over ASGI), auth on.

Every operation gets generated valid and invalid requests (examples, coverage and fuzzing
phases); no response may be a 500, and each must match the status codes, content types and
schemas the spec documents. A second run pins the path ids to records that exist, so the fuzzer
also reaches the code behind the 404s.

Schemathesis loads the schema at import, through an ASGI app that forwards to the running test's
app (built over the test's own Redis prefix). ``schemathesis.pytest.from_fixture`` would be the
natural fit, but schemathesis 4.32 sets ``Node._nodeid``, which pytest 9.2 no longer has.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from tests.apps.api_world import SERVICE, bearer, build_world, spec_only_api

MAX_EXAMPLES = 25
"""Generated requests per operation in the fuzzing phase; keeps the whole run bounded."""
INCIDENT = f"inc-{SERVICE}-performance_drop-1"
APPROVAL = "apr-1"
SENT: Counter[str] = Counter()
"""Requests sent, by run and status code (printed at the end of the module)."""


def _config(**parameters: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": 20240601,
        "headers": bearer("tok-alice"),
        "generation": {"max-examples": MAX_EXAMPLES},
        "phases": {"stateful": {"enabled": False}},
        # Random ids are mostly unknown: a 404 for a well-formed request is right, not a failure.
        "checks": {"positive_data_acceptance": {"enabled": False}},
        **({"parameters": parameters} if parameters else {}),
    })


class Forward:
    """An ASGI app that forwards every request to ``target`` (the running test's app)."""

    def __init__(self, target: FastAPI):
        self.target = target

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.target(scope, receive, send)


SPEC_ONLY = spec_only_api()
FORWARD = Forward(SPEC_ONLY)
schema = schemathesis.openapi.from_asgi("/openapi.json", FORWARD, config=_config())
schema_known_ids = schemathesis.openapi.from_asgi(
    "/openapi.json", FORWARD,
    config=_config(svc=SERVICE, incident_id=INCIDENT, approval_id=APPROVAL))


def hand_written_chat(thread_id: str, message: str, user: str) -> Iterator[str]:
    """A hand-written stand-in for the supervisor chat: echoes the message in two pieces."""
    yield f"{user}: "
    yield message


@pytest.fixture()
def app(r, keys, clock, artifacts_dir) -> Iterator[FastAPI]:
    """The API over a fresh prefix holding one service, one open incident, one pending approval."""
    for world in build_world(r, keys, clock, artifacts_dir):
        assert world.signal("performance_drop").id == INCIDENT
        assert world.request_promotion().id == APPROVAL
        FORWARD.target = world.api(gateway=True, chat=hand_written_chat)
        yield FORWARD.target
        FORWARD.target = SPEC_ONLY


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nfuzz: {sum(SENT.values())} requests; by run and status: {dict(sorted(SENT.items()))}")


def _send(run: str, case: Case, app: FastAPI) -> None:
    assert FORWARD.target is app
    response = case.call_and_validate()
    SENT[f"{run} {response.status_code}"] += 1
    assert response.status_code < 500, f"{case.operation.label}: {response.text[:500]}"


# The app fixture is shared by a run's requests on purpose: state left by one (a decision, an
# ingested event) is more ground for the next.
SHARED_APP = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.slow
@schema.parametrize()
@SHARED_APP
def test_no_request_makes_a_server_error(case: Case, app: FastAPI) -> None:
    _send("random-ids", case, app)


@pytest.mark.slow
@schema_known_ids.parametrize()
@SHARED_APP
def test_no_request_on_existing_records_makes_a_server_error(case: Case, app: FastAPI) -> None:
    _send("known-ids", case, app)
