"""Failed and closed incidents reach the notifier the system has (Slack, here a loopback
stand-in of its Web API), and a notifier outage never fails an incident. Regression: issue #15
("Failed incidents are not in flywheel incidents, so nobody is told")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from apps.notify import incident_notifier
from apps.runtime import build_fleet
from apps.serving import http_server
from apps.settings import Settings
from apps.system import build_system
from fleet.embedded_redis import free_port
from fleet.incidents import IncidentStore, Signal
from fleet.schema import FeatureSchema, Policy
from tests.apps.test_slack import SlackWebAPIStandIn

CHANNEL = "CINCIDENTS"


@pytest.fixture()
def slack() -> Iterator[tuple[SlackWebAPIStandIn, str]]:
    stand_in = SlackWebAPIStandIn()
    with http_server(stand_in.app()) as url:
        yield stand_in, f"{url}/api/"


def _settings(api_url: str) -> Settings:
    return Settings(slack_bot_token="xoxb-test", slack_channel=CHANNEL, slack_api_url=api_url)


def _system(r, keys, redis_url, clock, artifacts_dir, api_url: str) -> Any:
    fleet = build_fleet(r, redis_url, prefix=keys.prefix, artifacts=artifacts_dir, clock=clock)
    reg = fleet.registry
    reg.register_service("svc", task="classification", schema=FeatureSchema.numeric(["a", "b"]),
                         policy=Policy(), actor="test")
    for n in (1, 2):
        model = DummyClassifier(strategy="constant", constant=n % 2).fit(np.zeros((2, 2)), [0, 1])
        reg.add_version("svc", model, created_by="test")
        reg.promote("svc", n, actor="test", reason=f"setup v{n}")
    notify = incident_notifier(_settings(api_url),
                               IncidentStore(fleet.r, fleet.keys, fleet.clock, fleet.audit))
    return build_system(fleet, notify=notify)


def _latency(system: Any, clock) -> str:
    inc = system.incidents.observe(Signal(
        service="svc", kind="latency_regression", severity="critical", detector="test",
        evidence={"p95_ms": 900.0, "threshold": 200.0}, version=2, at=clock.now()))
    return inc.id


def _text(call: Any) -> str:
    return json.dumps(call.params)


def test_a_failed_incident_is_posted_with_its_error(r, keys, redis_url, clock, artifacts_dir,
                                                    slack) -> None:
    stand_in, url = slack
    system = _system(r, keys, redis_url, clock, artifacts_dir, url)
    try:
        iid = _latency(system, clock)

        def crash(incident_id: str) -> Any:  # test-only fault: the graph breaks on start
            raise RuntimeError("injected graph crash")

        system.runner.start = crash
        rep = system.driver.step()
    finally:
        system.close()
    assert rep.errors == {iid: "RuntimeError: injected graph crash"}
    [call] = stand_in.wait("chat.postMessage")
    assert call.params["channel"] == CHANNEL
    for shown in (f"Incident {iid}", "*Status*\\nfailed",
                  "incident graph failed: RuntimeError: injected graph crash"):
        assert shown in _text(call), shown


def test_a_closed_incident_is_posted(r, keys, redis_url, clock, artifacts_dir, slack) -> None:
    stand_in, url = slack
    system = _system(r, keys, redis_url, clock, artifacts_dir, url)
    try:
        iid = _latency(system, clock)
        assert system.driver.step().errors == {}
    finally:
        system.close()
    assert system.incidents.get(iid).status.value == "resolved"
    [call] = stand_in.wait("chat.postMessage")
    assert f"Incident {iid}" in _text(call) and "*Status*\\nresolved" in _text(call)


def test_slack_down_does_not_fail_the_incident(r, keys, redis_url, clock, artifacts_dir) -> None:
    system = _system(r, keys, redis_url, clock, artifacts_dir,
                     f"http://127.0.0.1:{free_port()}/api/")
    try:
        iid = _latency(system, clock)
        assert system.driver.step().errors == {}
    finally:
        system.close()
    assert system.incidents.get(iid).status.value == "resolved"
