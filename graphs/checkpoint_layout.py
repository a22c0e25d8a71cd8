"""Redis key layout, byte codecs and command plans shared by the sync and async checkpoint savers.

Nothing here talks to Redis: functions build keys, encode and decode records, decide what to delete,
and queue commands on a pipeline (queuing is synchronous for both redis-py pipeline flavours).

Layout (``P`` is the saver's prefix, ``fw:cp`` by default). Every variable part is percent-quoted,
so a ``:`` inside a namespace or channel name cannot make two keys collide, and every key of one
thread carries the hash tag ``{T}`` so a thread lives in one Redis Cluster slot and one MULTI/EXEC
covers it.

==========================  ======  ===========================================================
key                         type    holds
==========================  ======  ===========================================================
``P:{T}:ns``                set     namespaces of thread ``T`` that hold checkpoints
``P:{T}:idx:NS``            zset    checkpoint ids of one namespace, score 0, so lexicographic
                                    order is creation order (ids are monotonic uuid6 strings)
``P:{T}:cp:NS:ID``          hash    one checkpoint without its channel values: ``checkpoint``,
                                    ``metadata`` (typed, packed), ``parent`` id, ``run_id``, ``v``
``P:{T}:w:NS:ID``           hash    pending writes of that checkpoint, field ``pack(task, idx)``,
                                    value ``pack(channel, type, bytes, task_path)``
``P:{T}:b:NS:CH:VER``       string  one channel value at one version, ``pack(type, bytes)``
==========================  ======  ===========================================================
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    SerializerProtocol,
    get_checkpoint_metadata,
    writes_sort_key,
)

SCHEMA_VERSION = b"1"  # stored in every checkpoint hash as field ``v``; bump on layout changes
_F_VERSION, _F_CHECKPOINT, _F_METADATA = b"v", b"checkpoint", b"metadata"
_F_PARENT, _F_RUN = b"parent", b"run_id"
RECORD_REF_FIELDS = (_F_CHECKPOINT, _F_RUN)  # what removal reads of a checkpoint hash
_EMPTY = ("empty", b"")  # marks a channel with a new version but no value, as InMemorySaver does
_GLOB_SPECIAL = "*?[]\\"


class Pipe(Protocol):
    """The pipeline commands queued here (redis-py sync and asyncio pipelines both fit)."""

    def delete(self, *names: str) -> Any: ...  # noqa: D102
    def set(self, name: str, value: bytes, ex: int | None = None) -> Any: ...  # noqa: D102
    def hset(self, name: str, *, mapping: Mapping[bytes, bytes]) -> Any: ...  # noqa: D102
    def hsetnx(self, name: str, key: bytes, value: bytes) -> Any: ...  # noqa: D102
    def zadd(self, name: str, mapping: Mapping[str, float]) -> Any: ...  # noqa: D102
    def zrem(self, name: str, *values: str) -> Any: ...  # noqa: D102
    def sadd(self, name: str, *values: str) -> Any: ...  # noqa: D102
    def srem(self, name: str, *values: str) -> Any: ...  # noqa: D102
    def expire(self, name: str, time: int) -> Any: ...  # noqa: D102
    def get(self, name: str) -> Any: ...  # noqa: D102
    def mget(self, keys: list[str]) -> Any: ...  # noqa: D102
    def hgetall(self, name: str) -> Any: ...  # noqa: D102
    def hmget(self, name: str, keys: list[bytes]) -> Any: ...  # noqa: D102


def pack(*parts: bytes | str) -> bytes:
    """Frame several byte strings into one (4-byte big-endian length before each part).

    >>> unpack(pack("a", b"", "bc"))
    [b'a', b'', b'bc']
    """
    out = bytearray()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def unpack(data: bytes) -> list[bytes]:
    """Split a value built by :func:`pack` back into its parts."""
    parts, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 4], "big")
        parts.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return parts


def dump(serde: SerializerProtocol, obj: Any) -> bytes:
    """Serialize ``obj`` with ``serde`` into one packed ``(type, bytes)`` value."""
    return pack(*serde.dumps_typed(obj))


def load(serde: SerializerProtocol, data: bytes) -> Any:
    """Inverse of :func:`dump`."""
    kind, raw = unpack(data)
    return serde.loads_typed((kind.decode(), raw))


def next_version(current: str | int | None) -> str:
    """Return the channel version after ``current``, exactly as ``InMemorySaver`` does.

    The integer part orders versions; the random fraction keeps versions written by concurrent
    forks of one thread distinct.
    """
    if current is None:
        current_v = 0
    elif isinstance(current, int):
        current_v = current
    else:
        current_v = int(current.split(".")[0])
    return f"{current_v + 1:032}.{random.random():016}"


def config_ids(config: RunnableConfig) -> tuple[str, str, str | None]:
    """Return ``(thread_id, checkpoint_ns, checkpoint_id)`` from a config (ns defaults to "")."""
    conf = config["configurable"]
    return str(conf["thread_id"]), conf.get("checkpoint_ns", ""), conf.get("checkpoint_id")


def make_config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    """The config that names one stored checkpoint."""
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }


@dataclass(frozen=True)
class CheckpointKeys:
    """Builds every checkpoint key from one prefix (see the module docstring for the layout)."""

    prefix: str = "fw:cp"

    def _thread(self, thread_id: str) -> str:
        # quote() escapes "{" and "}", so the hash tag always spans exactly the thread id
        return f"{self.prefix}:{{{quote(thread_id, safe='')}}}"

    def namespaces(self, thread_id: str) -> str:
        """Set of the thread's namespaces; its existence is what marks a thread as stored."""
        return f"{self._thread(thread_id)}:ns"

    def index(self, thread_id: str, ns: str) -> str:
        """Sorted set of checkpoint ids in one namespace."""
        return f"{self._thread(thread_id)}:idx:{quote(ns, safe='')}"

    def checkpoint(self, thread_id: str, ns: str, checkpoint_id: str) -> str:
        """Hash holding one checkpoint record."""
        return f"{self._thread(thread_id)}:cp:{quote(ns, safe='')}:{quote(checkpoint_id, safe='')}"

    def writes(self, thread_id: str, ns: str, checkpoint_id: str) -> str:
        """Hash holding the pending writes of one checkpoint."""
        return f"{self._thread(thread_id)}:w:{quote(ns, safe='')}:{quote(checkpoint_id, safe='')}"

    def blob(self, thread_id: str, ns: str, channel: str, version: str) -> str:
        """String holding one channel value at one version."""
        parts = (quote(ns, safe=""), quote(channel, safe=""), quote(version, safe=""))
        return f"{self._thread(thread_id)}:b:" + ":".join(parts)

    def thread_pattern(self) -> str:
        """SCAN pattern matching every thread's namespace set."""
        escaped = "".join("\\" + c if c in _GLOB_SPECIAL else c for c in self.prefix)
        return escaped + ":{*}:ns"

    def thread_of(self, key: bytes | str) -> str | None:
        """The thread id of a key found with :meth:`thread_pattern`, or None if it is another key.

        ``*`` also matches e.g. ``P:{T}:idx:ns`` (namespace "ns"); a quoted thread id never holds
        "}", which tells the two apart.
        """
        text = key.decode() if isinstance(key, bytes) else key
        head, tail = f"{self.prefix}:{{", "}:ns"
        if not (text.startswith(head) and text.endswith(tail)):
            return None
        middle = text[len(head) : -len(tail)]
        return None if "}" in middle else unquote(middle)


