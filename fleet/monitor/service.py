"""The monitor's read facade for the agents' tools: compact, JSON-able answers about one service.

Every method raises :class:`~fleet.errors.UnknownService` for an unregistered service (tools turn
it into a message that lists the known ones), and returns plain dicts of rounded numbers, with
``None`` where a number is undefined and lists bounded in length. No answer has a top-level
``status`` key: the tools add their own (``success`` / ``error``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fleet.clock import Clock
from fleet.detectors import Arm, Canary, DetectorConfig
from fleet.incidents import Incident, IncidentStore
from fleet.monitor import detect, windows
from fleet.monitor.aggregates import AGG_SCHEMA, Feed, ServiceAgg
from fleet.monitor.batch import EventBatch
from fleet.monitor.config import MonitorConfig, detector_config
from fleet.monitor.signals import num
from fleet.monitor.state_store import MonitorStateStore
from fleet.registry import Mode, Registry, ServiceRecord
from fleet.telemetry import TelemetryReader
from fleet.telemetry.events import PredictionEvent
from fleet.telemetry.reader import Range, in_ranges

if TYPE_CHECKING:  # only for the annotation; operations pulls in the trainer
    from fleet.operations import Operations

MAX_FEATURES = 20
"""Features listed at most by :meth:`MonitorService.drift_report`."""
MAX_INCIDENTS = 50
"""Incidents returned at most by one call."""
CANARY_SCAN = 200_000
"""Most telemetry events read back when analysing a canary."""


class MonitorService:
    """Answers the Monitoring and Data Steward agents' questions about a service.

    Args:
        registry: services, versions, policies.
        reader: telemetry streams.
        incidents: incident store.
        state_store: the monitor's aggregates (what the tick keeps).
        operations: for quarantined ranges (read from Redis directly when not given).
        clock: the time used for ages (default: the registry's).
        config: the monitor's window settings (reference size for messages).
    """

    def __init__(self, registry: Registry, reader: TelemetryReader, incidents: IncidentStore,
                 state_store: MonitorStateStore, operations: Operations | None = None,
                 clock: Clock | None = None, *, config: MonitorConfig | None = None):
        self.registry = registry
        self.reader = reader
        self.incidents = incidents
        self.state_store = state_store
        self.operations = operations
        self.clock = clock or registry.clock
        self.config = config or MonitorConfig()

    # --- health --------------------------------------------------------------------------
    def health(self, service: str) -> dict[str, Any]:
        """Pointers, the champion's recent window, each live version's numbers, open incidents.

        Keys: ``service``, ``task``, ``champion``, ``challenger``, ``mode``, ``split``,
        ``health`` (``ok`` | ``degraded``), ``window`` (``rows``, ``labelled``, ``accuracy``,
        ``mae``, ``error_rate``, ``latency_p50_ms``, ``latency_p95_ms``, ``latency_p99_ms``),
        ``versions`` (the same per live version, by ``"v<N>"``), ``monitor`` (``last_tick``,
        ``firing``, ``canary_verdict``, ``reference_ready``), ``open_incidents`` (``id``,
        ``kind``, ``severity``, ``status``, ``opened_at``).
        """
        rec = self.registry.service(service)
        agg = self._agg(service)
        live = [v for v in (rec.champion, rec.challenger) if v is not None]
        if agg is not None and agg.champion == rec.champion:
            versions = {f"v{v}": windows.agg_window(agg, v) for v in live}
        else:  # the monitor has not seen this champion yet: read the stream tail
            versions = {f"v{v}": self.metric_window(service, version=v)["metrics"] for v in live}
        window = versions.get(f"v{rec.champion}", {}) if rec.champion is not None else {}
        open_ = [_brief(i) for i in self.incidents.open_incidents(service)][:MAX_INCIDENTS]
        firing = list(agg.fired) if agg else []
        return {
            **_pointers(rec), "health": "degraded" if open_ or firing else "ok",
            "window": window, "versions": versions,
            "monitor": {"last_tick": num(agg.ticked_at) if agg else None, "firing": firing,
                        "canary_verdict": (agg.verdict or None) if agg else None,
                        "reference_ready": bool(agg and agg.reference is not None)},
            "open_incidents": open_,
        }

    def metric_window(self, service: str, *, version: int | None = None, rows: int = 1000
                      ) -> dict[str, Any]:
        """Metrics of the last ``rows`` answered requests (of one version if given), read live.

        Keys: ``service``, ``version``, ``first_id``, ``last_id``, ``from_ts``, ``to_ts``,
        ``metrics`` (``rows``, ``labelled``, ``label_coverage``, ``accuracy``, ``mae``,
        ``error_rate``, ``latency_p50_ms``, ``latency_p95_ms``, ``latency_p99_ms``,
        ``latency_mean_ms``), ``predictions`` (class shares or quantiles), ``null_rates`` (top
        features), ``versions`` (requests per version in the window).
        """
        rec = self.registry.service(service)
        rows = max(1, min(int(rows), 50_000))
        batch = self._recent(rec, rows, version=version)
        labels = self.reader.label_map(service, count=max(rows * 3, 1_000))
        counts = dict(zip(*np.unique(batch.version, return_counts=True), strict=True))
        return {
            "service": service, "version": version,
            "first_id": batch.ids[0] if len(batch) else "",
            "last_id": batch.ids[-1] if len(batch) else "",
            "from_ts": num(batch.ts[0], 12) if len(batch) else None,
            "to_ts": num(batch.ts[-1], 12) if len(batch) else None,
            "metrics": windows.metrics(batch, labels, rec.task),
            "predictions": windows.prediction_summary(batch.prediction, rec.task),
            "null_rates": windows.null_rates(batch.X, rec.schema_.names),
            "versions": {f"v{v}": int(n) for v, n in counts.items()},
        }

    # --- drift ---------------------------------------------------------------------------
    def drift_report(self, service: str) -> dict[str, Any]:
        """Per-feature PSI / KS of the current window against the reference, worst first.

        Keys: ``service``, ``state`` (``ok`` | ``collecting_reference`` | ``not_monitored``),
        ``reference_champion``, ``reference_rows``, ``window_rows``, ``drifted_features``,
        ``thresholds`` (``psi``, ``ks_alpha``, ``ks_min_statistic``), ``features`` (at most
        :data:`MAX_FEATURES` of ``feature``, ``psi``, ``ks``, ``p_value``, ``drifted``, most
        drifted first), ``prediction`` (``psi``, ``ks``, ``p_value``, ``drifted``),
        ``performance`` (``alarm``, ``baseline_error``, ``window_error``, ``window_labelled``,
        ``cusum_statistic``, ``cusum_threshold``, ``min_effect``).
        """
        rec = self.registry.service(service)
        cfg = _cfg(rec)
        agg = self._agg(service)
        out: dict[str, Any] = {
            "service": service, "state": "not_monitored", "reference_champion": None,
            "reference_rows": 0, "window_rows": 0, "drifted_features": 0,
            "thresholds": {"psi": cfg.psi_threshold, "ks_alpha": cfg.ks_alpha,
                           "ks_min_statistic": cfg.ks_min_statistic},
            "features": [], "prediction": None,
            "performance": windows.performance_state(agg, cfg),
        }
        if agg is None:
            return out
        if agg.reference is None:
            return {**out, "state": "collecting_reference",
                    "reference_needed": self.config.reference_rows}
        d = detect.drift([detect.Case(service, cfg, agg, _no_feed())])
        f, names = agg.n_features, rec.schema_.names
        order = np.argsort(-np.nan_to_num(d.psi[0, 1: f + 1], nan=-1.0), kind="stable")
        feats = [{"feature": names[j] if j < len(names) else f"f{j}", "psi": num(d.psi[0, j + 1]),
                  "ks": num(d.ks[0, j + 1]), "p_value": num(d.ks_p[0, j + 1]),
                  "drifted": bool(d.drifted[0, j + 1])} for j in order[:MAX_FEATURES]]
        return {**out, "state": "ok", "reference_champion": agg.reference.champion,
                "reference_rows": agg.reference.rows, "window_rows": int(d.n_cur[0]),
                "drifted_features": int(d.drifted[0, 1: f + 1].sum()), "features": feats,
                "prediction": {"psi": num(d.psi[0, 0]), "ks": num(d.ks[0, 0]),
                               "p_value": num(d.ks_p[0, 0]), "drifted": bool(d.drifted[0, 0])}}

    # --- versions ------------------------------------------------------------------------
    def compare_versions(self, service: str, a: int, b: int, *, rows: int = 2000
                         ) -> dict[str, Any]:
        """Offline metrics from the registry next to live numbers of two versions.

        Live numbers come from each version's last ``rows`` scored requests (shadow scores
        included, so a shadow challenger can be compared). Keys: ``service``, ``metric``
        (``accuracy`` | ``mae``), ``a`` and ``b`` (``version``, ``status``, ``offline``,
        ``live`` with the keys of :meth:`metric_window`'s ``metrics`` plus ``shadow``), ``diff``
        (``b - a`` of ``accuracy``, ``mae``, ``error_rate``, ``latency_p99_ms``).

        Raises:
            UnknownService: no such service.
            UnknownVersion: ``a`` or ``b`` is not a version of it.
        """
        rec = self.registry.service(service)
        rows = max(1, min(int(rows), 20_000))
        sides = {}
        labels = self.reader.label_map(service, count=max(rows * 6, 1_000))
        for name, v in (("a", a), ("b", b)):
            ver = self.registry.version(service, v)
            batch = self._recent(rec, rows, version=v, shadow=True)
            live = windows.metrics(batch, labels, rec.task) | {"shadow": int(batch.shadow.sum())}
            offline = {k: num(x) for k, x in sorted(ver.metrics.items())
                       if isinstance(x, int | float)}
            sides[name] = {"version": v, "status": ver.status.value, "offline": offline,
                           "live": live}
        diff = {}
        for k in ("accuracy", "mae", "error_rate", "latency_p99_ms"):
            x, y = sides["a"]["live"][k], sides["b"]["live"][k]
            diff[k] = num(y - x) if x is not None and y is not None else None
        metric = "mae" if rec.task == "regression" else "accuracy"
        return {"service": service, "metric": metric, "rows": rows, **sides, "diff": diff}

    def canary_analysis(self, service: str) -> dict[str, Any]:
        """Challenger vs champion on labelled traffic since the challenger started.

        Keys: ``service``, ``verdict`` (``pass`` | ``fail`` | ``inconclusive``), ``version``
        (the challenger, None without one), ``champion_version``, ``mode``, ``since``,
        ``age_s``, ``champion`` and ``challenger`` (``n`` labelled, ``errors`` wrong answers,
        ``error_rate``, ``latency_p99_ms``, ``requests``), ``min_samples``, ``p_value`` (of "the
        challenger errs more"), ``latency_p_value``, ``error_diff``, ``error_diff_upper``,
        ``latency_ratio_p50``, ``latency_ratio_p95``, ``reasons``.
        """
        rec = self.registry.service(service)
        cfg = _cfg(rec)
        head = {"service": service, "version": rec.challenger, "champion_version": rec.champion,
                "mode": rec.mode.value, "since": num(rec.challenger_since, 12),
                "age_s": num(self.clock.now() - rec.challenger_since)
                if rec.challenger is not None else None, "min_samples": cfg.canary_min_samples}
        if rec.challenger is None or rec.champion is None or rec.mode is Mode.FULL:
            empty = {"n": 0, "errors": 0, "error_rate": None, "latency_p99_ms": None,
                     "requests": 0}
            return {**head, "verdict": "inconclusive", "champion": empty, "challenger": dict(empty),
                    "p_value": None, "latency_p_value": None, "error_diff": None,
                    "error_diff_upper": None, "latency_ratio_p50": None,
                    "latency_ratio_p95": None, "reasons": ["no_challenger"]}
        arms, sides = self._canary_arms(rec)
        r = Canary(**cfg.kwargs("canary")).update(*arms).result
        assert r is not None
        row = detect.canary_row(r, 0, cfg.canary_min_samples)
        return {**head, "verdict": row["verdict"], **sides,
                **{k: num(row[k]) for k in ("p_value", "latency_p_value", "error_diff",
                                            "error_diff_upper", "latency_ratio_p50",
                                            "latency_ratio_p95")},
                "reasons": row["reasons"]}

    def _canary_arms(self, rec: ServiceRecord) -> tuple[tuple[Arm, Arm], dict[str, Any]]:
        batch = self._since(rec, rec.challenger_since)
        labels = self.reader.label_map(rec.name, count=max(2 * len(batch), 1_000))
        y = np.array([labels.get(r, np.nan) for r in batch.request_ids], dtype=np.float64)
        shadow_mode = rec.mode is Mode.SHADOW
        arms, sides = [], {}
        for name, v, shadow in (("champion", rec.champion, False),
                                ("challenger", rec.challenger, shadow_mode)):
            sel = (batch.version == v) & (batch.shadow == shadow)
            has = sel & ~np.isnan(y)
            wrong, _ = windows.outcomes(batch.prediction[has], y[has], rec.task)
            lat = batch.latency[sel]
            # A shadow score's latency includes the champion's, so it is not compared.
            lat_arm = lat if len(lat) and not shadow_mode else np.full(1, np.nan)
            arms.append(Arm.from_samples(wrong[None] if len(wrong) else np.full((1, 1), np.nan),
                                         lat_arm[None]))
            n = int(has.sum())
            sides[name] = {"n": n, "errors": int(wrong.sum()),
                           "error_rate": num(wrong.mean()) if n else None,
                           "latency_p99_ms": num(np.percentile(lat, 99)) if len(lat) else None,
                           "requests": int(sel.sum())}
        return (arms[0], arms[1]), sides

    # --- data ----------------------------------------------------------------------------
    def validate_window(self, service: str, *, rows: int | None = None) -> dict[str, Any]:
        """Check the recent labelled window training would use (quarantined ranges left out).

        Keys: ``service``, ``ok`` (no issue), ``rows``, ``first_id``, ``last_id`` (telemetry
        stream ids bounding the window), ``issues`` (``check``, ``feature``, ``value``,
        ``threshold``; checks: ``nulls``, ``out_of_range``, ``schema``, ``duplicates``,
        ``label_coverage``, ``far_out_of_range``, ``scale_jump``, ``too_few_rows``),
        ``label_coverage``, ``null_rate``, ``duplicate_rate``, ``quarantined_ranges``.
        """
        rec = self.registry.service(service)
        cfg = _cfg(rec)
        ranges = self._quarantined(service)
        want = int(rows or rec.policy.train_window)
        win = self.reader.labelled_window(service, want, exclude=ranges,
                                          feature_names=rec.schema_.names)
        due = self._answered_between(service, win.first_id, win.last_id, ranges)
        issues, rates = windows.quality_issues(win.X, rec.schema_, cfg, labelled=len(win), due=due)
        agg = self._agg(service)
        ref_median = windows.reference_median(agg) if agg is not None else None
        issues += windows.sanity_issues(win.X, rec.schema_, cfg, ref_median)
        if len(win) < cfg.quality_min_rows:
            issues.append({"check": "too_few_rows", "feature": None, "value": len(win),
                           "threshold": cfg.quality_min_rows})
        return {"service": service, "ok": not issues, "rows": len(win),
                "first_id": win.first_id, "last_id": win.last_id,
                "issues": issues[: windows.MAX_ISSUES], **rates,
                "quarantined_ranges": len(ranges)}

    def incident_history(self, service: str, limit: int = 10) -> list[dict[str, Any]]:
        """The service's incidents, newest first (at most ``limit``, capped at 50).

        Keys: ``id``, ``kind``, ``severity``, ``status``, ``opened_at``, ``closed_at``,
        ``version``, ``onset``, ``signal_count``, ``resolution``, ``evidence`` (the latest
        signal's numbers).
        """
        self.registry.service(service)
        found = self.incidents.history(service, limit=max(1, min(int(limit), MAX_INCIDENTS)))
        return [{**_brief(i), "closed_at": num(i.closed_at, 12) if i.closed_at else None,
                 "version": i.version, "onset": i.onset, "signal_count": i.signal_count,
                 "resolution": i.resolution[:200], "evidence": i.evidence} for i in found]

    # --- reads ---------------------------------------------------------------------------
    def _agg(self, service: str) -> ServiceAgg | None:
        stored = self.state_store.load([service], AGG_SCHEMA)[service]
        if stored is None or stored.agg is None:
            return None
        return ServiceAgg.from_dict(stored.agg, self.config)

    def _recent(self, rec: ServiceRecord, rows: int, *, version: int | None,
                shadow: bool = False) -> EventBatch:
        """The last ``rows`` scored events (answered only unless ``shadow``), oldest first."""
        scan = rows * (4 if version is not None else 2)
        batch = EventBatch.from_events(self.reader.recent_predictions(rec.name, scan),
                                       len(rec.schema_.features))
        keep = np.ones(len(batch), dtype=bool) if shadow else ~batch.shadow
        if version is not None:
            keep &= batch.version == version
        return batch.take(np.flatnonzero(keep)[-rows:])

    def _since(self, rec: ServiceRecord, since: float) -> EventBatch:
        """Events with ``ts >= since`` (read back from the newest), oldest first."""
        rows: list[tuple[str, PredictionEvent]] = []
        end = "+"
        key = self.reader.keys.telemetry(rec.name)
        while len(rows) < CANARY_SCAN:
            page = self.reader.r.xrevrange(key, max=end, count=2_000)
            if not page:
                break
            evs = [(sid, PredictionEvent.decode(f["d"])) for sid, f in page]
            rows += [(sid, e) for sid, e in evs if e.ts >= since]
            if evs[-1][1].ts < since:
                break
            end = f"({page[-1][0]}"
        return EventBatch.from_events(rows[::-1], len(rec.schema_.features))

    def _answered_between(self, service: str, first: str, last: str,
                          ranges: list[Range]) -> int:
        """Answered predictions in ``[first, last]`` outside quarantines (label coverage's base)."""
        if not first:
            return 0
        n = 0
        key = self.reader.keys.telemetry(service)
        for sid, f in self.reader.r.xrange(key, min=first, max=last, count=200_000):
            if not PredictionEvent.decode(f["d"]).shadow and not (
                    ranges and in_ranges(sid, ranges)):
                n += 1
        return n

    def _quarantined(self, service: str) -> list[Range]:
        if self.operations is not None:
            return self.operations.quarantined(service)
        members = self.reader.r.smembers(self.reader.keys.quarantine(service))
        return sorted(tuple(m.partition("..")[::2]) for m in members)  # type: ignore[misc]


def _cfg(rec: ServiceRecord) -> DetectorConfig:
    try:
        return detector_config(rec.policy)
    except ValueError:  # the tick reports a bad policy; reads fall back to the defaults
        return DetectorConfig()


def _pointers(rec: ServiceRecord) -> dict[str, Any]:
    return {"service": rec.name, "task": rec.task, "champion": rec.champion,
            "challenger": rec.challenger, "mode": rec.mode.value, "split": num(rec.split)}


def _brief(inc: Incident) -> dict[str, Any]:
    return {"id": inc.id, "kind": inc.kind, "severity": inc.severity, "status": inc.status.value,
            "opened_at": num(inc.opened_at, 12)}


def _no_feed() -> Feed:
    return Feed(np.zeros(0), np.zeros(0, np.int64), np.zeros(0))
