"""The hub over real sockets: sync, presence, durability across restarts, access, bad input.

Tests that only work on their own documents share one hub per module (``shared_hub``); those
that restart it or need settings of their own start their own.
"""

from __future__ import annotations

import asyncio
import time

import pycrdt
import pytest

from collab.client import HubClient
from collab.protocol import awareness_message, sync_update
from collab.testing import HUB_ONLY, HubProcess


@pytest.fixture
def hub(shared_hub):
    """Here ``hub`` is the module's shared hub: every test below that takes it uses its own
    documents; the tests that restart or configure a hub start their own."""
    return shared_hub


async def _eventually(predicate, what: str, timeout: float = 15):
    """Poll ``predicate`` (a blocking call is fine) until it is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (result := await asyncio.to_thread(predicate)):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.05)
    return result


async def _connected(hub, doc_id, **kw) -> HubClient:
    client = HubClient(hub.ws_url, doc_id, **kw)
    await client.connect()
    await client.synced()
    return client


async def test_two_clients_converge_and_see_presence(hub):
    doc_id, _ = hub.create_doc("converge")
    a = await _connected(hub, doc_id, presence={"user": {"name": "ada"}})
    b = await _connected(hub, doc_id, presence={"user": {"name": "bob"}})
    a.text.insert(0, "hello ")
    b.text.insert(0, "world ")
    await a.wait_for(lambda: len(str(a.text)) == 12)
    await b.wait_for(lambda: str(b.text) == str(a.text))
    # a newcomer gets every current presence at once
    c = await _connected(hub, doc_id, presence={"user": {"name": "cy"}})
    await c.wait_for(lambda: {s["user"]["name"] for s in c.peers.values()} == {"ada", "bob"}, timeout=5)
    assert str(c.text) == str(a.text)
    # a departed client's presence is removed for everybody
    await b.close()
    await a.wait_for(lambda: {s["user"]["name"] for s in a.peers.values()} == {"cy"})
    await c.wait_for(lambda: {s["user"]["name"] for s in c.peers.values()} == {"ada"})
    await a.close()
    await c.close()


async def test_presence_never_overtakes_the_senders_own_updates(hub):
    """Updates wait for their commit (grouped while a peer types fast); presence does not. A
    cursor sent after some typing must still reach the others after that typing, and a leaving
    writer's presence must vanish only after its last words arrived."""
    doc_id, _ = hub.create_doc("order")
    a = await _connected(hub, doc_id, presence={"user": {"name": "ada"}, "at": 0})
    b = await _connected(hub, doc_id)
    await b.wait_for(lambda: bool(b.peers))
    seen: list[tuple[object, str]] = []  # (ada's presence, b's text) at each presence change b gets
    b.awareness.observe(lambda topic, _c: topic == "change" and seen.append(
        (next(iter(b.peers.values()), None), str(b.text))))
    for _ in range(3):  # keystrokes well inside the commit delay, then the cursor moves
        for ch in "word ":
            a.text.insert(len(a.text), ch)
            await a.flush()
        a.set_presence({"user": {"name": "ada"}, "at": len(a.text)})
        await a.flush()
    final = str(a.text)
    await a.close()
    await b.wait_for(lambda: not b.peers and str(b.text) == final)
    moves = [(p["at"], text) for p, text in seen if p is not None]
    assert [at for at, _ in moves] == [5, 10, 15], seen
    assert all(len(text) >= at for at, text in moves), seen  # each cursor arrived after its text
    assert seen[-1] == (None, final), seen  # gone only after the last words
    await b.close()


async def test_restart_restores_document_byte_for_byte(tmp_path):
    hub = HubProcess(tmp_path / "hub", env=HUB_ONLY)
    try:
        hub.start()
        doc_id, _ = hub.create_doc("restart")
        a = await _connected(hub, doc_id)
        for i in range(50):
            a.text.insert(len(a.text), f"line {i}\n")
            if i % 7 == 0:
                del a.text[0:3]
        await a.flush()
        expected = a.doc.get_update()
        await asyncio.sleep(0.3)
        await a.close()
        assert hub.stop() == 0, hub.log()
        hub.start()
        b = await _connected(hub, doc_id)
        assert b.doc.get_update() == expected
        assert str(b.text) == str(a.text)
        await b.close()
    finally:
        hub.stop()
    hub.assert_clean()


