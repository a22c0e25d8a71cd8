"""Redis checkpoint savers: the official conformance suite, parity with InMemorySaver, real graphs,
pruning and TTL."""

from __future__ import annotations

import operator
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Annotated, Any, TypedDict

import pytest
import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.types import ERROR, INTERRUPT
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from fleet.store import connect, connect_async
from graphs.checkpoint_layout import CheckpointKeys, pack, unpack
from graphs.checkpointer import AsyncRedisSaver, RedisSaver


@pytest.fixture()
def prefix(keys) -> str:
    return f"{keys.prefix}:cp"


@pytest.fixture()
def rb(redis_url: str) -> Iterator[redis.Redis]:
    """A bytes client, as the saver needs."""
    client = connect(redis_url, decode=False)
    yield client
    client.close()


@pytest.fixture()
def saver(rb: redis.Redis, prefix: str) -> RedisSaver:
    return RedisSaver(rb, prefix=prefix)


# --- the official conformance suite ------------------------------------------------------------


class SyncAsAsync(BaseCheckpointSaver[str]):
    """Exposes a blocking saver through the ``a*`` methods the (async-only) suite calls."""

    def __init__(self, inner: RedisSaver) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.inner.get_tuple(config)

    async def alist(self, config, *, filter=None, before=None, limit=None) -> AsyncIterator:
        for tup in self.inner.list(config, filter=filter, before=before, limit=limit):
            yield tup

    async def aput(self, config, checkpoint, metadata, new_versions) -> RunnableConfig:
        return self.inner.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config, writes, task_id, task_path="") -> None:
        self.inner.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.inner.delete_thread(thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        self.inner.delete_for_runs(run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self.inner.copy_thread(source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self.inner.prune(thread_ids, strategy=strategy)

    def get_next_version(self, current: str | None, channel: None) -> str:
        return self.inner.get_next_version(current, channel)


FLAVOURS = ["sync", "async", "async+ttl"]


@pytest.mark.parametrize("capability", [c.value for c in Capability])
@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_conformance(flavour: str, capability: str, redis_url: str, prefix: str) -> None:
    async def factory() -> AsyncIterator[BaseCheckpointSaver]:
        if flavour == "sync":
            client = connect(redis_url, decode=False)
            yield SyncAsAsync(RedisSaver(client, prefix=prefix))
            client.close()
        else:
            aclient = connect_async(redis_url)
            ttl = 3600 if flavour.endswith("+ttl") else None
            yield AsyncRedisSaver(aclient, prefix=prefix, ttl_seconds=ttl)
            await aclient.aclose()

    registered = checkpointer_test(name=f"RedisSaver[{flavour}]")(factory)
    report = await validate(registered, capabilities={capability})
    result = report.results[capability]
    assert result.detected, f"{capability} not detected on the {flavour} saver"
    assert result.tests_failed == 0, "\n".join(result.failures)
    assert result.passed and result.tests_passed > 0


# --- parity with InMemorySaver on list/filter/before/limit and write semantics -----------------


def _apply(saver: BaseCheckpointSaver, ops: list[tuple[str, Any]]) -> None:
    """Replay one scripted sequence of puts and writes on a saver."""
    parents: dict[tuple[str, str], str] = {}
    for op, arg in ops:
        if op == "put":
            tid, ns, cid, values, new_versions, md = arg
            conf: dict[str, Any] = {"thread_id": tid, "checkpoint_ns": ns}
            if (tid, ns) in parents:
                conf["checkpoint_id"] = parents[(tid, ns)]
            cp = empty_checkpoint()
            cp["id"] = cid
            cp["ts"] = "2026-01-01T00:00:00+00:00"  # both savers must see identical checkpoints
            cp["channel_values"] = values
            cp["channel_versions"] = {k: "1" for k in values} | new_versions
            saver.put({"configurable": conf}, cp, md, new_versions)
            parents[(tid, ns)] = cid
        else:
            tid, ns, cid, writes, task_id, task_path = arg
            conf = {"thread_id": tid, "checkpoint_ns": ns, "checkpoint_id": cid}
            saver.put_writes({"configurable": conf}, writes, task_id, task_path)


def _script() -> tuple[list[tuple[str, Any]], list[str]]:
    ids = [str(uuid6(clock_seq=i)) for i in range(6)]
    md = [
        {"source": "input" if i % 2 == 0 else "loop", "step": i, "parents": {}, "score": i % 3}
        for i in range(6)
    ]
    ops: list[tuple[str, Any]] = [
        ("put", ("t1", "", ids[0], {"a": 1, "b": "x"}, {"a": "1", "b": "1"}, md[0])),
        ("put", ("t1", "", ids[1], {"a": 2, "b": "x"}, {"a": "2"}, md[1])),
        ("put", ("t1", "child:1", ids[2], {"c": [1, 2]}, {"c": "1"}, md[2])),
        ("put", ("t1", "", ids[3], {"a": 3}, {"a": "3", "b": "2"}, md[3])),  # b emptied
        ("put", ("t2", "", ids[4], {"z": {"k": 1}}, {"z": "1"}, md[4])),
        ("put", ("t2", "", ids[5], {"z": {"k": 2}}, {"z": "2"}, md[5])),
        ("w", ("t1", "", ids[3], [("a", 10), ("b", 20)], "task-b", "~1")),
        ("w", ("t1", "", ids[3], [("a", 99)], "task-b", "~1")),  # same key: ignored
        ("w", ("t1", "", ids[3], [("a", 11), (ERROR, "boom")], "task-a", "~0")),
        ("w", ("t1", "", ids[3], [(ERROR, "boom2"), (INTERRUPT, {"q": 1})], "task-a", "~0")),
        ("w", ("t2", "", ids[5], [("z", 1)], "task-z", "")),
    ]
    return ops, ids


def _view(tuples: Sequence[CheckpointTuple]) -> list[tuple]:
    return [(t.config, t.checkpoint, t.metadata, t.parent_config, t.pending_writes) for t in tuples]


def test_matches_in_memory_saver(saver: RedisSaver) -> None:
    ops, ids = _script()
    memory = InMemorySaver()
    _apply(memory, ops)
    _apply(saver, ops)
    t1 = {"configurable": {"thread_id": "t1"}}
    t1_root = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
    calls: list[tuple[RunnableConfig | None, dict[str, Any]]] = [
        (None, {}),
        (t1, {}),
        (t1_root, {}),
        (t1, {"limit": 2}),
        (None, {"limit": 3}),
        (t1_root, {"before": {"configurable": {"checkpoint_id": ids[3]}}}),
        (None, {"filter": {"source": "loop"}}),
        (None, {"filter": {"score": 0, "source": "input"}}),
        (None, {"filter": {"source": "input"}, "limit": 2}),
        (t1, {"filter": {"missing": None}}),
        ({"configurable": {"thread_id": "t1", "checkpoint_ns": "", "checkpoint_id": ids[1]}}, {}),
    ]
    for config, kwargs in calls:
        expected = _view(list(memory.list(config, **kwargs)))
        assert _view(list(saver.list(config, **kwargs))) == expected, (config, kwargs)
    for config in (t1_root, {"configurable": {**t1_root["configurable"], "checkpoint_id": ids[0]}}):
        assert _view([saver.get_tuple(config)]) == _view([memory.get_tuple(config)])
    # the writes were stored with the special-channel and no-overwrite rules
    writes = saver.get_tuple(t1_root).pending_writes
    assert writes == [
        ("task-a", INTERRUPT, {"q": 1}),
        ("task-a", ERROR, "boom2"),
        ("task-a", "a", 11),
        ("task-b", "a", 10),
        ("task-b", "b", 20),
    ]
    assert writes == memory.get_tuple(t1_root).pending_writes


def test_rejects_decoding_client(redis_url: str) -> None:
    client = connect(redis_url)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisSaver(client)
    client.close()


def test_keys_quote_parts_and_share_the_thread_hash_tag() -> None:
    keys = CheckpointKeys("fw:cp")
    weird = "inc{1}:x"
    made = [
        keys.namespaces(weird),
        keys.index(weird, "a:b"),
        keys.checkpoint(weird, "a:b", "id"),
        keys.writes(weird, "", "id"),
        keys.blob(weird, "a", "b:c", "1"),
    ]
    assert {k[k.index("{") + 1 : k.index("}")] for k in made} == {"inc%7B1%7D%3Ax"}
    assert keys.blob(weird, "a:b", "c", "1") != keys.blob(weird, "a", "b:c", "1")
    assert keys.thread_of(keys.namespaces(weird)) == weird
    assert keys.thread_of(keys.index("t", "ns")) is None  # also matches the SCAN pattern
    assert unpack(pack("x", b"", b"\x00\xff")) == [b"x", b"", b"\x00\xff"]


# --- a real graph: interrupt, then resume from a new process ----------------------------------


class Ticket(TypedDict):
    request: str
    decision: str
    log: Annotated[list[str], operator.add]


def _approval_graph() -> StateGraph:
    def prepare(state: Ticket) -> dict:
        return {"log": ["prepared"]}

    def approve(state: Ticket) -> dict:
        decision = interrupt({"question": f"approve {state['request']}?"})
        return {"decision": decision, "log": [f"decided {decision}"]}

    def act(state: Ticket) -> dict:
        return {"log": ["acted"]}

    g = StateGraph(Ticket)
    g.add_node("prepare", prepare)
    g.add_node("approve", approve)
    g.add_node("act", act)
    g.add_edge(START, "prepare")
    g.add_edge("prepare", "approve")
    g.add_edge("approve", "act")
    g.add_edge("act", END)
    return g


def test_interrupt_then_resume_with_a_new_saver(redis_url: str, prefix: str) -> None:
    config: RunnableConfig = {"configurable": {"thread_id": f"incident-{uuid.uuid4().hex[:6]}"}}
    first = connect(redis_url, decode=False)
    graph = _approval_graph().compile(checkpointer=RedisSaver(first, prefix=prefix))
    out = graph.invoke({"request": "rollback v7", "decision": "", "log": []}, config)
    assert [i.value for i in out["__interrupt__"]] == [{"question": "approve rollback v7?"}]
    first.close()

    # a new process: new client, new saver, freshly compiled graph
    second = connect(redis_url, decode=False)
    graph = _approval_graph().compile(checkpointer=RedisSaver(second, prefix=prefix))
    paused = graph.get_state(config)
    assert paused.next == ("approve",)
    assert paused.tasks[0].interrupts[0].value == {"question": "approve rollback v7?"}

    out = graph.invoke(Command(resume="yes"), config)
    assert out["decision"] == "yes"
    assert out["log"] == ["prepared", "decided yes", "acted"]
    history = list(graph.get_state_history(config))
    assert [s.next for s in history] == [(), ("act",), ("approve",), ("prepare",), ("__start__",)]
    assert [s.metadata["step"] for s in history] == [3, 2, 1, 0, -1]
    assert history[0].values["log"] == ["prepared", "decided yes", "acted"]
    second.close()


async def test_async_subgraph_interrupt_resumes_with_a_new_saver(
    redis_url: str, prefix: str, rb: redis.Redis
) -> None:
    inner = _approval_graph().compile()  # no checkpointer: the outer graph's is used (§7)
    outer = StateGraph(Ticket)
    outer.add_node("ticket", inner)
    outer.add_edge(START, "ticket")
    outer.add_edge("ticket", END)
    config: RunnableConfig = {"configurable": {"thread_id": "async-incident"}}

    first = connect_async(redis_url)
    graph = outer.compile(checkpointer=AsyncRedisSaver(first, prefix=prefix, ttl_seconds=600))
    out = await graph.ainvoke({"request": "promote v8", "decision": "", "log": []}, config)
    assert out["__interrupt__"][0].value == {"question": "approve promote v8?"}
    await first.aclose()
    # the subgraph checkpointed under its own namespace ("ticket:<task id>", quoted in keys)
    assert any(b":idx:ticket%3A" in k for k in rb.scan_iter(match=f"{prefix}:*"))

    second = connect_async(redis_url)
    graph = outer.compile(checkpointer=AsyncRedisSaver(second, prefix=prefix, ttl_seconds=600))
    out = await graph.ainvoke(Command(resume="no"), config)
    assert out["decision"] == "no"
    assert out["log"] == ["prepared", "decided no", "acted"]
    history = [s async for s in graph.aget_state_history(config)]
    assert history[0].next == () and history[-1].next == ("__start__",)
    await second.aclose()


# --- pruning and TTL --------------------------------------------------------------------------


class Counter(TypedDict):
    n: int
    seen: Annotated[list[int], operator.add]


def _counter_graph() -> StateGraph:
    g = StateGraph(Counter)
    g.add_node("inc", lambda s: {"n": s["n"] + 1, "seen": [s["n"] + 1]})
    g.add_edge(START, "inc")
    g.add_edge("inc", END)
    return g


def _thread_keys(rb: redis.Redis, prefix: str, thread_id: str) -> set[bytes]:
    return set(rb.scan_iter(match=f"{prefix}:{{{thread_id}}}:*"))


def test_prune_keeps_newest_n_and_drops_the_rest(saver: RedisSaver, rb, prefix: str) -> None:
    graph = _counter_graph().compile(checkpointer=saver)
    config: RunnableConfig = {"configurable": {"thread_id": "busy"}}
    other: RunnableConfig = {"configurable": {"thread_id": "bystander"}}
    graph.invoke({"n": 0, "seen": []}, other)
    for _ in range(4):  # three checkpoints per invoke: input, loop after __start__, loop after inc
        graph.invoke({"n": graph.get_state(config).values.get("n", 0), "seen": []}, config)
    before = [t.config["configurable"]["checkpoint_id"] for t in saver.list(config)]
    assert len(before) == 12
    bystander = [t.checkpoint["id"] for t in saver.list(other)]

    saver.prune(["busy"], keep_last=2)

    after = list(saver.list(config))
    assert [t.config["configurable"]["checkpoint_id"] for t in after] == before[:2]
    assert after[0].checkpoint["channel_values"]["n"] == 4
    assert [t.checkpoint["id"] for t in saver.list(other)] == bystander
    # no orphans: only the index keys, the 2 kept checkpoints and the blobs they read remain
    kept_blobs = {
        saver.keys.blob("busy", "", ch, str(v)).encode()
        for t in after
        for ch, v in t.checkpoint["channel_versions"].items()
    }
    records = {saver.keys.checkpoint("busy", "", cid).encode() for cid in before[:2]}
    writes = {saver.keys.writes("busy", "", cid).encode() for cid in before[:2]}
    index = {saver.keys.namespaces("busy").encode(), saver.keys.index("busy", "").encode()}
    remaining = _thread_keys(rb, prefix, "busy")
    assert records | index <= remaining
    assert remaining <= records | writes | index | kept_blobs
    assert {k for k in remaining if b":b:" in k} == kept_blobs

    # the pruned thread keeps working from its newest checkpoint
    graph.invoke({"n": graph.get_state(config).values["n"], "seen": []}, config)
    assert graph.get_state(config).values["n"] == 5

    saver.prune(["busy"], strategy="delete")
    assert list(saver.list(config)) == []
    assert _thread_keys(rb, prefix, "busy") == set()


def test_ttl_is_set_on_every_key_and_refreshed_on_write(rb, prefix: str) -> None:
    saver = RedisSaver(rb, prefix=prefix, ttl_seconds=120)
    graph = _counter_graph().compile(checkpointer=saver)
    config: RunnableConfig = {"configurable": {"thread_id": "ttl"}}
    graph.invoke({"n": 0, "seen": []}, config)
    keys = _thread_keys(rb, prefix, "ttl")
    assert len(keys) > 5
    assert all(0 < rb.ttl(k) <= 120 for k in keys), {k: rb.ttl(k) for k in keys}

    # a later write pushes the thread's shared keys (and the blobs still read) back to the full TTL
    shared = [saver.keys.namespaces("ttl"), saver.keys.index("ttl", "")]
    for key in shared:
        rb.expire(key, 5)
    graph.invoke({"n": 1, "seen": []}, config)
    assert all(rb.ttl(k) > 100 for k in shared)
    latest = saver.get_tuple(config)
    assert latest is not None and latest.checkpoint["channel_values"]["n"] == 2
    for ch, v in latest.checkpoint["channel_versions"].items():
        assert rb.ttl(saver.keys.blob("ttl", "", ch, str(v))) > 100


class RacingSaver(RedisSaver):
    """Lets another writer fork the thread from its oldest checkpoint while a prune is planning."""

    raced = False

    def _index(self, thread_id: str, namespaces: Sequence[str]):
        index = super()._index(thread_id, namespaces)
        if not self.raced:
            self.raced = True
            oldest = list(self.list({"configurable": {"thread_id": thread_id}}))[-1]
            fork = {**oldest.checkpoint, "id": str(uuid6(clock_seq=99))}
            self.put(oldest.config, fork, {"source": "fork", "step": 9, "parents": {}}, {})
        return index


def test_prune_retries_when_a_writer_races_it(rb, prefix: str) -> None:
    saver = RacingSaver(rb, prefix=prefix)
    graph = _counter_graph().compile(checkpointer=saver)
    config: RunnableConfig = {"configurable": {"thread_id": "raced"}}
    graph.invoke({"n": 7, "seen": []}, config)
    *newer, oldest = saver.list(config)
    # the fork will read the oldest checkpoint's __start__ blob, which no newer checkpoint reads,
    # so a plan made before the fork deletes it
    start_version = oldest.checkpoint["channel_versions"]["__start__"]
    assert all(t.checkpoint["channel_versions"].get("__start__") != start_version for t in newer)

    saver.prune(["raced"], keep_last=1)

    # WATCH aborted that plan; the retry kept the fork and the blob it reads
    assert saver.raced
    (kept,) = saver.list(config)
    assert kept.metadata["source"] == "fork"
    assert kept.checkpoint["channel_values"] == {"__start__": {"n": 7, "seen": []}}
    assert kept.checkpoint["channel_values"] == oldest.checkpoint["channel_values"]
