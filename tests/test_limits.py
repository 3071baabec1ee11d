"""Structural limits: values nested deep enough to crash pycrdt, huge clocks, NaN presence — refused
before pycrdt sees them (only the sender's socket closes), and a log that already holds such an
entry still loads with the entry quarantined."""

from __future__ import annotations

import asyncio
import json

import pycrdt
import pytest

from collab.client import HubClient
from collab.exceptions import LimitExceeded, ProtocolError
from collab.limits import UpdateLimits, check_json, check_update
from collab.lib0 import Writer
from collab.protocol import awareness_message, sync_update
from collab.store import LogEntry, Store
from collab.testing import HubProcess

NO_WORKERS = {"TINYMORPH_GRAPH_ENABLED": "false", "TINYMORPH_WORKER_EMBEDDED": "false"}


def nested_value_update(depth: int, client: int = 7, clock: int = 0, key: str = "k") -> bytes:
    """A one-item update setting map ``m``'s ``key`` to ``[[[...]]]`` nested ``depth`` deep, written
    byte by byte (pycrdt itself cannot encode what it cannot decode)."""
    w = Writer().var_uint(1).var_uint(1).var_uint(client).var_uint(clock)
    w.u8(8 | 32)  # ContentAny, parent named, with a parent sub (map key)
    w.var_uint(1).var_string("m").var_string(key)
    w.var_uint(1)  # one value
    body = b"\x75\x01" * depth + b"\x7f"  # array of one element, ..., undefined
    return w.to_bytes() + body + b"\x00"  # empty delete set


def test_values_deeper_than_the_limit_are_refused_shallower_pass():
    limits = UpdateLimits(max_depth=64)
    check_update(nested_value_update(64), limits)
    with pytest.raises(LimitExceeded, match="nested deeper than 64"):
        check_update(nested_value_update(65), limits)
    with pytest.raises(LimitExceeded):
        check_update(nested_value_update(60_000), limits)  # what kills pycrdt: refused, no recursion


def test_real_updates_pass_and_truncated_ones_do_not():
    doc = pycrdt.Doc()
    updates: list[bytes] = []
    doc.observe(lambda e: updates.append(e.update))
    text = doc.get("content", type=pycrdt.Text)
    text.insert(0, "héllo wörld 🐈")
    text.format(0, 5, {"bold": True})
    doc.get("m", type=pycrdt.Map)["v"] = {"a": [1, 2.5, None, True, "x", {"b": [[]]}]}
    text.insert(3, "embedded")
    del text[0:2]
    doc.get("a", type=pycrdt.Array).append(pycrdt.Map({"nested": "map"}))
    for update in [*updates, doc.get_update()]:
        check_update(update, UpdateLimits())
    with pytest.raises(ProtocolError):
        check_update(updates[0][:-3], UpdateLimits())


def test_counts_clocks_and_string_sizes_are_bounded():
    many = Writer().var_uint(3)
    for client in range(3):
        many.var_uint(1).var_uint(client).var_uint(0).u8(4 | 32).var_uint(1).var_string("m").var_string("k")
        many.var_string("x")
    update = many.to_bytes() + b"\x00"
    check_update(update, UpdateLimits())
    with pytest.raises(LimitExceeded, match="clients"):
        check_update(update, UpdateLimits(max_clients=2))
    with pytest.raises(LimitExceeded, match="structs"):
        check_update(update, UpdateLimits(max_structs=2))
    with pytest.raises(LimitExceeded, match="bytes"):
        check_update(nested_value_update(1, key="k" * 100), UpdateLimits(max_string_bytes=50))
    # yrs keeps clocks in 32 bits (and wraps past them, while yjs counts on): refused
    check_update(nested_value_update(1, clock=2**32 - 2), UpdateLimits())
    with pytest.raises(LimitExceeded, match="2\\*\\*32"):
        check_update(nested_value_update(1, clock=2**32 - 1), UpdateLimits())
    deletes = Writer().var_uint(0).var_uint(1).var_uint(5).var_uint(1).var_uint(2**32 - 2).var_uint(5).to_bytes()
    with pytest.raises(LimitExceeded, match="2\\*\\*32"):
        check_update(deletes, UpdateLimits())


