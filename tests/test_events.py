"""The event bus: document.updated after commit, participants, isolation, and Redis across processes."""

from __future__ import annotations

import asyncio
import time

import pytest

from collab import Event, MemoryBus, RedisBus
from collab.client import HubClient
from collab.store import Store
from collab.testing import running_hub  # a hub in the test's own event loop, so tests can subscribe to its bus


async def until(predicate, what: str, timeout: float = 15) -> None:
    """Let the loop run until ``predicate()`` holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.01)


async def test_document_updated_is_published_after_commit(tmp_path):
    async with running_hub(tmp_path) as (hub, ws_url):
        doc_id = (await asyncio.to_thread(hub.store.create_document, "ev", "me"))["id"]
        events: list[Event] = []
        durable: list[bool] = []

        async def on_update(event: Event) -> None:
            store = Store(hub.store.url)  # look from outside: is it really in the database?
            durable.append(await asyncio.to_thread(store.last_seq, event.doc_id) >= event.data["seq"])
            store.close()
            events.append(event)

        hub.bus.subscribe("document.updated", on_update)
        joined: list[Event] = []

        async def on_any(event: Event) -> None:
            if event.topic.startswith("participant."):
                joined.append(event)

        hub.bus.subscribe("*", on_any)
        async with HubClient(ws_url, doc_id) as c:
            await c.synced()
            c.text.insert(0, "hello world")
            await c.flush()
            await until(lambda: events, "the first document.updated")
            del c.text[0:6]
            await until(lambda: len(events) >= 2, "the second document.updated")
        await until(lambda: len(joined) >= 2, "participant.joined and participant.left")
        assert [e.data["inserted"] for e in events] == ["hello world", ""]
        assert [e.data["deleted"] for e in events] == [0, 6]
        assert [e.data["seq"] for e in events] == [1, 2]
        assert events[0].data["author_id"] == "guest" and events[0].data["kind"] == "human"
        assert all(durable)
        assert [e.topic for e in joined] == ["participant.joined", "participant.left"]


async def test_room_evicted_after_grace_and_snapshotted(tmp_path):
    async with running_hub(tmp_path) as (hub, ws_url):
        doc_id = (await asyncio.to_thread(hub.store.create_document, "ev", "me"))["id"]
        async with HubClient(ws_url, doc_id) as c:
            await c.synced()
            c.text.insert(0, "keep me")
            await c.flush()
            await asyncio.sleep(0.1)
            assert doc_id in hub.rooms
        await until(lambda: doc_id not in hub.rooms, "the empty room's eviction after its 0.2 s grace")
        loaded = await asyncio.to_thread(hub.store.load, doc_id)
        assert loaded.snapshot_seq == loaded.seq == 1  # eviction wrote a snapshot
        async with HubClient(ws_url, doc_id) as c:  # and it loads back
            await c.synced()
            assert str(c.text) == "keep me"


async def test_failing_subscriber_does_not_affect_others():
    bus = MemoryBus()
    got = []

    async def bad(event):
        raise RuntimeError("boom")

    async def good(event):
        got.append(event.doc_id)

    bus.subscribe("document.updated", bad)
    bus.subscribe("document.updated", good)
    bus.publish(Event("document.updated", "d1"))
    await bus.stop()
    assert got == ["d1"]


async def test_redis_bus_delivers_across_instances(redis_url):
    a, b = RedisBus(redis_url), RedisBus(redis_url)
    await a.start()
    await b.start()
    got: list[Event] = []
    done = asyncio.Event()

    async def on_event(event):
        got.append(event)
        done.set()

    b.subscribe("participant.joined", on_event)
    try:
        a.publish(Event("participant.joined", "doc-x", {"name": "ada"}))
        await asyncio.wait_for(done.wait(), 15)
        assert (got[0].doc_id, got[0].data) == ("doc-x", {"name": "ada"})
    finally:
        await a.stop()
        await b.stop()


def test_bad_event_bus_setting():
    from collab import ConfigError, create_bus

    with pytest.raises(ConfigError):
        create_bus("kafka://nope")
