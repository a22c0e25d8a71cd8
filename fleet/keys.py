"""The one place that names Redis keys: every key flywheel reads or writes is built here.

Layout (``P`` is the prefix, ``fw`` by default; tests use a unique prefix per test). Every key that
belongs to one service carries the hash tag ``{svc}`` so all of a service's keys land in one Redis
Cluster slot and can be touched by one pipeline or Lua script.

Every fleet-wide key carries the one fixed hash tag ``{P:fleet}`` (written ``F`` below, so
``P:F:audit`` is ``fw:{fw:fleet}:audit``), put on by :meth:`Keys._fleet`. They share ONE slot on
purpose: the audit stream is appended inside the transactions and Lua scripts of incidents,
approvals and the action ledger, so every key those touch must sit in the audit's slot. The tag
contains ``:``, which a service name cannot, so it never equals a service's tag. Redis hashes only
the FIRST ``{...}`` of a key: the ``{svc}`` inside ``P:F:incident:fp:{svc}:KIND`` is just text.
A service's incident index and counter (``incidents_of``, ``incident_seq``) are fleet keys for the
same reason: the incident store opens an incident in one transaction. Checkpoint keys are the
exception: ``P:cp:{T}:...`` carries a per-thread tag (graphs/checkpoint_layout), as each
checkpoint transaction touches one thread only. The registry's changes (service slot) cannot
carry their audit entry (fleet slot) in one MULTI on a cluster: they put it in the service's
outbox, moved to the audit stream exactly once after (fleet/audit_outbox). Keys of the layout
before the fleet tag are renamed once by fleet/migrations.

====================================  ========  ==================================================
key                                   type      holds
====================================  ========  ==================================================
``P:F:services``                      set       names of all registered services
``P:{svc}:service``                   hash      task, schema, policy, champion, challenger, split,
                                                mode, generation (bumped on every pointer change)
``P:{svc}:versions``                  string    counter of the last version number issued
``P:{svc}:version:N``                 hash      one model version (artifact, sha256, lineage, ...)
``P:{svc}:faults``                    hash      injected serving faults per version (replayer)
``P:{svc}:tel``                       stream    prediction events, capped with MAXLEN ~
``P:{svc}:labels``                    stream    ground-truth labels by request id, capped
``P:{svc}:quarantine``                set       quarantined windows (never trained on again)
``P:{svc}:mon``                       hash      monitor aggregates / detector state (cursors,
                                                windows, references, CUSUM; fleet/monitor)
``P:{svc}:lock``                      string    one action at a time per service (lease)
``P:{svc}:lock:train``                string    one training run at a time per service (lease)
``P:{svc}:cooldown``                  hash      action kind -> time of its last successful run
``P:{svc}:rollbacks``                 zset      rollbacks of the last hour scored by their time
``P:{svc}:failures``                  hash      action kind -> consecutive failures
``P:{svc}:audit:outbox``              stream    Redis Cluster only: audit entries of the
                                                service's registry changes, until moved to
                                                ``P:F:audit`` (fleet/audit_outbox)
``P:F:dlq``                           stream    rejected telemetry with the reason
``P:F:audit``                         stream    every change, who/what/why/when, append-only
``P:F:audit:moved:SVC:ID``            string    marker: outbox entry ID of SVC is in the audit
                                                (expires after a week)
``P:F:monitor``                       hash      fleet-wide monitor state: last tick summary,
                                                dead-letter cursor
``P:F:incident:ID``                   hash      one incident
``P:F:incidents:open``                set       ids of open incidents
``P:F:incidents:all``                 zset      every incident id scored by open time
``P:F:incident:fp:{svc}:KIND``        string    fingerprint -> open incident id (dedupe)
``P:F:incident:closed:{svc}:KIND``    hash      last closed incident of a fingerprint (cooldown)
``P:F:incidents:of:svc``              zset      the service's incident ids scored by open time
``P:F:incident_seq:svc``              string    counter of the last incident number issued
``P:F:approval:ID``                   hash      one approval request and its decision
``P:F:approvals:pending``             zset      pending approval ids scored by expiry
``P:F:approval:open:INC:DIGEST``      string    id of the pending request of one incident for one
                                                action digest (deleted once decided)
``P:F:approval:step:INC:S:DIGEST``    string    id of the request one step S (tool call) made,
                                                so the step re-run on resume gets it back
``P:F:act:KEY``                       hash      idempotency record of one side effect
``P:F:approvals:chat``                set       chat-made approval ids whose approval the loop
                                                watches, to run them once approved
``P:F:slack:approval:ID``             hash      the Slack prompt of one approval: channel, ts,
                                                locked (claimed once by whoever updates it)
``P:F:slack:claim:ID``                string    lease: the process posting one Slack message
``P:F:slack:open``                    set       approval ids whose prompt is posted, not locked
``P:F:slack:incident:ID``             hash      the Slack thread of one incident: channel, ts,
                                                audit cursor of the steps already summarised
``P:F:slack:incidents``               set       incident ids whose thread is not closed yet
``P:F:slack:delivery:ID``             string    a Slack delivery already handled (retries), TTL
``P:F:audit:archived``                string    id of the last audit entry archived to the
                                                JSON-lines files (fleet/audit_archive); entries
                                                up to it may be trimmed, none after it
``P:F:retention``                     hash      last retention run: time and what it removed
``P:F:retention:lock``                string    lease: the one process running retention now
``P:cp:{thread}:...``                 various   LangGraph checkpoints (see graphs/checkpointer)
``P:F:loop:shard:N``                  string    lease: the loop worker owning shard N
``P:F:loop:incident:ID``              string    lease: the loop worker advancing incident ID
``P:F:loop:workers``                  zset      live loop workers by last heartbeat
``P:F:loop:trainers``                 hash      loop worker -> its trainer's health (JSON, with
                                                the time it was written)
``P:F:schema``                        hash      applied key-schema migrations
====================================  ========  ==================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleet.errors import InvalidInput

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def check_service_name(name: str) -> str:
    """Return ``name`` if it is a valid service name, else raise ``ValueError``.

    Service names go into Redis keys and URLs, so they are restricted to lowercase letters,
    digits, ``_``, ``.`` and ``-`` (1 to 63 characters, starting with a letter or digit).

    >>> check_service_name("elec")
    'elec'
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid service name {name!r}: use 1-63 lowercase letters, digits, '_', '.', '-'"
        )
    return name