@pytest.mark.parametrize("text, ok", [
    ('{"a": [1, {"b": [2]}]}', True),
    ('"[[[[[[[[[["', True),                    # brackets inside a string do not nest
    ('["\\\\", [[["x"]]]]', True),             # an escaped backslash ends where it should
    ('["\\"[[[[[[", 1]', True),               # so does an escaped quote
    ("[" * 9 + "]" * 9, False),
    ('{"k": "\\\\"}' + "[" * 9, False),
])
def test_json_depth_reads_strings_and_escapes(text, ok):
    if ok:
        check_json(text, 8)
    else:
        with pytest.raises(LimitExceeded):
            check_json(text, 8)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    proc = HubProcess(tmp_path_factory.mktemp("limits") / "hub", env=NO_WORKERS).start()
    yield proc
    assert proc.stop() == 0
    proc.assert_clean()


def test_a_hostile_update_closes_only_its_socket(hub):
    """60,000-deep nesting segfaults pycrdt's decoder: the hub must refuse it unread (4413)."""
    doc_id, owner = hub.create_doc("hostile")
    viewer = hub.token(doc_id, "viewer", "Mallory")
    editor = hub.token(doc_id, "editor", "Eve")

    async def go() -> None:
        async with HubClient(hub.ws_url, doc_id, token=owner) as alice:
            await alice.synced()
            alice.text.insert(0, "Alice's paragraph.")
            await alice.flush()
            for token in (viewer, editor):
                async with HubClient(hub.ws_url, doc_id, token=token) as bad:
                    await bad.synced()
                    await bad.send_raw(sync_update(nested_value_update(60_000)))
                    await bad.wait_closed(20)
                    assert bad.close_code == 4413
            alice.text.insert(len(alice.text), " Still here.")
            await alice.flush()
            async with HubClient(hub.ws_url, doc_id) as late:
                await late.synced()
                await late.wait_for(lambda: str(late.text) == "Alice's paragraph. Still here.", 20)
                assert "m" not in late.doc.keys() or not late.doc.get("m", type=pycrdt.Map).to_py()

    asyncio.run(go())
    status, health = hub.request("GET", "/healthz")
    assert status == 200 and health["status"] == "running"


def awareness_update(client_id: int, state_json: str) -> bytes:
    return Writer().var_uint(1).var_uint(client_id).var_uint(1).var_string(state_json).to_bytes()


@pytest.mark.parametrize("state, code", [
    ('{"user": {"name": "x", "cursor": NaN}}', 4400),     # every browser peer's JSON.parse fails
    ('{"user": ' + "[" * 100 + "]" * 100 + "}", 4413),
])
def test_presence_that_browsers_cannot_parse_or_too_deep_is_refused(hub, state, code):
    doc_id, owner = hub.create_doc("presence")

    async def go() -> None:
        async with HubClient(hub.ws_url, doc_id, token=owner) as bad:
            await bad.synced()
            await bad.send_raw(awareness_message(awareness_update(424242, state)))
            await bad.wait_closed(20)
            assert bad.close_code == code

    asyncio.run(go())


