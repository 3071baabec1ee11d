"""README promises of the hub that no other test covers: close codes 1011, 1012 and 4401 (an expired
token at connect; on an open socket: tests/test_tokens_hold.py),
the settings ``auto_create_docs``, ``snapshot_every``, ``retention_days``, ``sqlite_synchronous``,
``commit_delay_ms``, and ``event_bus=redis`` across two hub processes on one PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from promises_support import HUB_ONLY, committed, until

from collab.client import HubClient
from collab.models import Snapshot, Update, utcnow
from collab.store import Store, content_text
from collab.testing import HubProcess

SNAPSHOT_EVERY = 5


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """One hub for the module (each test its own document): SQLite, open mode, no workers, no
    graph; unknown documents are created on first join, a snapshot every 5 entries, and log
    entries older than a day that a snapshot covers are deleted."""
    proc = HubProcess(tmp_path_factory.mktemp("promises-hub") / "hub", log_level="info",
                      env={**HUB_ONLY, "TINYMORPH_AUTO_CREATE_DOCS": "true",
                           "TINYMORPH_SNAPSHOT_EVERY": str(SNAPSHOT_EVERY), "TINYMORPH_RETENTION_DAYS": "1"})
    proc.start()
    yield proc
    proc.stop()


def _store(hub: HubProcess) -> Store:
    return Store(f"sqlite:///{hub.data_dir / 'tinymorph.db'}")


async def _connected(hub: HubProcess, doc_id: str, **kw) -> HubClient:
    client = HubClient(hub.ws_url, doc_id, **kw)
    await client.connect()
    await client.synced()
    return client


# -- close codes --------------------------------------------------------------------------------


async def test_close_1011_when_the_database_refuses_an_update_and_the_client_resends_it(hub):
    """A trigger makes SQLite refuse this document's log inserts: the writer's socket closes with
    1011 once the journal gives up, nobody sees the refused edit, and after the database accepts
    writes again the writer's reconnect re-sends it through sync."""
    doc_id, _ = hub.create_doc("refused")
    writer = await _connected(hub, doc_id)
    bystander = await _connected(hub, doc_id)
    retry = None
    db = sqlite3.connect(hub.data_dir / "tinymorph.db", timeout=30, isolation_level=None)
    trigger = f"refuse_{uuid.uuid4().hex[:8]}"
    try:
        writer.text.insert(0, "kept ")
        await bystander.wait_for(lambda: str(bystander.text) == "kept ")
        db.execute(f"CREATE TRIGGER {trigger} BEFORE INSERT ON updates WHEN NEW.doc_id = '{doc_id}' "
                   "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        writer.text.insert(len(writer.text), "refused")
        await writer.wait_closed(timeout=30)  # the journal retries for about 1.3 s first
        assert writer.close_code == 1011, (writer.close_code, writer.close_reason)
        assert "storage unavailable" in writer.close_reason
        assert str(bystander.text) == "kept "  # never relayed: it was never committed
        assert hub.request("GET", f"/api/docs/{doc_id}")[1]["text"] == "kept "

        db.execute(f"DROP TRIGGER {trigger}")
        retry = HubClient(hub.ws_url, doc_id, doc=writer.doc)  # the same client state reconnects
        await retry.connect()
        await retry.synced()
        await bystander.wait_for(lambda: str(bystander.text) == "kept refused", timeout=15)
        body = await until(lambda: (b := hub.request("GET", f"/api/docs/{doc_id}")[1])["text"] == "kept refused" and b,
                           "the re-sent edit to commit")
        assert body["text"] == "kept refused"
    finally:
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        db.close()
        for c in (writer, bystander, retry):
            if c is not None:
                await c.close()


async def test_close_1012_when_the_server_restarts_with_a_client_connected(tmp_path):
    proc = HubProcess(tmp_path / "hub", env=HUB_ONLY).start()
    client = None
    try:
        doc_id, _ = proc.create_doc("restart")
        client = await _connected(proc, doc_id)
        client.text.insert(0, "before the restart")
        await committed(proc, doc_id, 1)
        proc.proc.send_signal(signal.SIGTERM)
        await client.wait_closed(timeout=30)
        assert client.close_code == 1012, (client.close_code, client.close_reason)
    finally:
        if client is not None:
            await client.close()
        proc.stop()


async def test_an_expired_token_is_refused_at_connect_with_4401(hub):
    doc_id, _ = hub.create_doc("expired")
    token = hub.token(doc_id, "editor", "Brief", ttl_s=1)
    await asyncio.sleep(2.2)  # JWT expiry has one-second resolution
    client = HubClient(hub.ws_url, doc_id, token=token)
    await client.connect()
    try:
        await client.wait_closed(timeout=10)
        assert (client.close_code, client.close_reason) == (4401, "token expired")
    finally:
        await client.close()


# -- settings -----------------------------------------------------------------------------------


async def test_auto_create_docs_creates_an_unknown_document_on_first_join(hub):
    doc_id = f"auto-{uuid.uuid4().hex[:8]}"
    assert hub.request("GET", f"/api/docs/{doc_id}")[0] == 404
    client = await _connected(hub, doc_id)  # not closed with 4404
    try:
        client.text.insert(0, "made by joining")
        body = await committed(hub, doc_id, 1)
        assert (body["id"], body["text"]) == (doc_id, "made by joining")
        assert client.close_code is None
    finally:
        await client.close()


async def test_snapshot_every_writes_a_snapshot_each_n_entries_and_loads_snapshot_plus_tail(hub):
    doc_id, _ = hub.create_doc("snapshots")
    client = await _connected(hub, doc_id)
    store = _store(hub)
    try:
        for i in range(12):  # one entry at a time, each committed before the next
            client.text.insert(len(client.text), f"{i};")
            await committed(hub, doc_id, i + 1)
        expected = str(client.text)

        def snapshots() -> list[int]:
            with store.engine.connect() as conn:
                return list(conn.execute(sa.select(Snapshot.seq).where(Snapshot.doc_id == doc_id)
                                         .order_by(Snapshot.seq)).scalars())
        await until(lambda: snapshots() == [5, 10], "snapshots at entries 5 and 10", timeout=15)
        loaded = store.load(doc_id)
        assert (loaded.snapshot_seq, loaded.seq, content_text(loaded.state)) == (10, 12, expected)
        # Loading is the snapshot plus the tail: without the entries the snapshot covers, the
        # hub's version at 12 is still the whole text.
        with store.engine.begin() as conn:
            conn.execute(sa.delete(Update).where(Update.doc_id == doc_id, Update.seq <= 10))
        status, body = hub.request("GET", f"/api/docs/{doc_id}/versions/12")
        assert status == 200 and (body["seq"], body["text"]) == (12, expected)
    finally:
        store.close()
        await client.close()


async def test_retention_days_deletes_old_entries_a_snapshot_covers(hub):
    doc_id, _ = hub.create_doc("retention")
    client = await _connected(hub, doc_id)
    store = _store(hub)
    try:
        for i in range(3):
            client.text.insert(len(client.text), f"old{i} ")
            await committed(hub, doc_id, i + 1)
        with store.engine.begin() as conn:  # these three are now ten days old
            conn.execute(sa.update(Update).where(Update.doc_id == doc_id, Update.seq <= 3)
                         .values(created_at=utcnow() - timedelta(days=10)))
        for i in range(3):  # entry 5 brings a snapshot (snapshot_every=5), and retention with it
            client.text.insert(len(client.text), f"new{i} ")
            await committed(hub, doc_id, 4 + i)
        expected = str(client.text)

        def seqs() -> list[int]:
            return [u.seq for u in store.updates(doc_id)]
        # old and covered: deleted; covered but recent (4, 5) and after the snapshot (6): kept
        await until(lambda: seqs() == [4, 5, 6], "retention to delete entries 1-3", timeout=15)
        assert store.load(doc_id).snapshot_seq == 5
        assert content_text(store.load(doc_id).state) == expected  # the document still loads whole
        late = await _connected(hub, doc_id)
        assert str(late.text) == expected
        await late.close()
        assert "retention: deleted 3 log entries" in hub.log()
    finally:
        store.close()
        await client.close()


def test_sqlite_synchronous_full_is_the_pragma_on_the_hubs_connections(tmp_path, monkeypatch):
    """``TINYMORPH_SQLITE_SYNCHRONOUS=FULL``: the hub ``tinymorph serve`` builds from the settings
    commits with ``PRAGMA synchronous=FULL`` (2) and never on the event loop's NORMAL connection;
    the default is NORMAL (1). PRAGMA synchronous is per connection, so it is read on the hub's."""
    from collab.config import Settings
    from collab.hub import Hub

    def pragmas(data_dir, env: str | None) -> tuple[set[int], bool]:
        monkeypatch.setenv("TINYMORPH_DATA_DIR", str(data_dir))
        if env is None:
            monkeypatch.delenv("TINYMORPH_SQLITE_SYNCHRONOUS", raising=False)
        else:
            monkeypatch.setenv("TINYMORPH_SQLITE_SYNCHRONOUS", env)
        hub = Hub(Settings.load())
        try:
            hub.store.migrate()
            engines = [hub.store.engine] + ([hub.store.inline_engine] if hub.store.inline_engine else [])
            seen = set()
            for engine in engines:
                with engine.connect() as conn:
                    seen.add(conn.exec_driver_sql("PRAGMA synchronous").scalar())
            return seen, hub.store.can_append_inline
        finally:
            hub.store.close()

    assert pragmas(tmp_path / "full", "FULL") == ({2}, False)
    assert pragmas(tmp_path / "default", None) == ({1}, True)


@pytest.mark.parametrize("delay_ms", [0, 5000])
async def test_commit_delay_ms_sets_how_updates_share_commits(tmp_path, delay_ms):
    """Nine updates 30 ms apart, each in a frame of its own. ``commit_delay_ms=0``: a commit
    each (the default 40 would group them). A delay longer than the gaps: the first commits at
    once (it follows a quiet spell), then they wait in groups of ``commit_group_size`` (4)."""
    proc = HubProcess(tmp_path / "hub", log_level="info",
                      env={**HUB_ONLY, "TINYMORPH_COMMIT_DELAY_MS": str(delay_ms)}).start()
    try:
        doc_id, _ = proc.create_doc("delay")
        async with HubClient(proc.ws_url, doc_id) as client:
            await client.synced()
            for i in range(9):
                client.text.insert(len(client.text), f"{i} ")
                await client.flush()
                await asyncio.sleep(0.03)
            body = await committed(proc, doc_id, 9)
            assert body["text"] == "".join(f"{i} " for i in range(9))
    finally:
        proc.stop()
    drained = re.search(r"journal drained: (\d+) updates in (\d+) commits", proc.log())
    assert drained, proc.log()[-2000:]
    updates, commits = int(drained[1]), int(drained[2])
    assert (updates, commits) == (9, 9 if delay_ms == 0 else 3)


# -- event_bus=redis ----------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
async def test_revoking_through_hub_a_closes_a_socket_on_hub_b_through_the_redis_bus(tmp_path, pg_url, redis_url):
    # The bus alone: a hub that also polls open sockets' tokens (``token_check_s``, where the hub
    # has it) is told to look only once an hour, so only the event can close B's socket in time.
    env = {**HUB_ONLY, "TINYMORPH_EVENT_BUS": redis_url, "TINYMORPH_SECRET": uuid.uuid4().hex,
           "TINYMORPH_TOKEN_CHECK_S": "3600"}
    a = HubProcess(tmp_path / "a", db=pg_url, env=env)
    b = HubProcess(tmp_path / "b", db=pg_url, env=env)
    client = None
    try:
        a.start(timeout=60)
        b.start(timeout=60)  # after A: A created the schema
        doc_id, owner = a.create_doc("two hubs")
        status, share = a.request("POST", f"/api/docs/{doc_id}/tokens", {"role": "editor", "name": "Bea"}, owner)
        assert status == 201
        client = await _connected(b, doc_id, token=share["token"])
        client.text.insert(0, "written through B")
        await committed(a, doc_id, 1, owner)  # one database: A sees what B committed
        assert a.request("DELETE", f"/api/docs/{doc_id}/tokens/{share['token_id']}", None, owner)[0] == 204
        await client.wait_closed(timeout=10)  # the README promises a second; generous here
        assert (client.close_code, client.close_reason) == (4410, "token revoked")
    finally:
        if client is not None:
            await client.close()
        b.stop()
        a.stop()
