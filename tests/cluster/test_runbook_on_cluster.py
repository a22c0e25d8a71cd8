"""The e2e runbook flows that matter, run unchanged against the 3-master Redis Cluster.

Incident open -> retrain -> canary -> approval -> promote; a bad canary rolled back; a rejected
approval; a data-quality fault quarantined and escalated (tests/e2e/test_runbook_flows.py).
"""

from tests.e2e.test_runbook_flows import (  # noqa: F401 (re-collected here, on the cluster)
    test_bad_canary_is_rolled_back_without_approval,
    test_concept_drift_is_retrained_canaried_approved_promoted_and_resolved,
    test_data_quality_fault_is_quarantined_and_escalated_without_training,
    test_rejected_approval_ends_with_no_deploy_and_the_reason_in_the_audit,
)