@dataclass(frozen=True)
class Keys:
    """Builds every Redis key from one prefix.

    >>> Keys("fw").service("elec")
    'fw:{elec}:service'
    >>> Keys("fw").version("elec", 3)
    'fw:{elec}:version:3'
    """

    prefix: str = "fw"

    def __post_init__(self) -> None:
        # A brace in the prefix would move or break the hash tags every key relies on.
        if not self.prefix or "{" in self.prefix or "}" in self.prefix:
            raise InvalidInput(
                f"key prefix {self.prefix!r} (FLYWHEEL_PREFIX) must be non-empty and contain "
                "no '{' or '}' (Redis Cluster hash tags use them)"
            )

    def _svc(self, svc: str, suffix: str) -> str:
        return f"{self.prefix}:{{{svc}}}:{suffix}"

    def _fleet(self, suffix: str) -> str:
        """A fleet-wide key (not of one service): every such key is built here.

        All carry the one hash tag ``{P:fleet}`` (one Redis Cluster slot; see the module doc).

        >>> Keys("fw").audit
        'fw:{fw:fleet}:audit'
        """
        return f"{self.prefix}:{{{self.prefix}:fleet}}:{suffix}"

    # --- global keys ---------------------------------------------------------------
    @property
    def services(self) -> str:
        """Set of all service names."""
        return self._fleet("services")

    @property
    def dlq(self) -> str:
        """Dead-letter stream of rejected telemetry."""
        return self._fleet("dlq")

    @property
    def audit(self) -> str:
        """Append-only audit stream."""
        return self._fleet("audit")

    def audit_moved(self, svc: str, entry_id: str) -> str:
        """Marker that outbox entry ``entry_id`` of ``svc`` was appended to the audit stream."""
        return self._fleet(f"audit:moved:{svc}:{entry_id}")

    @property
    def monitor_fleet(self) -> str:
        """Hash of fleet-wide monitor state (last tick, dead-letter cursor)."""
        return self._fleet("monitor")

    @property
    def schema(self) -> str:
        """Hash of applied key-schema migrations."""
        return self._fleet("schema")

    @property
    def incidents_open(self) -> str:
        """Set of open incident ids."""
        return self._fleet("incidents:open")

    @property
    def incidents_all(self) -> str:
        """Sorted set of every incident id scored by open time."""
        return self._fleet("incidents:all")

    def incident(self, incident_id: str) -> str:
        """Hash of one incident."""
        return self._fleet(f"incident:{incident_id}")

    def incident_fingerprint(self, svc: str, kind: str) -> str:
        """Pointer from a (service, kind) fingerprint to its open incident."""
        return self._fleet(f"incident:fp:{{{svc}}}:{kind}")

    def incident_closed(self, svc: str, kind: str) -> str:
        """Hash of the last closed incident of a (service, kind) fingerprint, for its cooldown."""
        return self._fleet(f"incident:closed:{{{svc}}}:{kind}")

    @property
    def approvals_pending(self) -> str:
        """Sorted set of pending approval ids scored by expiry time."""
        return self._fleet("approvals:pending")

    def approval(self, approval_id: str) -> str:
        """Hash of one approval request."""
        return self._fleet(f"approval:{approval_id}")

    def approval_open(self, incident: str, digest: str) -> str:
        """Id of the pending approval request of ``incident`` for the action ``digest``."""
        return self._fleet(f"approval:open:{incident}:{digest}")

    def approval_step(self, incident: str, step: str, digest: str) -> str:
        """Id of the approval request one step (tool call) of ``incident`` made for ``digest``."""
        return self._fleet(f"approval:step:{incident}:{step}:{digest}")

    def action(self, key: str) -> str:
        """Idempotency record of one side effect."""
        return self._fleet(f"act:{key}")

    @property
    def approvals_chat(self) -> str:
        """Set of chat-made approval ids to run once approved (see fleet/operations/approved)."""
        return self._fleet("approvals:chat")

    def slack_approval(self, approval_id: str) -> str:
        """Hash of the Slack prompt of one approval (channel, ts, locked)."""
        return self._fleet(f"slack:approval:{approval_id}")

    def slack_claim(self, ref: str) -> str:
        """Lease held while one process posts one Slack message (``ref``: approval or incident)."""
        return self._fleet(f"slack:claim:{ref}")

    @property
    def slack_open(self) -> str:
        """Set of approval ids whose Slack prompt is posted and not yet locked."""
        return self._fleet("slack:open")

    def slack_incident(self, incident_id: str) -> str:
        """Hash of the Slack thread of one incident (channel, ts, audit cursor)."""
        return self._fleet(f"slack:incident:{incident_id}")

    @property
    def slack_incidents(self) -> str:
        """Set of incident ids whose Slack thread is not closed yet."""
        return self._fleet("slack:incidents")

    def slack_delivery(self, delivery_id: str) -> str:
        """Marker of one Slack delivery already handled (so a retry does nothing more)."""
        return self._fleet(f"slack:delivery:{delivery_id}")

    def approval_scan(self) -> str:
        """SCAN pattern of every approval key (records and their open/step pointers)."""
        return self._fleet("approval:*")

    def approval_pointer_incident(self, key: str) -> str | None:
        """The incident of an ``approval:open``/``approval:step`` pointer key, else None.

        >>> Keys("fw").approval_pointer_incident(Keys("fw").approval_open("inc-a-1", "d0"))
        'inc-a-1'
        >>> Keys("fw").approval_pointer_incident(Keys("fw").approval("apr-1")) is None
        True
        """
        for kind in ("open", "step"):
            head = self._fleet(f"approval:{kind}:")
            if key.startswith(head):
                return key[len(head):].split(":", 1)[0]
        return None

    def action_scan(self) -> str:
        """SCAN pattern of every idempotency record."""
        return self._fleet("act:*")

    @property
    def audit_archived(self) -> str:
        """Id of the last audit entry written to the archive (trimming never passes it)."""
        return self._fleet("audit:archived")

    @property
    def retention(self) -> str:
        """Hash of the last retention run (time, counts)."""
        return self._fleet("retention")

    @property
    def retention_lock(self) -> str:
        """Lease held by the one process applying retention."""
        return self._fleet("retention:lock")

    def checkpoint_prefix(self) -> str:
        """Prefix under which the LangGraph checkpointer keeps its keys.

        Not a key, and no fleet tag: each checkpoint key adds its thread's tag ``{T}`` after it,
        so threads spread over the cluster (a fleet tag before it would win and pin them all).
        """
        return f"{self.prefix}:cp"

    # --- per-service keys ----------------------------------------------------------
    def service(self, svc: str) -> str:
        """Hash describing one service."""
        return self._svc(svc, "service")

    def version_counter(self, svc: str) -> str:
        """Counter of the last version number issued for ``svc``."""
        return self._svc(svc, "versions")

    def version(self, svc: str, number: int) -> str:
        """Hash describing one model version."""
        return self._svc(svc, f"version:{int(number)}")

    def faults(self, svc: str) -> str:
        """Hash of injected serving faults per version."""
        return self._svc(svc, "faults")

    def telemetry(self, svc: str) -> str:
        """Stream of prediction events."""
        return self._svc(svc, "tel")

    def labels(self, svc: str) -> str:
        """Stream of ground-truth labels."""
        return self._svc(svc, "labels")

    def quarantine(self, svc: str) -> str:
        """Set of quarantined stream windows."""
        return self._svc(svc, "quarantine")

    def monitor(self, svc: str) -> str:
        """Hash of monitor aggregates and detector state."""
        return self._svc(svc, "mon")

    def loop_shard(self, shard: int) -> str:
        """Lease on one shard of services, held by the loop worker that owns it."""
        return self._fleet(f"loop:shard:{int(shard)}")

    def loop_incident(self, incident_id: str) -> str:
        """Lease held while a loop worker advances one incident's thread."""
        return self._fleet(f"loop:incident:{incident_id}")

    @property
    def loop_workers(self) -> str:
        """Sorted set of live loop workers scored by their last heartbeat."""
        return self._fleet("loop:workers")

    @property
    def loop_trainers(self) -> str:
        """Hash: loop worker -> its trainer's health as JSON (read by ``/healthz``)."""
        return self._fleet("loop:trainers")

    def lock(self, svc: str) -> str:
        """Lease that allows one action at a time per service."""
        return self._svc(svc, "lock")

    def incidents_of(self, svc: str) -> str:
        """Sorted set of one service's incident ids scored by open time.

        A fleet key, not a service key: it is written in the incident store's transactions with
        the incident hashes and the audit stream, which live in the fleet slot.
        """
        return self._fleet(f"incidents:of:{svc}")

    def incident_seq(self, svc: str) -> str:
        """Counter of the last incident number issued for ``svc`` (a fleet key, as above)."""
        return self._fleet(f"incident_seq:{svc}")

    def train_lock(self, svc: str) -> str:
        """Lease that allows one training run at a time per service."""
        return self._svc(svc, "lock:train")

    def cooldown(self, svc: str) -> str:
        """Hash of action kind -> time of its last successful run."""
        return self._svc(svc, "cooldown")

    def rollbacks(self, svc: str) -> str:
        """Sorted set of recent rollbacks scored by their time."""
        return self._svc(svc, "rollbacks")

    def failures(self, svc: str) -> str:
        """Hash of action kind -> consecutive failures."""
        return self._svc(svc, "failures")

    def audit_outbox(self, svc: str) -> str:
        """Stream of the service's audit entries not yet moved to the audit stream (cluster)."""
        return self._svc(svc, "audit:outbox")