# --- put and put_writes ---------------------------------------------------------------------


@dataclass(frozen=True)
class PutPlan:
    """Everything one ``put`` writes, already serialized."""

    thread_id: str
    ns: str
    checkpoint_id: str
    record: dict[bytes, bytes]
    new_blobs: dict[str, bytes]  # blob key -> packed value
    referenced_blobs: tuple[str, ...]  # every blob key the checkpoint reads (TTL refresh)


def plan_put(
    serde: SerializerProtocol,
    keys: CheckpointKeys,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
) -> PutPlan:
    """Serialize a checkpoint the way ``InMemorySaver.put`` splits it: record plus value blobs."""
    thread_id, ns, parent_id = config_ids(config)
    record_cp = checkpoint.copy()
    values: dict[str, Any] = record_cp.pop("channel_values")  # type: ignore[misc]
    new_blobs = {
        keys.blob(thread_id, ns, ch, str(ver)): (
            dump(serde, values[ch]) if ch in values else pack(*_EMPTY)
        )
        for ch, ver in new_versions.items()
    }
    full_md = get_checkpoint_metadata(config, metadata)
    record = {
        _F_VERSION: SCHEMA_VERSION,
        _F_CHECKPOINT: dump(serde, record_cp),
        _F_METADATA: dump(serde, full_md),
        _F_PARENT: (parent_id or "").encode(),
    }
    if full_md.get("run_id") is not None:
        record[_F_RUN] = str(full_md["run_id"]).encode()
    referenced = tuple(
        keys.blob(thread_id, ns, ch, str(ver)) for ch, ver in checkpoint["channel_versions"].items()
    )
    return PutPlan(thread_id, ns, checkpoint["id"], record, new_blobs, referenced)


def queue_put(pipe: Pipe, keys: CheckpointKeys, plan: PutPlan, ttl: int | None) -> None:
    """Queue the commands of one put on a MULTI pipeline."""
    tid, ns, cid = plan.thread_id, plan.ns, plan.checkpoint_id
    cp_key, idx_key, ns_key = (
        keys.checkpoint(tid, ns, cid),
        keys.index(tid, ns),
        keys.namespaces(tid),
    )
    pipe.delete(cp_key)  # a re-put of the same id must not keep fields of the old record
    pipe.hset(cp_key, mapping=plan.record)
    for key, value in plan.new_blobs.items():
        pipe.set(key, value, ex=ttl)
    pipe.zadd(idx_key, {cid: 0})
    pipe.sadd(ns_key, ns)
    if ttl:
        # Blobs the checkpoint reads but did not write are refreshed too, so a blob never expires
        # before the newest checkpoint that needs it.
        for key in (cp_key, idx_key, ns_key, *plan.referenced_blobs):
            pipe.expire(key, ttl)


