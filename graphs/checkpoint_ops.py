"""Batched read plans, removal planning and thread copying for the Redis checkpoint savers.

Like graphs/checkpoint_layout.py this does no I/O: the savers execute what is queued here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base import CheckpointTuple, SerializerProtocol

from graphs.checkpoint_layout import (
    RECORD_REF_FIELDS,
    CheckpointKeys,
    Pipe,
    Record,
    build_tuple,
    load,
    parse_record,
)

BlobRef = tuple[str, str]  # (channel, str(version))
Slot = tuple[str, str]  # (checkpoint_ns, checkpoint_id)

# Reads are split in two so the sync and async savers share them: ``queue_*`` queues commands on
# a plain (non-transaction) pipeline, the saver executes it, ``finish_*`` decodes the results.


def queue_records(
    pipe: Pipe, keys: CheckpointKeys, thread_id: str, ns: str, ids: Sequence[str]
) -> None:
    """Queue an HGETALL of each checkpoint hash."""
    for cid in ids:
        pipe.hgetall(keys.checkpoint(thread_id, ns, cid))


def finish_records(
    serde: SerializerProtocol, ids: Sequence[str], results: Sequence[Any]
) -> list[Record]:
    """Decode :func:`queue_records` results, skipping checkpoints that are gone."""
    records = (parse_record(serde, cid, raw) for cid, raw in zip(ids, results, strict=True))
    return [r for r in records if r is not None]


def queue_completion(
    pipe: Pipe, keys: CheckpointKeys, thread_id: str, ns: str, records: Sequence[Record]
) -> list[list[tuple[str, str]]]:
    """Queue reading each record's writes and blobs; returns the blob keys queued per record."""
    blob_keys = []
    for rec in records:
        pipe.hgetall(keys.writes(thread_id, ns, rec.checkpoint_id))
        refs = rec.blob_keys(keys, thread_id, ns)
        # One GET per blob, not MGET: redis-py's cluster pipeline refuses multi-key commands
        # (even within one slot); in the same pipeline it costs no extra round trip.
        for _, key in refs:
            pipe.get(key)
        blob_keys.append(refs)
    return blob_keys


def finish_completion(
    serde: SerializerProtocol,
    thread_id: str,
    ns: str,
    records: Sequence[Record],
    blob_keys: Sequence[Sequence[tuple[str, str]]],
    results: Sequence[Any],
) -> list[CheckpointTuple]:
    """Build the tuples from :func:`queue_completion` results."""
    it = iter(results)
    out = []
    for rec, refs in zip(records, blob_keys, strict=True):
        writes = next(it)
        values = [next(it) for _ in refs]
        blobs = list(zip((ch for ch, _ in refs), values, strict=True))
        out.append(build_tuple(serde, thread_id, ns, rec, writes, blobs))
    return out


def queue_index(
    pipe: Pipe,
    keys: CheckpointKeys,
    thread_id: str,
    namespaces: Sequence[str],
    id_lists: Sequence[Sequence[str]],
) -> None:
    """Queue an HMGET of :data:`RECORD_REF_FIELDS` for every checkpoint id."""
    for ns, ids in zip(namespaces, id_lists, strict=True):
        for cid in ids:
            pipe.hmget(keys.checkpoint(thread_id, ns, cid), list(RECORD_REF_FIELDS))


def finish_index(
    serde: SerializerProtocol,
    namespaces: Sequence[str],
    id_lists: Sequence[Sequence[str]],
    results: Sequence[Any],
) -> ThreadIndex:
    """Build a :data:`ThreadIndex` from :func:`queue_index` results."""
    it = iter(results)
    return {
        ns: [(cid, parse_stored(serde, *next(it))) for cid in ids]
        for ns, ids in zip(namespaces, id_lists, strict=True)
    }


def decode_members(members: Iterable[bytes]) -> list[str]:
    """Sorted text of set or sorted-set members."""
    return sorted(m.decode() for m in members)


# --- removal (prune, delete_thread, delete_for_runs) and copy --------------------------------


@dataclass(frozen=True)
class Stored:
    """What removal needs to know about one stored checkpoint."""

    blobs: frozenset[BlobRef]
    run_id: str | None


# namespace -> [(checkpoint id, Stored or None if the hash is gone)], newest first
ThreadIndex = dict[str, list[tuple[str, Stored | None]]]


def parse_stored(
    serde: SerializerProtocol, raw_checkpoint: bytes | None, raw_run: bytes | None
) -> Stored | None:
    """Decode the HMGET of :data:`RECORD_REF_FIELDS`; None when the checkpoint hash is gone."""
    if raw_checkpoint is None:
        return None
    versions = load(serde, raw_checkpoint)["channel_versions"]
    refs = frozenset((ch, str(v)) for ch, v in versions.items())
    return Stored(refs, raw_run.decode() if raw_run is not None else None)


def drop_all(index: ThreadIndex) -> set[Slot]:
    """Select every checkpoint of the thread."""
    return {(ns, cid) for ns, entries in index.items() for cid, _ in entries}


def drop_older(index: ThreadIndex, keep_last: int) -> set[Slot]:
    """Select all but the newest ``keep_last`` stored checkpoints of each namespace."""
    drop = set()
    for ns, entries in index.items():
        alive = [cid for cid, stored in entries if stored is not None]
        drop.update((ns, cid) for cid in alive[keep_last:])
    return drop


