"""The runbook brain end to end: real Redis, gateway, trainer, detectors, graph, checkpoints."""

from __future__ import annotations

from evals.world import reject_all
from fleet.audit import Audit
from fleet.datasets import rotating_hyperplane
from fleet.replay.faults import Fault, FaultSchedule
from fleet.schema import Policy

DRIFT = 4_000


def _actions(world, prefix: str = "") -> list[str]:
    return [e.action for e in Audit(world.fleet.r, world.fleet.keys).read(
        service=world.service, count=5000) if e.action.startswith(prefix)]


def test_concept_drift_is_retrained_canaried_approved_promoted_and_resolved(world_factory,
                                                                           record_usage):
    stream = rotating_hyperplane(16_000, drifts=[DRIFT], width=1, seed=3)
    world = world_factory(stream=stream)
    world.run(2_000, 16_000)

    incidents = world.system.incidents.recent(20, world.service)
    perf = [i for i in incidents if i.kind == "performance_drop"]
    assert perf, f"no performance incident; got {[(i.kind, i.status) for i in incidents]}"
    assert perf[-1].status.value == "resolved", perf[-1]
    svc = world.fleet.registry.service(world.service)
    assert svc.champion == 2 and svc.previous == 1
    trail = _actions(world)
    for step in ("registry.add_version", "registry.start_canary", "approval.request",
                 "approval.approve", "registry.promote"):
        assert step in trail, f"{step} missing from {trail}"
    # The initial promotion of v1 comes first; v2's promotion must follow the approval.
    assert trail.index("approval.approve") < len(trail) - 1 - trail[::-1].index("registry.promote")
    v2 = world.fleet.registry.version(world.service, 2)
    assert v2.metrics["improvement"] > 0.05
    # The runbook brain is not an LLM: the whole incident costs no LLM call and no token.
    assert world.system.usage.snapshot(perf[-1].id).llm_calls == 0
    assert world.system.usage.incidents() == []
    record_usage(world)


def _world(world_factory, **kw):
    stream = rotating_hyperplane(14_000, drifts=[DRIFT], width=1, seed=3)
    return world_factory(stream=stream, **kw)


def test_worse_candidate_is_not_promoted(world_factory):
    """Labels turn to noise at the drift: the retrained candidate cannot beat the champion."""
    world = _world(world_factory)
    noise = FaultSchedule(faults=(Fault(kind="concept_change", start=DRIFT,
                                        params={"p": 0.5, "how": "flip"}),))
    world.run(2_000, 9_000, faults=noise)
    perf = [i for i in world.system.incidents.recent(20, world.service)
            if i.kind == "performance_drop"]
    assert perf and perf[0].status.value == "escalated", perf
    # The default gate (not_worse) would try a tie; a model of coin flips is no tie worth it.
    assert "does not beat the constant predictor" in perf[0].resolution, perf[0].resolution
    assert world.fleet.registry.service(world.service).champion == 1
    trail = _actions(world)
    assert "registry.start_canary" not in trail and "registry.promote" not in trail[3:]
    assert "approval.request" not in trail


def test_the_simulated_on_call_person_acknowledges_an_escalation_after_its_delay(
        world_factory):
    """The eval's and the demo's person closes an escalation once it has waited
    ``ack_escalations_after_s``: the incident ends resolved as acknowledged, so it no longer
    holds the service's performance alarm, and the champion stays."""
    world = _world(world_factory)
    world.ack_escalations_after_s = 60.0  # 1,200 rows at this world's 20 rows a second
    noise = FaultSchedule(faults=(Fault(kind="concept_change", start=DRIFT,
                                        params={"p": 0.5, "how": "flip"}),))
    world.run(2_000, 12_000, faults=noise)
    perf = [i for i in world.system.incidents.recent(20, world.service)
            if i.kind == "performance_drop"]
    assert perf and perf[-1].status.value == "resolved", perf
    assert perf[-1].resolution.startswith("acknowledged: keep the current model"), perf[-1]
    assert not world.system.incidents.open_incidents(world.service)
    assert world.fleet.registry.service(world.service).champion == 1


