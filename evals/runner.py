"""Run scenarios through the real system (:mod:`evals.world`) and their baselines, and score them.

flywheel runs in this process over real Redis in simulated time: the gateway serves every row,
the monitor ticks every ``tick_every`` rows, the incident graph (runbook brain, or an LLM through
``BrainConfig(model=...)``) acts, and the simulated human answers approvals. Its score comes from
the evidence the run leaves in Redis (audit trail and incidents), read back afterwards.

The baselines need no Redis; they run in a worker process while flywheel runs here, so a suite
uses both cores.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis

from evals.baselines import run_baselines
from evals.cases import Case
from evals.scorers import (
    RowClock,
    Score,
    SystemRun,
    audit_events,
    onsets,
    opened_incidents,
    score,
)
from evals.world import Human, approve_all, make_world, never_answers, reject_all
from fleet.audit import Audit
from fleet.datasets import DriftStream
from fleet.replay.replayer import BatchReport
from fleet.store import connect
from supervisors.brains import BrainConfig

HUMANS: dict[str, Human] = {"approve": approve_all, "reject": reject_all,
                            "never": never_answers}
"""The simulated on-call person of a case's ``human`` field."""

FLYWHEEL = "flywheel"


@dataclass
class CaseResult:
    """Every system's run of one case, and their scores."""

    case: Case
    stream: DriftStream
    quick: bool
    runs: list[SystemRun]
    scores: list[Score] = field(default_factory=list)
    onsets: list[int] = field(default_factory=list)
    reference: float | None = None
    """Accuracy of the case's upper reference system."""
    error: str = ""
    """Why flywheel's run failed, if it did (the baselines are still scored)."""
    replicas: list[CaseResult] = field(default_factory=list)
    """The same case on the next stream seeds (``run_suite(seeds=N)``): flywheel and the
    baselines the seeded goals need, scored alike."""

    @property
    def seeds(self) -> list[CaseResult]:
        """This result and its replicas, the case's own seed first."""
        return [self, *self.replicas]

    def run(self, system: str) -> SystemRun | None:
        """The run of ``system`` (``flywheel``, ``static``, ``every 500``, ``oracle``, ...)."""
        return next((r for r in self.runs if r.system == system), None)

    def score_of(self, system: str) -> Score | None:
        """The score of ``system``."""
        return next((s for s in self.scores if s.system == system), None)


REFERENCE = {"oracle": "oracle", "periodic_500": "every 500", "static": "static"}


def finish(case: Case, stream: DriftStream, runs: list[SystemRun], *, quick: bool,
           error: str = "") -> CaseResult:
    """Score every run against the case's reference."""
    ref_run = next((r for r in runs if r.system == REFERENCE[case.reference]), None)
    ref = ref_run.accuracy if ref_run is not None else None
    res = CaseResult(case, stream, quick, runs, onsets=onsets(case, stream), reference=ref,
                     error=error)
    res.scores = [score(case, stream, r, ref, quick=quick) for r in runs]
    return res


# --- flywheel -----------------------------------------------------------------------------------


def run_flywheel(
    case: Case,
    stream: DriftStream,
    r: redis.Redis,
    url: str,
    *,
    executor: Executor | None = None,
    brain: BrainConfig | None = None,
    artifacts: Path | None = None,
    prefix: str | None = None,
) -> SystemRun:
    """Replay ``case`` through the whole system on Redis ``r`` and read back what it did.

    The keys live under a fresh prefix and are deleted afterwards.
    """
    prefix = prefix or f"eval:{case.name}:{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if artifacts is None:
            artifacts = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="flywheel-eval-")))
        stack.callback(_delete_prefix, r, prefix)
        world = make_world(r, url, prefix=prefix, artifacts=artifacts / "artifacts",
                           stream=stream, train_rows=case.train_rows,
                           policy=case.service_policy, human=HUMANS[case.human], brain=brain,
                           executor=executor, seed=case.seed, model=case.model)
        stack.callback(world.close)
        world.tick_every = case.tick_every
        world.ack_escalations_after_s = case.ack_escalations_after_s
        start, stop = case.train_rows, len(stream)
        correct = np.zeros(stop - start, dtype=bool)
        version = np.zeros(stop - start, dtype=np.int64)
        clock = RowClock()

        def observe(rep: BatchReport) -> None:
            b = rep.batch
            lo = b.start - start
            for i, (served, label) in enumerate(zip(rep.served, b.labels, strict=True)):
                correct[lo + i] = served["error"] is None and served["prediction"] == label
                version[lo + i] = served["version"] or 0
            clock.mark(world.clock.now(), b.start + len(b.rows))

        world.run(start, stop, faults=case.schedule, batch=case.batch,
                  rows_per_s=case.rows_per_s, seed=case.seed, on_batch=observe)
        clock.mark(world.clock.now(), stop)
        svc = world.service
        entries = Audit(r, world.fleet.keys).read(count=10**7)
        status = {i.id: i.status.value for i in world.system.incidents.recent(10_000, svc)}
        usage = world.system.usage
        spent = [usage.snapshot(i) for i in usage.incidents()]
        return SystemRun(
            FLYWHEEL, start, correct, version, audit_events(entries, svc, clock),
            incidents=opened_incidents(entries, svc, clock, status),
            llm_calls=sum(u.llm_calls for u in spent),
            tokens=sum(u.total_tokens for u in spent),
            wall_s=time.perf_counter() - t0, kind=FLYWHEEL,
        )


