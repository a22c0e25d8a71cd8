"""The incident-handling process of the kill drill: a loop worker re-attached to existing state.

Started from a ``forkserver`` that has imported this module once, so each (re)start is a fresh
process that costs milliseconds, not the seconds of importing the stack again. It attaches to the
drill's Redis and prefix (it registers nothing) and runs ``Loop.run_forever`` until it is killed.

Failpoints make a kill land in a window a random kill rarely hits: when the drill sets
``<prefix>:drill:crash`` to a failpoint's name, the worker SIGKILLs itself right after that point
(once; the key is deleted first). Failpoints:

- ``registry_write``: a registry pointer change is committed, its ledger record still ``running``;
- ``ledger_done``: a guarded write's ledger record is ``done``, nothing after it (audit, tool
  result, checkpoint) is;
- ``approval_request``: an approval request is stored, the interrupt that waits for it is not;
- ``task_writes``: a graph task's writes are saved, the checkpoint of the step they end is not
  (the thread must read as unfinished, not done).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from apps.loop import Loop, LoopConfig
from apps.runtime import build_fleet
from apps.serving import single_threaded_models
from apps.system import System, build_system
from fleet.actions.ledger import ActionLedger
from fleet.approvals import ApprovalStore
from fleet.clock import Clock
from fleet.registry import Registry
from fleet.store import connect
from fleet.trainer import Trainer
from graphs.assembly import GraphOptions
from graphs.checkpointer import RedisSaver
from supervisors.brains import BrainConfig

LOOP = LoopConfig(shards=4, tick_interval_s=0.05, shard_ttl_s=0.5, incident_ttl_s=1.0,
                  heartbeat_ttl_s=0.5)
"""Short leases, so a killed worker's shards and incidents are free again within a second."""
OPTIONS = GraphOptions(canary_deadline_s=5.0, wait_s=0.2)
"""Real-time waits: an inconclusive canary is re-checked every 0.2 s and escalated after 5 s."""
def _root_task_writes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A top-level graph task's own writes (not a subgraph's, not an interrupt or error) on the
    thread's newest checkpoint: cut here, that checkpoint has the writes and no successor."""
    named = dict(zip(("self", "config", "writes"), args, strict=False)) | kwargs
    saver, config, writes = named["self"], named["config"], named["writes"]
    channels = {c for c, _ in writes}
    conf = config["configurable"]
    if conf.get("checkpoint_ns") or channels & {"__interrupt__", "__error__"}:
        return False
    newest = saver.get_tuple({"configurable": {"thread_id": conf["thread_id"],
                                               "checkpoint_ns": ""}})
    # Saved, and still the newest: the checkpoint that ends this step is not (yet).
    return newest is not None and newest.config["configurable"]["checkpoint_id"] == conf.get(
        "checkpoint_id")


FAILPOINTS: dict[str, tuple[type, str, Callable[..., bool]]] = {
    "registry_write": (Registry, "_change", lambda a, k: True),
    "ledger_done": (ActionLedger, "run_once", lambda a, k: True),
    "approval_request": (ApprovalStore, "request", lambda a, k: True),
    "task_writes": (RedisSaver, "put_writes", _root_task_writes),
}
def crash_key(prefix: str) -> str:
    """The key the drill sets to a failpoint's name to arm it."""
    return f"{prefix}:drill:crash"


def attach(url: str, prefix: str, artifacts: Path, clock: Clock | None = None,
           brain: BrainConfig | None = None) -> System:
    """The system over an existing Redis prefix: nothing is registered, everything is read.

    Training runs in a thread of this process (the drill's models take milliseconds), so a kill
    also kills any training under way, as it would with a pool owned by the loop.
    """
    fleet = build_fleet(connect(url), url, prefix=prefix, artifacts=artifacts, clock=clock)
    trainer = Trainer(fleet.registry, executor=ThreadPoolExecutor(1, thread_name_prefix="train"))
    return build_system(fleet, brain=brain, options=OPTIONS, trainer=trainer)


_SAVING = threading.Lock()
"""Held while a checkpoint is saved, and while a failpoint decides: LangGraph saves a task's
writes and the next checkpoint from different threads, so the ``task_writes`` check and the kill
must not let a checkpoint land between them."""


def install_failpoints(r: redis.Redis, prefix: str) -> None:
    """Wrap each failpoint's method so that, when armed, the process dies right after it."""
    key = crash_key(prefix)
    put = RedisSaver.put

    @functools.wraps(put)
    def saving(*args: Any, **kwargs: Any) -> Any:
        with _SAVING:
            return put(*args, **kwargs)

    RedisSaver.put = saving  # type: ignore[method-assign]
    for name, (cls, method, when) in FAILPOINTS.items():
        setattr(cls, method, _crash_after(getattr(cls, method), r, key, name, when))


def _crash_after(fn: Callable[..., Any], r: redis.Redis, key: str, name: str,
                 when: Callable[..., bool]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        if r.get(key) == name:
            with _SAVING:
                if when(args, kwargs) and r.delete(key):
                    os.kill(os.getpid(), signal.SIGKILL)
        return out

    return wrapper


def run_loop(url: str, prefix: str, artifacts: str, owner: str) -> None:
    """Attach and loop until killed (SIGKILL in the drill; SIGTERM ends it cleanly)."""
    logging.basicConfig(level=logging.ERROR)
    single_threaded_models()
    system = attach(url, prefix, Path(artifacts))
    install_failpoints(system.fleet.r, prefix)
    Loop(system, LOOP, owner=owner).run_forever()