def test_a_logged_entry_over_the_limits_is_quarantined_and_the_document_loads(tmp_path):
    """Written before the limits existed: loading must skip it (and say so), not apply it."""
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    store.migrate()
    doc_id = store.create_document("old", "alice")["id"]
    good = pycrdt.Doc()
    updates: list[bytes] = []
    good.observe(lambda e: updates.append(e.update))
    good.get("content", type=pycrdt.Text).insert(0, "kept")
    entries = [LogEntry(doc_id, 1, updates[0], "alice", "Alice", "human"),
               LogEntry(doc_id, 2, nested_value_update(30_000), "mallory", "Mallory", "human")]
    store.append(entries)
    store.close()

    hub = HubProcess(tmp_path / "hub", db=f"sqlite:///{tmp_path / 'old.db'}", env=NO_WORKERS).start()
    try:
        async def read() -> str:
            async with HubClient(hub.ws_url, doc_id) as c:
                await c.synced()
                return str(c.text)

        assert asyncio.run(read()) == "kept"
        health = hub.request("GET", "/healthz")[1]
        assert [(q["doc_id"], q["seq"]) for q in health["quarantined"]] == [(doc_id, 2)]
        status, history = hub.request("GET", f"/api/docs/{doc_id}/history")
        assert status == 200, history
    finally:
        assert hub.stop() == 0
        hub.assert_clean()
    assert "quarantined log entry 2" in hub.log()
    assert json.dumps(health)  # the report is plain JSON


async def test_one_failing_entry_or_peer_costs_nobody_else(tmp_path, monkeypatch):
    """The summariser raising on one entry, and one peer's send raising: every other entry is
    applied, relayed and snapshotted, every other peer served (on main a RecursionError in the
    summariser abandoned the rest of the commit group)."""
    import collab.rooms as rooms_module
    from collab.testing import running_hub

    real_summarize = rooms_module.summarize

    def summarize(update: bytes):
        if b"POISON" in update:
            raise RecursionError("maximum recursion depth exceeded")
        return real_summarize(update)

    monkeypatch.setattr(rooms_module, "summarize", summarize)
    # The broken peer's failure is logged with its traceback, which fails the in-loop hub on exit:
    # expected here, and checked.
    with pytest.raises(AssertionError, match="this peer's socket is broken"):
        await _isolation_scenario(tmp_path, running_hub, monkeypatch)


async def _isolation_scenario(tmp_path, running_hub, monkeypatch) -> None:
    async with running_hub(tmp_path, commit_delay_ms=200, commit_group_size=50) as (hub, ws_url):
        doc_id = (await asyncio.to_thread(hub.store.create_document, "iso", "me"))["id"]
        async with HubClient(ws_url, doc_id) as mallory, HubClient(ws_url, doc_id) as victim, \
                HubClient(ws_url, doc_id) as reader, HubClient(ws_url, doc_id) as broken:
            for c in (mallory, victim, reader, broken):
                await c.synced()
            room = hub.rooms.get(doc_id)
            broken.set_presence({"user": {"name": "broken"}})
            for _ in range(200):
                bad = [p for p in room.peers if broken.doc.client_id in p.client_ids]
                if bad:
                    break
                await asyncio.sleep(0.02)
            bad_peer, = bad

            def explode(*args, **kwargs):
                raise RuntimeError("this peer's socket is broken")

            monkeypatch.setattr(bad_peer, "send", explode)
            mallory.text.insert(0, "POISON ")
            victim.text.insert(0, "A victim's paragraph. ")
            await mallory.flush()
            await victim.flush()
            await reader.wait_for(lambda: "POISON" in str(reader.text) and "victim" in str(reader.text), 20)
            await victim.wait_for(lambda: "POISON" in str(victim.text), 20)
            await mallory.wait_for(lambda: "victim" in str(mallory.text), 20)
            await broken.wait_closed(20)
            assert broken.close_code == 1011
            text = str(reader.text)
        for _ in range(200):  # evicted after the grace period: snapshot from the room's doc
            if hub.rooms.get(doc_id) is None:
                break
            await asyncio.sleep(0.05)
        assert hub.rooms.get(doc_id) is None
        loaded = await asyncio.to_thread(hub.store.load, doc_id)
        assert loaded.snapshot_seq == loaded.seq  # what is checked below is the snapshot
        doc = pycrdt.Doc()
        doc.apply_update(loaded.state)
        assert str(doc.get("content", type=pycrdt.Text)) == text