def test_a_rise_that_does_not_last_closes_the_incident_without_a_retrain(world_factory):
    """A broken labelling job flips labels for 600 rows, then stops. The CUSUM alarms, but once
    the rows settle the champion errs no more than before: no candidate is trained."""
    world = world_factory(stream=rotating_hyperplane(8_000, seed=3))  # no concept drift
    blip = FaultSchedule(faults=(Fault(kind="concept_change", start=DRIFT, stop=DRIFT + 600,
                                       params={"p": 0.3, "how": "flip"}),))
    world.run(2_000, 8_000, faults=blip)
    perf = [i for i in world.system.incidents.recent(20, world.service)
            if i.kind == "performance_drop"]
    assert perf, "the label flips raised no performance incident"
    assert perf[0].status.value == "resolved", perf[0].resolution
    assert "the rise did not last; no retrain" in perf[0].resolution
    reg = world.fleet.registry
    assert reg.service(world.service).champion == 1
    assert not _exists(reg, world.service, 2)  # no candidate was ever trained


def test_bad_canary_is_rolled_back_without_approval(world_factory):
    world = _world(world_factory)
    broken = FaultSchedule(faults=(Fault(kind="errors", start=DRIFT, version="challenger",
                                         params={"error_rate": 0.6}),))
    world.run(2_000, 12_000, faults=broken)
    svc = world.fleet.registry.service(world.service)
    assert svc.champion == 1 and svc.challenger is None
    assert world.fleet.registry.version(world.service, 2).status.value == "rejected"
    trail = _actions(world)
    assert "registry.start_canary" in trail and "registry.clear_challenger" in trail
    assert "approval.request" not in trail and "registry.promote" not in trail[3:]


def test_data_quality_fault_is_quarantined_and_escalated_without_training(world_factory):
    world = _world(world_factory)
    nulls = FaultSchedule(faults=(Fault(kind="nulls", start=DRIFT, stop=DRIFT + 1_500,
                                        feature="x1", params={"p": 0.4}),))
    world.stream = rotating_hyperplane(14_000, drifts=[], seed=3)
    world.run(2_000, 7_000, faults=nulls)
    dq = [i for i in world.system.incidents.recent(20, world.service) if i.kind == "data_quality"]
    assert dq and dq[0].status.value == "escalated", dq
    assert "quarantined" in dq[0].resolution
    assert world.system.ops.quarantined(world.service), "no quarantined range recorded"
    assert [v.number for v in world.fleet.registry.versions(world.service)] == [1]


def test_rejected_approval_ends_with_no_deploy_and_the_reason_in_the_audit(world_factory):
    world = _world(world_factory, human=reject_all)
    world.run(2_000, 12_000)
    svc = world.fleet.registry.service(world.service)
    assert svc.champion == 1 and svc.challenger is None
    audit = Audit(world.fleet.r, world.fleet.keys).read(service=world.service, count=5000)
    rejects = [e for e in audit if e.action == "approval.reject"]
    assert rejects and rejects[0].reason == "not during the trading freeze"
    perf = [i for i in world.system.incidents.recent(20, world.service)
            if i.kind == "performance_drop"]
    assert perf[0].status.value == "escalated"
    assert "not during the trading freeze" in perf[0].resolution
    assert "registry.promote" not in [e.action for e in audit][3:]


def test_shadow_rollout_promotes_after_a_paired_analysis(world_factory):
    """With ``rollout: shadow`` the candidate scores all traffic silently; users never see it."""
    world = _world(world_factory, policy=Policy(rollout="shadow"))
    world.run(2_000, 9_000)
    svc = world.fleet.registry.service(world.service)
    assert svc.champion == 2, [(i.kind, i.status.value, i.resolution[:80])
                               for i in world.system.incidents.recent(10, world.service)]
    trail = _actions(world)
    assert "registry.start_shadow" in trail and "registry.start_canary" not in trail
    served = world.fleet.reader.recent_predictions(world.service, 20_000)
    assert not [e for _, e in served if e.version == 2 and e.shadow is False
                and e.ts < world.fleet.registry.version(world.service, 2).created_at + 1e9
                and _before_promotion(world, e.ts)]


