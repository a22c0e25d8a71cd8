"""Ids from users are checked by pattern at the stores' entry, before they become Redis keys."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from fleet.actions import ActionContext, ActionSpec
from fleet.approvals import ApprovalDecision, ApprovalStore
from fleet.audit import Audit
from fleet.errors import InvalidId, InvalidInput, NotFound, UnknownApproval, UnknownIncident
from fleet.ids import (
    check_approval_id,
    check_incident_id,
    check_service,
    check_thread_id,
    check_version_number,
)
from fleet.incidents import IncidentStore, Signal
from fleet.registry import ArtifactStore, Registry
from fleet.schema import FeatureSchema, Policy

KEY_LIKE = ["open:inc-1:abc", "step:inc-1:s:abc", "pending", "x}:y", "{elec}:service",
            "a b", "", "-lead", "é", "x" * 129, "fp:{elec}:performance_drop"]


@pytest.mark.parametrize("bad", KEY_LIKE)
def test_approval_and_incident_ids_refuse_key_like_values(bad: str) -> None:
    if bad == "pending":  # a plain word is a valid id shape; it is simply not found
        assert check_approval_id(bad) == bad
        return
    with pytest.raises(InvalidId, match="invalid approval id"):
        check_approval_id(bad)
    with pytest.raises(InvalidId, match="invalid incident id"):
        check_incident_id(bad)


def test_each_kind_accepts_its_own_ids_and_refuses_other_types() -> None:
    assert check_approval_id("apr-1a2b3c4d5e6f") == "apr-1a2b3c4d5e6f"
    assert check_incident_id("inc-elec.v2-performance_drop-12") == "inc-elec.v2-performance_drop-12"
    assert check_thread_id("chat-slack:C1:1700000000.000100").startswith("chat-")
    assert check_service("elec") == "elec"
    assert check_version_number(np.int64(3)) == 3
    for bad in (None, 3, b"apr-1", ["apr-1"]):
        with pytest.raises(InvalidId):
            check_approval_id(bad)
    for bad in ("chat-{x}", "a b", "x" * 129):
        with pytest.raises(InvalidId, match="invalid thread id"):
            check_thread_id(bad)
    for bad_service in ("Elec", "x}:y", "a:b"):
        with pytest.raises(InvalidId, match="invalid service name"):
            check_service(bad_service)
    for bad_version in (0, -1, True, 1.0, "1", 2**60):
        with pytest.raises(InvalidId, match="invalid version number"):
            check_version_number(bad_version)


@pytest.fixture()
def approvals(r, keys, clock) -> ApprovalStore:
    return ApprovalStore(r, keys, clock, Audit(r, keys, clock))


def _pending(approvals: ApprovalStore):
    return approvals.request(
        ActionSpec(name="promote", service="elec", args={"version": 2}),
        ActionContext(incident="inc-1", actor="agent:deployment", reason="canary passed",
                      thread_id="inc-1"),
        Policy(approvers=("alice",)),
    )


def test_the_approval_store_refuses_a_key_like_id_before_redis(r, keys, approvals) -> None:
    req = _pending(approvals)
    pointer = f"open:inc-1:{req.action_digest}"
    assert r.type(keys.approval(pointer)) == "string"  # the key the id would name exists
    for call in (lambda: approvals.get(pointer), lambda: approvals.decision(pointer),
                 lambda: approvals.consume(pointer),
                 lambda: approvals.decide(pointer, approve=True, by="alice", reason="",
                                          digest=req.action_digest)):
        with pytest.raises(InvalidId, match="invalid approval id") as info:
            call()
        assert isinstance(info.value, NotFound) and isinstance(info.value, InvalidInput)
    assert r.type(keys.approval(pointer)) == "string"
    assert approvals.decision(req.id) is None  # nothing was decided
    with pytest.raises(UnknownApproval):
        approvals.get("apr-nope")  # a well-formed unknown id is still just unknown


def test_a_decision_is_a_strict_boolean(approvals) -> None:
    req = _pending(approvals)
    for truthy in ("yes", 1, "true", np.bool_(True)):
        with pytest.raises(InvalidInput, match="approve must be true or false"):
            approvals.decide(req.id, approve=truthy, by="alice", reason="",  # type: ignore[arg-type]
                             digest=req.action_digest)
    assert approvals.decision(req.id) is None
    with pytest.raises(ValidationError):
        ApprovalDecision(approval_id=req.id, approved="yes", by="alice",  # type: ignore[arg-type]
                         decided_at=1.0, action_digest=req.action_digest)
    assert approvals.decide(req.id, approve=True, by="alice", reason="",
                            digest=req.action_digest).approved is True


def test_the_incident_store_refuses_key_like_ids(r, keys, clock) -> None:
    store = IncidentStore(r, keys, clock, Audit(r, keys, clock))
    inc = store.observe(Signal(service="elec", kind="performance_drop", severity="warning",
                               detector="cusum", evidence={}, onset=1, version=1,
                               at=clock.now()))
    assert inc is not None
    pointer = "fp:{elec}:performance_drop"
    assert r.type(keys.incident(pointer)) == "string"
    for call in (lambda: store.get(pointer),
                 lambda: store.transition(pointer, "resolved", actor="human:a", reason="x"),
                 lambda: store.add_note(pointer, "hi", actor="human:a")):
        with pytest.raises(InvalidId, match="invalid incident id"):
            call()
    assert r.type(keys.incident(pointer)) == "string"
    with pytest.raises(UnknownIncident):
        store.get("inc-elec-drift-99")
    assert store.get(inc.id).id == inc.id


def test_the_registry_refuses_bad_service_names_and_version_numbers(r, keys, clock,
                                                                     artifacts_dir) -> None:
    registry = Registry(r, keys, ArtifactStore(artifacts_dir), clock=clock)
    registry.register_service("elec", task="classification",
                              schema=FeatureSchema.numeric(["a"]))
    for name in ("x}:y", "{elec}", "Elec", "a" * 64):
        with pytest.raises(InvalidId, match="invalid service name"):
            registry.service(name)
        with pytest.raises(InvalidId):
            registry.versions(name)
    with pytest.raises(InvalidId, match="invalid version number"):
        registry.version("elec", "1:x")  # type: ignore[arg-type]
    with pytest.raises(InvalidId, match="invalid version number"):
        registry.load_model("elec", 0)
