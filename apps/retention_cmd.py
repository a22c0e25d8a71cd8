"""Wires retention from settings (``flywheel prune``, and the loop's slow-cadence pass)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from apps.settings import Settings
from fleet.retention import Pruner, PruneReport, Retention
from graphs.checkpoint_prune import SaverThreads


def retention_from(settings: Settings, *, cooldown_s: float = 600.0) -> Retention:
    """The :class:`Retention` the settings describe (archive under ``FLYWHEEL_HOME/audit``)."""
    archive = None
    if settings.retention_audit_archive:
        archive = settings.retention_audit_archive_dir or settings.home / "audit"
    return Retention(
        checkpoint_grace_s=settings.retention_checkpoint_grace_s,
        incident_keep_s=settings.retention_incident_keep_s,
        approval_keep_s=settings.retention_approval_keep_s,
        action_keep_s=settings.retention_action_keep_s,
        audit_keep_s=settings.retention_audit_keep_s,
        audit_archive_dir=archive.expanduser() if archive is not None else None,
        audit_trim_unarchived=settings.retention_audit_trim_unarchived,
        interval_s=settings.retention_interval_s,
        cooldown_s=cooldown_s,
    )


def build_pruner(system: Any, settings: Settings, retention: Retention | None = None) -> Pruner:
    """A pruner over a composed system's Redis, clock and incident checkpointer."""
    fleet = system.fleet
    retention = retention or retention_from(settings, cooldown_s=system.incidents.cooldown_s)
    return Pruner(fleet.r, fleet.keys, retention, clock=fleet.clock,
                  checkpoints=SaverThreads(system.runner.graph.checkpointer))


def print_report(rep: PruneReport, console: Console) -> None:
    """One line per kind of thing removed (or that would be, with ``--dry-run``)."""
    verb = "would remove" if rep.dry_run else "removed"
    console.print(f"{verb}: {len(rep.checkpoint_threads)} checkpoint thread(s) "
                  f"({rep.checkpoint_keys} keys)", highlight=False)
    console.print(f"{verb}: {len(rep.incidents)} closed incident(s)"
                  + (f": {', '.join(rep.incidents[:10])}" + (" ..." if len(rep.incidents) > 10
                                                              else "") if rep.incidents else ""),
                  highlight=False)
    console.print(f"{verb}: {rep.approvals} approval(s), {rep.approval_pointers} pointer(s), "
                  f"{rep.actions} idempotency record(s)", highlight=False)
    archived, trimmed = ("would archive", "would trim") if rep.dry_run else ("archived",
                                                                             "trimmed")
    console.print(f"{archived}: {rep.audit_archived} audit entries; {trimmed} "
                  f"{rep.audit_trimmed}" + (f" -> {', '.join(rep.audit_files)}"
                                            if rep.audit_files else ""), highlight=False)
    for e in rep.errors:
        console.print(f"warning: {e}", highlight=False, markup=False)