async def test_simultaneous_first_joins_share_one_room(hub):
    doc_id, _ = hub.create_doc("race")
    clients = await asyncio.gather(*[_connected(hub, doc_id) for _ in range(8)])
    for i, c in enumerate(clients):
        c.text.insert(0, str(i))
    for c in clients:
        await c.wait_for(lambda c=c: len(str(c.text)) == 8)
    assert len({str(c.text) for c in clients}) == 1
    for c in clients:
        await c.close()


async def test_viewer_gets_sync_and_presence_but_cannot_write(hub):
    doc_id, _ = hub.create_doc("viewer")
    editor = await _connected(hub, doc_id, token=hub.token(doc_id, "editor", "Ed"), presence={"name": "ed"})
    editor.text.insert(0, "by the editor")
    viewer = await _connected(hub, doc_id, token=hub.token(doc_id, "viewer", "Vi"), presence={"name": "vi"})
    await viewer.wait_for(lambda: str(viewer.text) == "by the editor")
    await viewer.wait_for(lambda: any(s.get("name") == "ed" for s in viewer.peers.values()))
    viewer.text.insert(0, "VANDAL ")
    await viewer.wait_for(lambda: viewer.denied, timeout=5)
    assert "viewer" in viewer.denied[0]
    editor.text.insert(len(editor.text), "!")
    await viewer.wait_for(lambda: str(viewer.text).endswith("!"))
    await asyncio.sleep(0.2)
    assert str(editor.text) == "by the editor!"
    status, body = hub.request("GET", f"/api/docs/{doc_id}")
    assert status == 200
    assert body["text"] == "by the editor!"
    await editor.close()
    await viewer.close()


async def test_relays_updates_only_after_they_are_durable(hub):
    """What a second peer has received is in the database (read it straight from the store)."""
    from collab.store import Store

    doc_id, _ = hub.create_doc("durable")
    a = await _connected(hub, doc_id)
    b = await _connected(hub, doc_id)
    for i in range(200):
        a.text.insert(len(a.text), f"{i},")
    await b.wait_for(lambda: str(b.text).endswith("199,"))
    seen = str(b.text)
    store = Store(f"sqlite:///{hub.data_dir / 'tinymorph.db'}")
    loaded = store.load(doc_id)
    doc = pycrdt.Doc()
    doc.apply_update(loaded.state)
    assert str(doc.get("content", type=pycrdt.Text)) == seen
    rows = list(store.updates(doc_id))
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert {r.author_kind for r in rows} == {"human"}
    assert {r.client_id for r in rows} == {a.doc.client_id}, ({r.client_id for r in rows}, a.doc.client_id)
    store.close()
    await a.close()
    await b.close()


