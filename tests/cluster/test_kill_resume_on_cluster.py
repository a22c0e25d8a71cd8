"""The kill drill on the cluster: a process SIGKILLed at the approval resumes in a new process.

Both processes get the ``redis+cluster://`` URL (tests/e2e/test_kill_resume.py, unchanged).
"""

from tests.e2e.test_kill_resume import (  # noqa: F401 (re-collected here, on the cluster)
    test_killed_between_approval_and_promotion_resumes_and_promotes_exactly_once,
)