def plan_writes(
    serde: SerializerProtocol,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
) -> list[tuple[bytes, bytes, bool]]:
    """Return ``(field, value, overwrite)`` per write, with ``InMemorySaver``'s key rules.

    Special channels (ERROR, INTERRUPT, ...) get their fixed negative index and overwrite; normal
    writes are keyed by position and never replace a stored write with the same key.
    """
    out = []
    for idx, (channel, value) in enumerate(writes):
        write_idx = WRITES_IDX_MAP.get(channel, idx)
        field = pack(task_id, str(write_idx))
        out.append((field, pack(channel, *serde.dumps_typed(value), task_path), write_idx < 0))
    return out


def queue_writes(
    pipe: Pipe,
    keys: CheckpointKeys,
    config: RunnableConfig,
    entries: Iterable[tuple[bytes, bytes, bool]],
    ttl: int | None,
) -> None:
    """Queue the commands of one put_writes on a MULTI pipeline."""
    thread_id, ns, checkpoint_id = config_ids(config)
    if checkpoint_id is None:
        raise ValueError("put_writes needs a config with a checkpoint_id")
    w_key = keys.writes(thread_id, ns, checkpoint_id)
    for field, value, overwrite in entries:
        if overwrite:
            pipe.hset(w_key, mapping={field: value})
        else:
            pipe.hsetnx(w_key, field, value)
    if ttl:
        for key in (w_key, keys.index(thread_id, ns), keys.namespaces(thread_id)):
            pipe.expire(key, ttl)


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """A decoded checkpoint hash, still without channel values and writes."""

    checkpoint_id: str
    checkpoint: Checkpoint
    metadata: CheckpointMetadata
    parent_id: str | None

    def blob_keys(self, keys: CheckpointKeys, thread_id: str, ns: str) -> list[tuple[str, str]]:
        """``(channel, blob key)`` for every channel version the checkpoint holds."""
        versions = self.checkpoint["channel_versions"]
        return [(ch, keys.blob(thread_id, ns, ch, str(v))) for ch, v in versions.items()]


def parse_record(
    serde: SerializerProtocol, checkpoint_id: str, raw: Mapping[bytes, bytes]
) -> Record | None:
    """Decode a checkpoint hash read with HGETALL; None when the key is gone."""
    if not raw or _F_CHECKPOINT not in raw:
        return None
    return Record(
        checkpoint_id=checkpoint_id,
        checkpoint=load(serde, raw[_F_CHECKPOINT]),
        metadata=load(serde, raw[_F_METADATA]),
        parent_id=raw.get(_F_PARENT, b"").decode() or None,
    )


def matches(metadata: CheckpointMetadata, filter: Mapping[str, Any] | None) -> bool:
    """Metadata filter of ``InMemorySaver.list``: every key equal, missing keys are None."""
    return not filter or all(metadata.get(k) == v for k, v in filter.items())


def decode_writes(serde: SerializerProtocol, raw: Mapping[bytes, bytes]) -> list[PendingWrite]:
    """Pending writes from a writes hash, in ``writes_sort_key`` order."""
    rows = []
    for field, value in raw.items():
        task_id, idx = (p.decode() for p in unpack(field))
        channel, kind, data, task_path = unpack(value)
        sort_key = writes_sort_key(task_path.decode(), task_id, int(idx))
        rows.append((sort_key, task_id, channel.decode(), (kind.decode(), data)))
    rows.sort(key=lambda row: row[0])
    return [(task_id, ch, serde.loads_typed(typed)) for _, task_id, ch, typed in rows]


def build_tuple(
    serde: SerializerProtocol,
    thread_id: str,
    ns: str,
    record: Record,
    writes_raw: Mapping[bytes, bytes],
    blobs: Sequence[tuple[str, bytes | None]],
) -> CheckpointTuple:
    """Assemble a CheckpointTuple from a record, its writes hash and its ``(channel, blob)``s."""
    values = {}
    for channel, packed in blobs:
        if packed is None:
            continue
        kind, data = unpack(packed)
        if kind.decode() != _EMPTY[0]:
            values[channel] = serde.loads_typed((kind.decode(), data))
    return CheckpointTuple(
        config=make_config(thread_id, ns, record.checkpoint_id),
        checkpoint={**record.checkpoint, "channel_values": values},
        metadata=record.metadata,
        parent_config=(make_config(thread_id, ns, record.parent_id) if record.parent_id else None),
        pending_writes=decode_writes(serde, writes_raw),
    )
