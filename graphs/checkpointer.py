"""LangGraph checkpoint savers on plain Redis (no modules), sync and async, with pruning and TTL.

Keys and record formats are described in graphs/checkpoint_layout.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import redis
import redis.asyncio as aredis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    SerializerProtocol,
    get_checkpoint_id,
)

from graphs.checkpoint_layout import (
    CheckpointKeys,
    Record,
    config_ids,
    make_config,
    matches,
    next_version,
    plan_put,
    plan_writes,
    queue_put,
    queue_writes,
)
from graphs.checkpoint_ops import (
    Slot,
    ThreadIndex,
    decode_members,
    drop_all,
    drop_older,
    drop_runs,
    finish_completion,
    finish_copy_reads,
    finish_index,
    finish_records,
    plan_removal,
    queue_completion,
    queue_copy,
    queue_copy_reads,
    queue_index,
    queue_records,
    queue_removal,
)

__all__ = ["AsyncRedisSaver", "RedisSaver"]

_PAGE = 100  # checkpoint ids fetched per round trip while listing
_MAX_RETRIES = 10  # optimistic-lock attempts for a removal racing with writers
Selector = Callable[[ThreadIndex], set[Slot]]


class _RedisSaverBase(BaseCheckpointSaver[str]):
    """Constructor, versioning and option checks shared by both savers."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "fw:cp",
        ttl_seconds: int | None = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        kwargs = client.get_connection_kwargs() if hasattr(client, "get_connection_kwargs") else {}
        if kwargs.get("decode_responses"):
            raise ValueError(
                "the checkpoint saver stores raw bytes: build its Redis client with "
                "decode_responses=False (e.g. fleet.store.connect(url, decode=False))"
            )
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be a positive number of seconds, not {ttl_seconds}")
        self.client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.keys = CheckpointKeys(prefix)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Return the next channel version (same scheme as ``InMemorySaver``)."""
        return next_version(current)

    @staticmethod
    def _selector(strategy: str, keep_last: int) -> Selector:
        if strategy == "delete":
            return drop_all
        if strategy != "keep_latest":
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, not {keep_last}")
        return lambda index: drop_older(index, keep_last)

    @staticmethod
    def _list_args(
        config: RunnableConfig | None, before: RunnableConfig | None
    ) -> tuple[str | None, str | None, str | None]:
        """``(ns filter, only checkpoint id, before id)`` of a list call; ns None means all."""
        ns = config["configurable"].get("checkpoint_ns") if config else None
        only_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        return ns, only_id, before_id


class RedisSaver(_RedisSaverBase):
    """Checkpoint saver on a blocking ``redis.Redis`` client (:class:`AsyncRedisSaver` for async).

    A Redis Cluster client works too (``fleet.store.connect(url, decode=False)`` with a
    ``redis+cluster://`` URL): each transaction touches one thread, whose keys share its tag.

    Semantics mirror ``langgraph.checkpoint.memory.InMemorySaver``. Every write is one MULTI/EXEC
    on keys of a single thread. Old checkpoints are bounded by :meth:`prune` and/or
    ``ttl_seconds``: with a TTL every key a write touches expires that many seconds after the
    thread's last write to it, so an idle thread vanishes and, in a busy one, checkpoints older
    than the TTL fall away while the blobs the newest checkpoint reads are kept alive.

    Args:
        client: a client built with ``decode_responses=False`` (values are raw bytes).
        prefix: first part of every key.
        ttl_seconds: expiry applied (and refreshed) on every key written; None keeps keys.
        serde: serializer; ``JsonPlusSerializer`` by default.
    """

    client: redis.Redis

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Return the checkpoint named by ``config``, or the newest of its thread and namespace.

        Args:
            config: ``configurable`` holds ``thread_id``, optional ``checkpoint_ns`` (default
                "") and optional ``checkpoint_id``.
        """
        thread_id, ns, checkpoint_id = config_ids(config)
        if checkpoint_id:
            found = self._complete(thread_id, ns, self._records(thread_id, ns, [checkpoint_id]))
            return found[0]._replace(config=config) if found else None
        return next(self._scan(thread_id, ns, None, None, None, 1), None)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Yield checkpoints newest first per namespace, like ``InMemorySaver.list``.

        Args:
            config: thread (and optionally namespace / checkpoint id) to list; None lists all
                threads, found with SCAN, so it is an admin operation.
            filter: metadata items that must all be equal.
            before: only checkpoints with an id lower than this config's checkpoint id.
            limit: at most this many tuples in total.
        """
        ns, only_id, before_id = self._list_args(config, before)
        threads = [config_ids(config)[0]] if config else sorted(self._threads())
        remaining = limit
        for thread_id in threads:
            namespaces = [ns] if ns is not None else self._namespaces(thread_id)
            for one_ns in namespaces:
                if remaining is not None and remaining <= 0:
                    return
                page = min(remaining, _PAGE) if remaining else _PAGE
                for tup in self._scan(thread_id, one_ns, only_id, before_id, filter, page):
                    yield tup
                    if remaining is not None:
                        remaining -= 1
                        if remaining <= 0:
                            return

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint atomically; only channels in ``new_versions`` get new blobs.

        Returns:
            The config naming the stored checkpoint.
        """
        plan = plan_put(self.serde, self.keys, config, checkpoint, metadata, new_versions)
        pipe = self.client.pipeline(transaction=True)
        queue_put(pipe, self.keys, plan, self.ttl_seconds)
        pipe.execute()
        return make_config(plan.thread_id, plan.ns, plan.checkpoint_id)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes for the checkpoint in ``config``, atomically.

        Args:
            config: names the checkpoint (must hold ``checkpoint_id``).
            writes: ``(channel, value)`` pairs.
            task_id: the task that produced them.
            task_path: the task's path, used to order writes on read.
        """
        pipe = self.client.pipeline(transaction=True)
        entries = plan_writes(self.serde, writes, task_id, task_path)
        queue_writes(pipe, self.keys, config, entries, self.ttl_seconds)
        pipe.execute()

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and blob of a thread (all namespaces)."""
        self._remove(str(thread_id), drop_all)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata ``run_id`` is listed.

        This SCANs for threads and reads every checkpoint's run id: an admin operation.
        """
        wanted = {str(r) for r in run_ids}
        if wanted:
            for thread_id in self._threads():
                self._remove(thread_id, lambda index: drop_runs(index, wanted))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, write and blob of one thread to another thread id."""
        source, target = str(source_thread_id), str(target_thread_id)
        index = self._index(source, self._namespaces(source))
        pipe = self.client.pipeline(transaction=False)
        slots, blobs = queue_copy_reads(pipe, self.keys, source, index)
        data = finish_copy_reads(slots, blobs, pipe.execute())
        tx = self.client.pipeline(transaction=True)
        queue_copy(tx, self.keys, target, data, self.ttl_seconds)
        tx.execute()

    def prune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", keep_last: int = 1
    ) -> None:
        """Drop old checkpoints with their writes and the blobs no kept checkpoint reads.

        Not for graphs that use the beta ``DeltaChannel``: it rebuilds values from ancestors.

        Args:
            thread_ids: threads to prune.
            strategy: ``"keep_latest"`` keeps the newest ``keep_last`` checkpoints of each
                namespace; ``"delete"`` removes everything.
            keep_last: how many checkpoints ``"keep_latest"`` keeps per namespace.
        """
        select = self._selector(strategy, keep_last)
        for thread_id in thread_ids:
            self._remove(str(thread_id), select)

    # --- internals ------------------------------------------------------------------------

    def _threads(self) -> set[str]:
        found = self.client.scan_iter(match=self.keys.thread_pattern(), count=1000)
        return {t for key in found if (t := self.keys.thread_of(key)) is not None}

    def _namespaces(self, thread_id: str) -> list[str]:
        return decode_members(self.client.smembers(self.keys.namespaces(thread_id)))

    def _records(self, thread_id: str, ns: str, ids: Sequence[str]) -> list[Record]:
        pipe = self.client.pipeline(transaction=False)
        queue_records(pipe, self.keys, thread_id, ns, ids)
        return finish_records(self.serde, ids, pipe.execute())

    def _complete(
        self, thread_id: str, ns: str, records: Sequence[Record]
    ) -> list[CheckpointTuple]:
        if not records:
            return []
        pipe = self.client.pipeline(transaction=False)
        blob_keys = queue_completion(pipe, self.keys, thread_id, ns, records)
        return finish_completion(self.serde, thread_id, ns, records, blob_keys, pipe.execute())

    def _scan(
        self,
        thread_id: str,
        ns: str,
        only_id: str | None,
        before_id: str | None,
        filter: dict[str, Any] | None,
        page: int,
    ) -> Iterator[CheckpointTuple]:
        """Yield one namespace's matching checkpoints newest first, a page per round trip."""
        if only_id is not None:
            if before_id is None or only_id < before_id:
                records = self._records(thread_id, ns, [only_id])
                yield from self._complete(
                    thread_id, ns, [r for r in records if matches(r.metadata, filter)]
                )
            return
        upper = f"({before_id}" if before_id else "+"
        while True:
            members = self.client.zrevrangebylex(
                self.keys.index(thread_id, ns), upper, "-", start=0, num=page
            )
            ids = [m.decode() for m in members]
            records = [r for r in self._records(thread_id, ns, ids) if matches(r.metadata, filter)]
            yield from self._complete(thread_id, ns, records)
            if len(ids) < page:
                return
            upper = f"({ids[-1]}"

    def _index(self, thread_id: str, namespaces: Sequence[str]) -> ThreadIndex:
        pipe = self.client.pipeline(transaction=False)
        for ns in namespaces:
            pipe.zrevrangebylex(self.keys.index(thread_id, ns), "+", "-")
        id_lists = [[m.decode() for m in ids] for ids in pipe.execute()]
        pipe = self.client.pipeline(transaction=False)
        queue_index(pipe, self.keys, thread_id, namespaces, id_lists)
        return finish_index(self.serde, namespaces, id_lists, pipe.execute())

    def _remove(self, thread_id: str, select: Selector) -> None:
        """Delete the selected checkpoints of one thread under WATCH, retrying on a race.

        The thread's index keys are watched before they are read, so a put landing between the
        read and the MULTI/EXEC aborts it and the plan is rebuilt (a fork could otherwise start
        reading a blob this removal deletes).
        """
        ns_key = self.keys.namespaces(thread_id)
        for _ in range(_MAX_RETRIES):
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(ns_key)
                    namespaces = decode_members(pipe.smembers(ns_key))
                    if not namespaces:
                        return
                    pipe.watch(*(self.keys.index(thread_id, ns) for ns in namespaces))
                    index = self._index(thread_id, namespaces)
                    plan = plan_removal(self.keys, thread_id, index, select(index))
                    if plan.empty:
                        return
                    pipe.multi()
                    queue_removal(pipe, self.keys, thread_id, plan)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
        raise redis.WatchError(f"thread {thread_id!r} kept changing; gave up after {_MAX_RETRIES}")