def _before_promotion(world, ts: float) -> bool:
    promo = [e.ts for e in Audit(world.fleet.r, world.fleet.keys).read(service=world.service,
                                                                        count=5000)
             if e.action == "registry.promote" and e.details.get("version") == 2]
    return bool(promo) and ts < promo[0]


def _incremental_run(world_factory, *, stopgap: bool):
    """One incremental drift (the concept rotates over 2,000 rows), shadow rollouts.

    At the replay's 20 rows a second, a one-minute retrain cooldown spans 1,200 rows.
    """
    stream = rotating_hyperplane(12_000, drifts=[DRIFT], width=2_000, seed=5)
    world = world_factory(stream=stream, policy=Policy(
        rollout="shadow", stopgap_min_rise=0.05 if stopgap else None, cooldown_s=60))
    world.run(2_000, 12_000)
    perf = [i for i in world.system.incidents.recent(20, world.service)
            if i.kind == "performance_drop"]
    assert perf, "no performance incident"
    first = perf[-1]  # oldest first: the incident the drift opened
    reg = world.fleet.registry
    trained = [reg.version(world.service, n) for n in range(2, 20)
               if _exists(reg, world.service, n)]
    return world, first, trained


def _exists(reg, service: str, n: int) -> bool:
    try:
        reg.version(service, n)
    except Exception:  # NotFound: past the last version
        return False
    return True


def test_a_drift_still_under_way_gets_a_stopgap_then_a_retrain_on_the_settled_concept(
        world_factory):
    world, inc, trained = _incremental_run(world_factory, stopgap=True)
    assert inc.status.value == "resolved", inc.resolution
    promoted = [e for e in Audit(world.fleet.r, world.fleet.keys).read(
        service=world.service, count=5000) if e.action == "registry.promote"
        and e.actor != "eval" and inc.opened_at <= e.ts <= (inc.closed_at or 1e18)]
    assert [e.details["version"] for e in promoted] == [2, 3], promoted
    stopgap, settled = trained[0], trained[1]
    # The stopgap learnt from the min_rows_after_drift most recent rows ...
    need = Policy().min_rows_after_drift
    assert stopgap.training_window["rows"] == need, stopgap.training_window
    # ... the second model from rows the stopgap answered once the drift had settled.
    assert settled.parent == 2
    assert "v3" in inc.resolution


def test_without_stopgap_the_incident_waits_and_retrains_once(world_factory):
    world, inc, trained = _incremental_run(world_factory, stopgap=False)
    assert inc.status.value == "resolved", inc.resolution
    promoted = [e for e in Audit(world.fleet.r, world.fleet.keys).read(
        service=world.service, count=5000) if e.action == "registry.promote"
        and e.actor != "eval" and inc.opened_at <= e.ts <= (inc.closed_at or 1e18)]
    assert [e.details["version"] for e in promoted] == [2]
    assert trained[0].training_window["rows"] != Policy().min_rows_after_drift


def test_an_abrupt_drift_gets_no_stopgap_and_one_retrain_on_the_rows_after_the_change(
        world_factory):
    """Stopgaps on (the default): an abrupt change has settled by the time the stopgap's
    ``min_rows_after_drift`` rows are in, so the one round trains on the new concept only."""
    stream = rotating_hyperplane(12_000, drifts=[DRIFT], width=1, seed=3)
    world = world_factory(stream=stream, policy=Policy(
        rollout="shadow", stopgap_min_rise=0.05, cooldown_s=60,
        thresholds={"performance_min_effect": 0.05}))
    world.run(2_000, 12_000)
    inc = [i for i in world.system.incidents.recent(20, world.service)
           if i.kind == "performance_drop"][-1]
    assert inc.status.value == "resolved", inc.resolution
    assert inc.resolution.startswith("promoted v2 "), inc.resolution
    reg = world.fleet.registry
    assert reg.service(world.service).champion == 2
    assert not _exists(reg, world.service, 3)  # no stopgap, so no second round
    assert reg.version(world.service, 2).training_window["rows"] >= Policy().min_rows_after_drift


