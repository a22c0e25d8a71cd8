"""Registry round-trips, pointer changes with audit entries, and artifact integrity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fleet.audit import Audit
from fleet.errors import AlreadyExists, IntegrityError, InvalidInput, UnknownService, UnknownVersion
from fleet.registry import ArtifactStore, Mode, Registry, VersionStatus
from fleet.schema import FeatureSchema, Policy


@pytest.fixture()
def registry(r, keys, clock, artifacts_dir: Path) -> Registry:
    return Registry(r, keys, ArtifactStore(artifacts_dir), clock=clock)


def _model(seed: int = 0) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return LogisticRegression().fit(X, y)


SCHEMA = FeatureSchema.numeric(["a", "b", "c"], a=(-5.0, 5.0))


def test_service_and_version_round_trip(registry: Registry, clock) -> None:
    policy = Policy(approvers=("alice", "bob"), max_canary_pct=5.0)
    svc = registry.register_service("churn", task="classification", schema=SCHEMA, policy=policy)
    assert registry.service("churn") == svc
    assert registry.services() == ["churn"]
    assert registry.service("churn").policy.approvers == ("alice", "bob")
    assert registry.service("churn").schema_.features[0].min == -5.0

    v = registry.add_version(
        "churn", _model(), created_by="test", training_window={"rows": 200},
        data_hash="abc", params={"C": 1.0}, metrics={"holdout_accuracy": 0.91},
    )
    assert v.number == 1 and v.status is VersionStatus.CANDIDATE
    back = registry.version("churn", 1)
    assert back == v
    model = registry.load_model("churn", 1)
    X = np.array([[1.0, 1.0, 0.0], [-1.0, -1.0, 0.0]])
    assert model.predict(X).tolist() == [1, 0]


def test_duplicate_and_unknown_names_are_clear(registry: Registry) -> None:
    registry.register_service("a1", task="classification", schema=SCHEMA)
    with pytest.raises(AlreadyExists, match="'a1' is already registered"):
        registry.register_service("a1", task="classification", schema=SCHEMA)
    with pytest.raises(UnknownService, match="unknown service 'nope'; known services: a1"):
        registry.service("nope")
    with pytest.raises(UnknownVersion, match="service 'a1' has no version 7"):
        registry.version("a1", 7)
    with pytest.raises(ValueError, match="invalid service name 'Bad Name'"):
        registry.register_service("Bad Name", task="classification", schema=SCHEMA)


def test_pointer_changes_update_statuses_generation_and_audit(registry: Registry, r, keys) -> None:
    registry.register_service("s", task="classification", schema=SCHEMA)
    v1 = registry.add_version("s", _model(1), created_by="test").number
    v2 = registry.add_version("s", _model(2), created_by="test", parent=v1).number
    g0 = registry.generation("s")

    registry.promote("s", v1, actor="human:ops", reason="first model")
    s = registry.service("s")
    assert (s.champion, s.challenger, s.mode) == (v1, None, Mode.FULL)
    assert s.generation == g0 + 1

    registry.start_canary("s", v2, 0.1, actor="agent:deployment", reason="candidate better")
    s = registry.service("s")
    assert (s.champion, s.challenger, s.mode, s.split) == (v1, v2, Mode.CANARY, 0.1)
    assert registry.version("s", v2).status is VersionStatus.CANARY

    registry.promote("s", v2, actor="human:ops", reason="canary passed")
    s = registry.service("s")
    assert (s.champion, s.previous, s.challenger) == (v2, v1, None)
    assert registry.version("s", v1).status is VersionStatus.RETIRED
    assert registry.version("s", v2).status is VersionStatus.PRODUCTION

    registry.rollback("s", actor="agent:deployment", reason="accuracy fell")
    s = registry.service("s")
    assert s.champion == v1
    assert registry.version("s", v2).status is VersionStatus.REJECTED
    assert s.generation == g0 + 4

    entries = Audit(r, keys).read(service="s")
    actions = [e.action for e in entries]
    assert actions == [
        "registry.register_service", "registry.add_version", "registry.add_version",
        "registry.promote", "registry.start_canary", "registry.promote", "registry.rollback",
    ]
    rb = entries[-1]
    assert rb.actor == "agent:deployment" and rb.reason == "accuracy fell"
    assert rb.details["champion_before"] == v2 and rb.details["version"] == v1


def test_invalid_pointer_moves_are_refused(registry: Registry) -> None:
    registry.register_service("s", task="classification", schema=SCHEMA)
    v1 = registry.add_version("s", _model(1), created_by="t").number
    with pytest.raises(InvalidInput, match="has no champion"):
        registry.start_shadow("s", v1, actor="t", reason="x")
    registry.promote("s", v1, actor="t", reason="x")
    with pytest.raises(InvalidInput, match="already the champion"):
        registry.start_canary("s", v1, 0.1, actor="t", reason="x")
    with pytest.raises(InvalidInput, match="between 0 and 1"):
        registry.start_canary("s", v1, 1.5, actor="t", reason="x")
    with pytest.raises(InvalidInput, match="no previous champion"):
        registry.rollback("s", actor="t", reason="x")
    with pytest.raises(InvalidInput, match="serving traffic"):
        registry.retire("s", v1, actor="t", reason="x")


def test_tampered_artifact_refuses_to_load(registry: Registry) -> None:
    registry.register_service("s", task="classification", schema=SCHEMA)
    v = registry.add_version("s", _model(), created_by="t")
    path = Path(v.artifact_uri.removeprefix("file://"))
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="refusing to load a modified model"):
        registry.load_model("s", v.number)