async def test_a_database_far_behind_pauses_reading_and_loses_nothing(tmp_path):
    """Backpressure on the direct path: while another process holds SQLite's write lock the
    journal fills to ``commit_max_pending``, the socket stops being read (the queue never grows
    much past the limit though the client sends six times as much), and once the lock goes
    every update commits in order and reaches the other peer."""
    import re
    import sqlite3

    from collab.store import Store

    limit, edits = 50, 300
    hub = HubProcess(tmp_path / "hub", env={**HUB_ONLY, "TINYMORPH_COMMIT_MAX_PENDING": str(limit)})
    try:
        hub.start()
        doc_id, _ = hub.create_doc("backpressure")
        a = await _connected(hub, doc_id)
        b = await _connected(hub, doc_id)
        blocker = sqlite3.connect(hub.data_dir / "tinymorph.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the write lock: every commit of the hub now waits
        for i in range(edits):
            a.text.insert(len(a.text), f"{i},")
        await a.flush()
        deadline = time.monotonic() + 15
        while "sockets pause reading" not in hub.log() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert "sockets pause reading" in hub.log(), hub.log()[-2000:]
        await asyncio.sleep(0.5)
        assert not str(b.text)  # nothing is relayed before it is committed
        blocker.execute("ROLLBACK")
        blocker.close()
        await b.wait_for(lambda: str(b.text) == str(a.text), timeout=30)
        peak = re.search(r"at most (\d+) updates waited", hub.log())
        assert peak, hub.log()[-2000:]
        assert limit <= int(peak.group(1)) <= limit + 5
        store = Store(f"sqlite:///{hub.data_dir / 'tinymorph.db'}")
        try:
            assert [r.seq for r in store.updates(doc_id)] == list(range(1, edits + 1))
        finally:
            store.close()
        await a.close()
        await b.close()
    finally:
        hub.stop()
    hub.assert_clean()


async def test_revoking_a_token_closes_its_socket_at_once_with_4410(tmp_path):
    """The DELETE itself closes the token's sockets (the token.revoked event), not the periodic
    token check, which this hub runs only once an hour: the generous wait below could not be met
    without the event."""
    hub = HubProcess(tmp_path / "hub", env={**HUB_ONLY, "TINYMORPH_TOKEN_CHECK_S": "3600"})
    try:
        hub.start()
        doc_id, owner = hub.create_doc("revoke")
        status, body = hub.request("POST", f"/api/docs/{doc_id}/tokens", {"role": "editor", "name": "temp"}, owner)
        assert status == 201
        c = await _connected(hub, doc_id, token=body["token"])
        status, _body = await asyncio.to_thread(hub.request, "DELETE", f"/api/docs/{doc_id}/tokens/{body['token_id']}",
                                            token=owner)
        assert status == 204
        await c.wait_closed(timeout=30)
        assert c.close_code == 4410
        # and it cannot come back
        again = HubClient(hub.ws_url, doc_id, token=body["token"])
        await again.connect()
        await again.wait_closed()
        assert again.close_code == 4410
    finally:
        hub.stop()
    hub.assert_clean()


async def test_send_to_departed_client_is_harmless(hub):
    doc_id, _ = hub.create_doc("departed")
    a = await _connected(hub, doc_id)
    b = await _connected(hub, doc_id)
    # b vanishes without a close handshake while a keeps writing
    b._ws.transport.abort()
    for _ in range(100):
        a.text.insert(len(a.text), "x")
    c = await _connected(hub, doc_id)
    await c.wait_for(lambda: len(str(c.text)) == 100)
    a.text.insert(0, "still alive ")
    await c.wait_for(lambda: str(c.text).startswith("still alive"))
    await a.close()
    await c.close()


async def test_stalled_reader_delays_nobody_and_gets_a_merged_backlog(hub):
    """A client that stops reading fills the kernel's buffers until the hub's sends to it
    suspend; the others keep getting every update at once, and the stalled one, when it reads
    again, gets what piled up merged into a few messages."""
    doc_id, _ = hub.create_doc("stalled")
    writer = await _connected(hub, doc_id)
    fast = await _connected(hub, doc_id)
    stalled = await _connected(hub, doc_id)
    stalled._ws.transport.pause_reading()
    n, line = 300, "x" * 30_000 + "\n"  # 9 MB: more than loopback's socket buffers hold
    for i in range(n):
        writer.text.insert(len(writer.text), line)
        if i % 20 == 19:
            await fast.wait_for(lambda: len(fast.text) == len(writer.text), timeout=20)
    await fast.wait_for(lambda: len(fast.text) == n * len(line), timeout=20)
    stalled_at = len(stalled.text)
    assert stalled_at < len(fast.text) // 2, stalled_at  # it really was stalled
    stalled._ws.transport.resume_reading()
    await stalled.wait_for(lambda: str(stalled.text) == str(writer.text), timeout=30)
    assert stalled.updates_received < fast.updates_received  # the backlog came merged
    writer.text.insert(0, "after ")
    await stalled.wait_for(lambda: str(stalled.text).startswith("after "))
    for c in (writer, fast, stalled):
        await c.close()


async def _expect_close(hub, doc_id, frame, code, **kw):
    bystander = await _connected(hub, doc_id)
    bad = await _connected(hub, doc_id, **kw)
    before = str(bystander.text)
    await bad.send_raw(frame)
    await bad.wait_closed()
    assert bad.close_code == code, (bad.close_code, bad.close_reason)
    assert bad.close_reason
    # nothing was applied, and the room carries on for the others
    bystander.text.insert(0, "ok ")
    other = await _connected(hub, doc_id)
    await other.wait_for(lambda: str(other.text) == "ok " + before)
    await bystander.close()
    await other.close()
    return bad.close_reason


@pytest.mark.parametrize(
    "frame, code",
    [
        (b"\x00\x02\x09abc", 4400),  # truncated update
        (b"\x07", 4400),  # unknown message type
        (b"\x00\x05\x00", 4400),  # unknown sync type
        ("a text frame", 4400),
        (sync_update(b"\x05\xff\xff\xff\xff"), 4422),  # framed well, update garbage
        (awareness_message(b"\x01\x01\x01\x03{x}"), 4400),  # awareness state not JSON
    ],
    ids=["truncated", "unknown-type", "unknown-sync-type", "text-frame", "bad-update", "bad-awareness"],
)
async def test_bad_frames_close_only_that_socket(hub, frame, code):
    doc_id, _ = hub.create_doc("bad")
    logged = len(hub.log())  # the hub is shared: look only at what this test made it log
    await _expect_close(hub, doc_id, frame, code)
    assert "closing" in hub.log()[logged:]


async def test_oversized_message_is_refused(tmp_path):
    hub = HubProcess(tmp_path / "hub", env={**HUB_ONLY, "TINYMORPH_MAX_MESSAGE_BYTES": "4096"})
    try:
        hub.start()
        doc_id, _ = hub.create_doc("big")
        big = pycrdt.Doc()
        big.get("content", type=pycrdt.Text).insert(0, "x" * 10_000)
        reason = await _expect_close(hub, doc_id, sync_update(big.get_update()), 1009)
        assert "4096" in reason
    finally:
        hub.stop()
    hub.assert_clean()


async def test_unknown_document_and_bad_tokens(shared_hub_tokens):
    hub = shared_hub_tokens
    doc_id, owner = hub.create_doc("tok", token=hub.user_token)
    cases = {
        "unknown-doc": ("nope", owner, 4403),  # token is for another document
        "no-token": (doc_id, None, 4401),
        "garbage": (doc_id, "not.a.token", 4401),
        "forged": (doc_id, owner[:-4] + ("AAAA" if not owner.endswith("AAAA") else "BBBB"), 4401),
    }
    for name, (target, token, code) in cases.items():
        c = HubClient(hub.ws_url, target, token=token)
        await c.connect()
        await c.wait_closed()
        assert c.close_code == code, (name, c.close_code, c.close_reason)
    # in tokens mode an unknown id with a valid token for it is impossible; in open mode: 4404
    # and the good token still writes, after all those refusals
    good = await _connected(hub, doc_id, token=owner)
    good.text.insert(0, "fine")
    await good.flush()
    await _eventually(lambda: hub.request("GET", f"/api/docs/{doc_id}", token=owner)[1]["text"] == "fine",
                      "the good token's edit in the document")
    await good.close()


async def test_unknown_document_open_mode(hub):
    c = HubClient(hub.ws_url, "does-not-exist")
    await c.connect()
    await c.wait_closed()
    assert (c.close_code, c.close_reason) == (4404, "unknown document 'does-not-exist'")


def test_rest_api_tokens_mode(hub_tokens):
    hub = hub_tokens  # its own hub: GET /api/docs must list only this test's document
    assert hub.request("POST", "/api/docs", {"title": "x"})[0] == 401
    status, body = hub.request("POST", "/api/docs", {"title": "Plan"}, hub.user_token)
    assert status == 201 and body["title"] == "Plan"
    doc_id, owner = body["id"], body["owner_token"]
    status, body = hub.request("GET", "/api/docs", token=hub.user_token)
    assert [d["id"] for d in body["documents"]] == [doc_id]
    viewer = hub.token(doc_id, "viewer", "Val", owner)
    assert hub.request("POST", f"/api/docs/{doc_id}/tokens", {"role": "editor", "name": "x"}, viewer)[0] == 403
    assert hub.request("PATCH", f"/api/docs/{doc_id}", {"title": "New"}, viewer)[0] == 403
    assert hub.request("PATCH", f"/api/docs/{doc_id}", {"title": "New"}, owner)[0] == 200
    status, body = hub.request("GET", f"/api/docs/{doc_id}", token=viewer)
    assert status == 200 and body["title"] == "New" and body["role"] == "viewer"
    assert hub.request("POST", f"/api/docs/{doc_id}/tokens", {"role": "god", "name": "x"}, owner)[0] == 400
    assert hub.request("POST", f"/api/docs/{doc_id}/tokens", ["not", "an", "object"], owner)[0] == 400
    assert hub.request("GET", "/api/docs/nope", token=owner)[0] == 403
    status, body = hub.request("GET", f"/api/docs/{doc_id}/tokens", token=owner)
    assert {t["role"] for t in body["tokens"]} == {"owner", "viewer"}
    assert hub.request("DELETE", f"/api/docs/{doc_id}/tokens/nope", token=owner)[0] == 404