def drop_runs(index: ThreadIndex, run_ids: set[str]) -> set[Slot]:
    """Select the checkpoints whose metadata ``run_id`` is in ``run_ids``."""
    return {
        (ns, cid)
        for ns, entries in index.items()
        for cid, stored in entries
        if stored is not None and stored.run_id in run_ids
    }


@dataclass(frozen=True)
class Removal:
    """Keys to delete and index members to remove, for one thread."""

    delete: tuple[str, ...]
    unindex: dict[str, tuple[str, ...]]  # index key -> checkpoint ids
    emptied_namespaces: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """True when there is nothing to do."""
        return not (self.delete or self.unindex or self.emptied_namespaces)


def plan_removal(
    keys: CheckpointKeys, thread_id: str, index: ThreadIndex, drop: set[Slot]
) -> Removal:
    """Plan deleting the ``drop`` checkpoints with their writes and now-unreferenced blobs.

    Index entries whose hash has already expired are always cleaned up. A blob is deleted only
    when no surviving checkpoint of its namespace references it.
    """
    delete: list[str] = []
    unindex: dict[str, tuple[str, ...]] = {}
    emptied: list[str] = []
    for ns, entries in index.items():
        gone = [(cid, s) for cid, s in entries if s is None or (ns, cid) in drop]
        if not gone:
            continue
        gone_ids = {cid for cid, _ in gone}
        kept_refs = {r for cid, s in entries if cid not in gone_ids and s for r in s.blobs}
        dead_refs = {r for _, s in gone if s for r in s.blobs} - kept_refs
        for cid, _ in gone:
            delete += [keys.checkpoint(thread_id, ns, cid), keys.writes(thread_id, ns, cid)]
        delete += [keys.blob(thread_id, ns, ch, ver) for ch, ver in sorted(dead_refs)]
        if len(gone) == len(entries):
            delete.append(keys.index(thread_id, ns))
            emptied.append(ns)
        else:
            unindex[keys.index(thread_id, ns)] = tuple(sorted(gone_ids))
    return Removal(tuple(delete), unindex, tuple(emptied))


def queue_removal(pipe: Pipe, keys: CheckpointKeys, thread_id: str, plan: Removal) -> None:
    """Queue a planned removal on a MULTI pipeline."""
    if plan.delete:
        pipe.delete(*plan.delete)
    for idx_key, ids in plan.unindex.items():
        pipe.zrem(idx_key, *ids)
    if plan.emptied_namespaces:
        pipe.srem(keys.namespaces(thread_id), *plan.emptied_namespaces)


@dataclass(frozen=True)
class ThreadCopy:
    """Raw bytes of one thread, read for ``copy_thread``."""

    checkpoints: dict[Slot, tuple[dict[bytes, bytes], dict[bytes, bytes]]]  # (record, writes)
    blobs: dict[tuple[str, str, str], bytes]  # (ns, channel, version) -> packed value


def queue_copy(
    pipe: Pipe, keys: CheckpointKeys, target: str, data: ThreadCopy, ttl: int | None
) -> None:
    """Queue writing a copied thread under ``target`` on a MULTI pipeline."""
    written: list[str] = []
    for (ns, cid), (record, writes) in data.checkpoints.items():
        cp_key, w_key = keys.checkpoint(target, ns, cid), keys.writes(target, ns, cid)
        pipe.hset(cp_key, mapping=record)
        if writes:
            pipe.hset(w_key, mapping=writes)
        pipe.zadd(keys.index(target, ns), {cid: 0})
        pipe.sadd(keys.namespaces(target), ns)
        written += [cp_key, w_key, keys.index(target, ns)]
    for (ns, ch, ver), value in data.blobs.items():
        pipe.set(keys.blob(target, ns, ch, ver), value, ex=ttl)
    if ttl and data.checkpoints:
        for key in dict.fromkeys([*written, keys.namespaces(target)]):
            pipe.expire(key, ttl)


def queue_copy_reads(
    pipe: Pipe, keys: CheckpointKeys, source: str, index: ThreadIndex
) -> tuple[list[Slot], list[tuple[str, str, str]]]:
    """Queue reading every live checkpoint, its writes and its blobs; returns what was queued."""
    slots = [(ns, cid) for ns, entries in index.items() for cid, s in entries if s is not None]
    blobs = sorted(
        {
            (ns, ch, ver)
            for ns, entries in index.items()
            for _, s in entries
            if s
            for ch, ver in s.blobs
        }
    )
    for ns, cid in slots:
        pipe.hgetall(keys.checkpoint(source, ns, cid))
        pipe.hgetall(keys.writes(source, ns, cid))
    for ns, ch, ver in blobs:
        pipe.get(keys.blob(source, ns, ch, ver))
    return slots, blobs


def finish_copy_reads(
    slots: Sequence[Slot], blobs: Sequence[tuple[str, str, str]], results: Sequence[Any]
) -> ThreadCopy:
    """Collect :func:`queue_copy_reads` results, skipping what vanished meanwhile."""
    it = iter(results)
    checkpoints = {}
    for slot in slots:
        record, writes = next(it), next(it)
        if record:
            checkpoints[slot] = (record, writes)
    values = {ref: value for ref in blobs if (value := next(it)) is not None}
    return ThreadCopy(checkpoints, values)