class AsyncRedisSaver(_RedisSaverBase):
    """Checkpoint saver on a ``redis.asyncio.Redis`` client; the async twin of :class:`RedisSaver`.

    On a Redis Cluster give it ``fleet.store.connect_async(url)`` (a
    ``redis.asyncio.cluster.RedisCluster``). Only the ``a*`` methods work: a graph compiled with
    it must be run with ``ainvoke`` / ``astream``. Args, key layout and TTL semantics are those
    of :class:`RedisSaver`.
    """

    client: aredis.Redis

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async :meth:`RedisSaver.get_tuple`."""
        thread_id, ns, checkpoint_id = config_ids(config)
        if checkpoint_id:
            records = await self._records(thread_id, ns, [checkpoint_id])
            found = await self._complete(thread_id, ns, records)
            return found[0]._replace(config=config) if found else None
        async for tup in self._scan(thread_id, ns, None, None, None, 1):
            return tup
        return None

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async :meth:`RedisSaver.list`."""
        ns, only_id, before_id = self._list_args(config, before)
        threads = [config_ids(config)[0]] if config else sorted(await self._threads())
        remaining = limit
        for thread_id in threads:
            namespaces = [ns] if ns is not None else await self._namespaces(thread_id)
            for one_ns in namespaces:
                if remaining is not None and remaining <= 0:
                    return
                page = min(remaining, _PAGE) if remaining else _PAGE
                async for tup in self._scan(thread_id, one_ns, only_id, before_id, filter, page):
                    yield tup
                    if remaining is not None:
                        remaining -= 1
                        if remaining <= 0:
                            return

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async :meth:`RedisSaver.put`."""
        plan = plan_put(self.serde, self.keys, config, checkpoint, metadata, new_versions)
        pipe = self.client.pipeline(transaction=True)
        queue_put(pipe, self.keys, plan, self.ttl_seconds)
        await pipe.execute()
        return make_config(plan.thread_id, plan.ns, plan.checkpoint_id)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async :meth:`RedisSaver.put_writes`."""
        pipe = self.client.pipeline(transaction=True)
        entries = plan_writes(self.serde, writes, task_id, task_path)
        queue_writes(pipe, self.keys, config, entries, self.ttl_seconds)
        await pipe.execute()

    async def adelete_thread(self, thread_id: str) -> None:
        """Async :meth:`RedisSaver.delete_thread`."""
        await self._remove(str(thread_id), drop_all)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async :meth:`RedisSaver.delete_for_runs`."""
        wanted = {str(r) for r in run_ids}
        if wanted:
            for thread_id in await self._threads():
                await self._remove(thread_id, lambda index: drop_runs(index, wanted))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async :meth:`RedisSaver.copy_thread`."""
        source, target = str(source_thread_id), str(target_thread_id)
        index = await self._index(source, await self._namespaces(source))
        pipe = self.client.pipeline(transaction=False)
        slots, blobs = queue_copy_reads(pipe, self.keys, source, index)
        data = finish_copy_reads(slots, blobs, await pipe.execute())
        tx = self.client.pipeline(transaction=True)
        queue_copy(tx, self.keys, target, data, self.ttl_seconds)
        await tx.execute()

    async def aprune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", keep_last: int = 1
    ) -> None:
        """Async :meth:`RedisSaver.prune`."""
        select = self._selector(strategy, keep_last)
        for thread_id in thread_ids:
            await self._remove(str(thread_id), select)

    # --- internals (each mirrors the RedisSaver method of the same name) ------------------

    async def _threads(self) -> set[str]:
        found = self.client.scan_iter(match=self.keys.thread_pattern(), count=1000)
        return {t async for key in found if (t := self.keys.thread_of(key)) is not None}

    async def _namespaces(self, thread_id: str) -> list[str]:
        return decode_members(await self.client.smembers(self.keys.namespaces(thread_id)))

    async def _records(self, thread_id: str, ns: str, ids: Sequence[str]) -> list[Record]:
        pipe = self.client.pipeline(transaction=False)
        queue_records(pipe, self.keys, thread_id, ns, ids)
        return finish_records(self.serde, ids, await pipe.execute())

    async def _complete(
        self, thread_id: str, ns: str, records: Sequence[Record]
    ) -> list[CheckpointTuple]:
        if not records:
            return []
        pipe = self.client.pipeline(transaction=False)
        blob_keys = queue_completion(pipe, self.keys, thread_id, ns, records)
        results = await pipe.execute()
        return finish_completion(self.serde, thread_id, ns, records, blob_keys, results)

    async def _scan(
        self,
        thread_id: str,
        ns: str,
        only_id: str | None,
        before_id: str | None,
        filter: dict[str, Any] | None,
        page: int,
    ) -> AsyncIterator[CheckpointTuple]:
        if only_id is not None:
            if before_id is None or only_id < before_id:
                records = await self._records(thread_id, ns, [only_id])
                kept = [r for r in records if matches(r.metadata, filter)]
                for tup in await self._complete(thread_id, ns, kept):
                    yield tup
            return
        upper = f"({before_id}" if before_id else "+"
        while True:
            members = await self.client.zrevrangebylex(
                self.keys.index(thread_id, ns), upper, "-", start=0, num=page
            )
            ids = [m.decode() for m in members]
            records = await self._records(thread_id, ns, ids)
            kept = [r for r in records if matches(r.metadata, filter)]
            for tup in await self._complete(thread_id, ns, kept):
                yield tup
            if len(ids) < page:
                return
            upper = f"({ids[-1]}"

    async def _index(self, thread_id: str, namespaces: Sequence[str]) -> ThreadIndex:
        pipe = self.client.pipeline(transaction=False)
        for ns in namespaces:
            pipe.zrevrangebylex(self.keys.index(thread_id, ns), "+", "-")
        id_lists = [[m.decode() for m in ids] for ids in await pipe.execute()]
        pipe = self.client.pipeline(transaction=False)
        queue_index(pipe, self.keys, thread_id, namespaces, id_lists)
        return finish_index(self.serde, namespaces, id_lists, await pipe.execute())

    async def _remove(self, thread_id: str, select: Selector) -> None:
        ns_key = self.keys.namespaces(thread_id)
        for _ in range(_MAX_RETRIES):
            async with self.client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(ns_key)
                    namespaces = decode_members(await pipe.smembers(ns_key))
                    if not namespaces:
                        return
                    await pipe.watch(*(self.keys.index(thread_id, ns) for ns in namespaces))
                    index = await self._index(thread_id, namespaces)
                    plan = plan_removal(self.keys, thread_id, index, select(index))
                    if plan.empty:
                        return
                    pipe.multi()
                    queue_removal(pipe, self.keys, thread_id, plan)
                    await pipe.execute()
                    return
                except redis.WatchError:
                    continue
        raise redis.WatchError(f"thread {thread_id!r} kept changing; gave up after {_MAX_RETRIES}")