def test_a_stopgap_that_already_serves_the_new_concept_well_is_kept_without_a_second_retrain(
        world_factory):
    """A drift of 1,500 rows, still rising when the stopgap's 1,000 rows are in: the stopgap
    (trained on those rows) is live and, once the drift has settled, errs no more than the
    champion did before the drift, so the incident ends without the settled retrain."""
    stream = rotating_hyperplane(12_000, drifts=[DRIFT], width=1_500, seed=3)
    world = world_factory(stream=stream, policy=Policy(
        rollout="shadow", stopgap_min_rise=0.05, cooldown_s=60,
        thresholds={"performance_min_effect": 0.05}))
    world.run(2_000, 12_000)
    perf = [i for i in world.system.incidents.recent(20, world.service)
            if i.kind == "performance_drop"]
    inc = perf[-1]
    assert inc.status.value == "resolved", inc.resolution
    assert "keeping the stopgap v2" in inc.resolution and "no second retrain" in inc.resolution
    reg = world.fleet.registry
    assert reg.service(world.service).champion == 2
    assert not _exists(reg, world.service, 3)  # the settled retrain never ran


def test_a_window_service_trains_on_its_whole_window_inside_a_performance_incident(
        world_factory):
    """``train_on: window``: the retrain after an abrupt change uses the whole training window,
    rows from before the onset included, where the default trains on the rows since it."""
    stream = rotating_hyperplane(9_000, drifts=[DRIFT], width=1, seed=3)
    rows = {}
    for train_on in ("drift_rows", "window"):
        world = world_factory(stream=stream, service=train_on,
                              policy=Policy(rollout="shadow", train_on=train_on))
        world.run(2_000, 9_000)
        assert [i.kind for i in world.system.incidents.recent(20, world.service)
                if i.kind == "performance_drop"], f"{train_on}: no performance incident"
        rows[train_on] = world.fleet.registry.version(world.service, 2).training_window["rows"]
    # Since the onset: at least the rows the incident waits for, far fewer than the window.
    assert Policy().min_rows_after_drift <= rows["drift_rows"] < rows["window"], rows
    assert rows["window"] >= 2 * rows["drift_rows"], rows


def test_a_not_worse_service_ships_a_candidate_that_only_ties_the_degraded_champion(
        world_factory):
    """A third of the labels flip at row 4,000 of a stream whose rule never changes: a
    retrained candidate can only tie the champion (both err on the flipped rows), yet it
    clearly beats the constant predictor. ``significant`` (beat the champion by the margin,
    beyond chance) escalates; ``not_worse`` tries the tie in a shadow, whose live analysis
    then decides."""
    noise = FaultSchedule(faults=(Fault(kind="concept_change", start=DRIFT,
                                        params={"p": 0.3, "how": "flip"}),))
    runs = {}
    for gate in ("significant", "not_worse"):
        world = world_factory(stream=rotating_hyperplane(9_000, seed=3), service=gate,
                              model={"model": "logreg"}, policy=Policy(
                                  rollout="shadow", train_on="window", candidate_gate=gate))
        world.run(2_000, 9_000, faults=noise)
        perf = [i for i in world.system.incidents.recent(20, world.service)
                if i.kind == "performance_drop"]
        assert perf, f"{gate}: no performance incident"
        runs[gate] = (perf[-1], world.fleet.registry.version(world.service, 2), _actions(world))
    for gate, (_, v2, _) in runs.items():  # the same rows and recipe: the same tie
        assert 0.0 <= v2.metrics["improvement"] < Policy().min_improvement, (gate, v2.metrics)
    inc, _, trail = runs["significant"]
    assert inc.status.value == "escalated" and "not better" in inc.resolution, inc.resolution
    assert "registry.start_shadow" not in trail
    inc, _, trail = runs["not_worse"]
    assert "registry.start_shadow" in trail, (inc.resolution, trail)
    assert "not better" not in inc.resolution