def _delete_prefix(r: redis.Redis, prefix: str) -> None:
    batch: list[str] = []
    for k in r.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(k)
        if len(batch) >= 500:
            r.delete(*batch)
            batch = []
    if batch:
        r.delete(*batch)


# --- baselines (in a worker process) ------------------------------------------------------------


def baseline_runs(case: Case, quick: bool, only: list[str] | None = None) -> list[SystemRun]:
    """The baselines of ``case``, or ``only`` these (an entry point for a worker process)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # sklearn is loaded by now: the limit reaches its OpenMP
    stream = case.build_stream(quick=quick)
    names = case.baselines_for(quick=quick) if only is None else only
    return list(run_baselines(case, stream, names))


# --- a suite ----------------------------------------------------------------------------------


@dataclass
class Suite:
    """A run of several cases."""

    results: list[CaseResult]
    wall_s: float
    model: str | None
    quick: bool
    seeds: int = 1
    """Stream seeds per reseedable case."""


def run_suite(
    cases: list[Case],
    *,
    redis_url: str | None = None,
    model: str | None = None,
    quick: bool = False,
    seeds: int = 1,
    progress: Callable[[str], None] = lambda _: None,
) -> Suite:
    """Run ``cases``: flywheel here (sequentially), baselines in a worker process meanwhile.

    Args:
        cases: the scenarios.
        redis_url: a Redis to use (keys under a fresh prefix per case, deleted afterwards);
            None starts a private redis-server for the run.
        model: a litellm model string for the agents (None: the runbook brain).
        quick: the cases' smaller ``quick`` sizes.
        seeds: stream seeds per reseedable case (:attr:`Case.reseedable`); each extra seed
            runs flywheel and the baselines its goals need, and those goals are judged over
            all of them.
        progress: called with one line per finished system.
    """
    t0 = time.perf_counter()
    brain = BrainConfig(model=model) if model else None
    spawn = multiprocessing.get_context("spawn")
    # (case index, the case on one seed, baselines to run: None = all of the case's)
    jobs: list[tuple[int, Case, list[str] | None]] = []
    for i, case in enumerate(cases):
        jobs.append((i, case, None))
        jobs += [(i, case.reseeded(s), case.seed_baselines()) for s in case.seeds(seeds)[1:]]
    with contextlib.ExitStack() as stack:
        url = redis_url or _embedded(stack)
        r = connect(url)
        stack.callback(r.close)
        base_pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=spawn))
        trainer_pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=spawn))
        pending: list[Future[list[SystemRun]]] = [
            base_pool.submit(baseline_runs, c, quick, only) for _, c, only in jobs]
        ours: list[tuple[list[SystemRun], str]] = []
        for _, case, _only in jobs:
            name = f"{case.name} (seed {case.stream.seed})"
            stream = case.build_stream(quick=quick)
            try:
                fw = run_flywheel(case, stream, r, url, executor=trainer_pool, brain=brain)
            except Exception as exc:  # one broken case must not lose the others' scores
                error = f"{type(exc).__name__}: {exc}"
                progress(f"{name}: flywheel FAILED: {error}")
                ours.append(([], error))
                continue
            progress(f"{name}: flywheel accuracy {fw.accuracy:.4f}, {fw.count('retrain')} "
                     f"retrains, in {fw.wall_s:.0f} s")
            ours.append(([fw], ""))
        results: list[CaseResult] = []
        for (i, case, _only), fut, (runs, error) in zip(jobs, pending, ours, strict=True):
            base = fut.result()
            if base:
                progress(f"{case.name} (seed {case.stream.seed}): {len(base)} baselines in "
                         f"{sum(b.wall_s for b in base):.0f} s")
            res = finish(case, case.build_stream(quick=quick), runs + base, quick=quick,
                         error=error)
            if i < len(results):
                results[i].replicas.append(res)
            else:
                results.append(res)
    return Suite(results, time.perf_counter() - t0, model, quick, seeds)


def _embedded(stack: contextlib.ExitStack) -> str:
    from fleet.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(appendonly=False).start()
    stack.callback(server.stop)
    return server.url

