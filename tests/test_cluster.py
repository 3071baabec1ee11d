"""Several hub processes, one document (issue 17): stock y-websocket clients on different
processes sharing one PostgreSQL and one Redis converge, every process relays only what is
committed, the log's sequence is gap-free, presence crosses processes and a killed process's
presence goes within seconds; a process that missed messages backfills from the database."""

from __future__ import annotations

import asyncio
import signal
import time
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import sqlalchemy as sa

from collab.client import HubClient
from collab.testing import HUB_ONLY, HubProcess
from tests._jshelpers import presence_names
from tests.test_js_interop import js  # noqa: F401 - the fixture

pytestmark = [pytest.mark.node, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def cluster_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {**HUB_ONLY, "TINYMORPH_CLUSTER_URL": redis_url, "TINYMORPH_CLUSTER_PRESENCE_TTL_S": "1.5",
            "TINYMORPH_CLUSTER_CHECK_S": "1", "TINYMORPH_ROOM_GRACE_S": "60", **extra}


def start_hubs(tmp_path, n: int, pg_url: str, redis_url: str, *, log_level: str = "warning",
               allow_in_log: tuple[str, ...] = (), auth_mode: str = "open", **extra: str) -> list[HubProcess]:
    hubs = []
    for i in range(n):
        hub = HubProcess(tmp_path / f"hub{i}", db=pg_url, env=cluster_env(redis_url, **extra), log_level=log_level,
                         allow_in_log=allow_in_log, auth_mode=auth_mode)
        hubs.append(hub)
        hub.start()
    return hubs


def stop_all(hubs: list[HubProcess]) -> None:
    for hub in hubs:
        hub.stop()
    for hub in hubs:
        hub.assert_clean()


@asynccontextmanager
async def peer_on_each(hubs: list[HubProcess], doc_id: str, token: str | None = None):
    """A synced Python client on each of two processes, on one document."""
    async with HubClient(hubs[0].ws_url, doc_id, token=token) as a, HubClient(hubs[1].ws_url, doc_id, token=token) as b:
        await a.synced()
        await b.synced()
        yield a, b


def log_seqs(pg_url: str, doc_id: str) -> list[int]:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT seq FROM updates WHERE doc_id = :d ORDER BY seq"),
                                     {"d": doc_id}).scalars())
    finally:
        engine.dispose()


def type_words(clients, words_each: int, pause: float = 0.02, tag: str = "") -> dict[str, list[str]]:
    """Every client appends its own numbered words (``<name><tag><i>``), interleaved; returns
    what each typed."""
    typed: dict[str, list[str]] = {c.name: [] for c in clients}
    for i in range(words_each):
        for c in clients:
            word = f"{c.name}{tag}{i} "
            c.insert(-1, word)
            typed[c.name].append(word)
        time.sleep(pause)
    return typed


def converged(clients, typed: dict[str, list[str]], timeout: float = 30) -> str:
    words = [w for ws in typed.values() for w in ws]
    for c in clients:
        try:
            c.wait_for(lambda c: c.text is not None and all(w in c.text for w in words), f"every word at {c.name}",
                       timeout)
        except AssertionError as exc:
            missing = {o.name: [w for w in words if w not in (o.text or "")][:8] for o in clients}
            closes = {o.name: [(e.get("code"), e.get("reason")) for e in o.events if e.get("ev") == "connection-close"]
                      for o in clients}
            raise AssertionError(f"missing words: {missing}; socket closes: {closes}") from exc
    texts = {c.text for c in clients}
    assert len(texts) == 1, f"clients diverged: {texts}"
    text = texts.pop()
    for w in words:
        assert text.count(w) == 1, f"{w!r} appears {text.count(w)} times"
    for name, ws in typed.items():  # each sender's words in the order it typed them
        at = [text.index(w) for w in ws]
        assert at == sorted(at), f"{name}'s words reordered"
    return text


def test_clients_on_two_processes_converge_gap_free_with_shared_presence(tmp_path, pg_url, redis_url, js):
    hubs = start_hubs(tmp_path, 2, pg_url, redis_url, TINYMORPH_SNAPSHOT_EVERY="25")
    try:
        doc_id, _ = hubs[0].create_doc("cluster")
        ann = js(hubs[0].ws_url, doc_id, name="ann")
        bob = js(hubs[1].ws_url, doc_id, name="bob")
        cyd = js(hubs[1].ws_url, doc_id, name="cyd")
        clients = [ann, bob, cyd]
        for c in clients:
            c.wait_synced()
        typed = type_words(clients, 40)
        text = converged(clients, typed)
        # One gap-free sequence, numbered by the database whichever process committed.
        seqs = log_seqs(pg_url, doc_id)
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 40, seqs[:20]
        # What the log holds is what the clients hold.
        status, body = hubs[1].request("GET", f"/api/docs/{doc_id}")
        assert status == 200 and body["text"] == text
        # Background work (snapshots here) is one process's: the one holding the document's lease.
        owners = [h for h in hubs if doc_id in h.request("GET", "/healthz")[1]["cluster"]["owned"]]
        assert len(owners) == 1
        engine = sa.create_engine(pg_url)
        with engine.connect() as conn:
            snapshots = conn.execute(sa.text("SELECT count(*) FROM snapshots WHERE doc_id = :d"), {"d": doc_id}).scalar()
        engine.dispose()
        assert snapshots >= 1
        # Presence crosses processes.
        for c in clients:
            c.wait_for(lambda c: presence_names(c.states) >= {"ann", "bob", "cyd"}, "everyone's presence")
        # bob and cyd's process dies: ann sees their presence go within seconds, not 30 s.
        t0 = time.monotonic()
        hubs[1].stop(signal.SIGKILL)
        ann.wait_for(lambda c: not (presence_names(c.states) & {"bob", "cyd"}), "bob and cyd gone", timeout=15)
        assert any(e.get("ev") == "awareness" and e.get("origin") == "remote" and bob.client_id in e.get("removed", [])
                   for e in ann.events), "the hub, not the client's own 30 s timeout, removed bob"
        assert time.monotonic() - t0 < 10
        # The survivor takes the document's lease over (if the dead one held it).
        deadline = time.monotonic() + 10
        while doc_id not in hubs[0].request("GET", "/healthz")[1]["cluster"]["owned"]:
            assert time.monotonic() < deadline, "the survivor never took the lease over"
            time.sleep(0.1)
    finally:
        stop_all(hubs)


def test_nothing_is_relayed_on_any_process_before_it_is_committed(tmp_path, pg_url, redis_url, js):
    """A transaction of the test's own holds the document's row: no process can commit to it,
    and no client on either process sees the new word until the database has it."""
    hubs = start_hubs(tmp_path, 2, pg_url, redis_url)
    try:
        doc_id, _ = hubs[0].create_doc("committed first")
        ann, amy = js(hubs[0].ws_url, doc_id, name="ann"), js(hubs[0].ws_url, doc_id, name="amy")
        bob = js(hubs[1].ws_url, doc_id, name="bob")
        for c in (ann, amy, bob):
            c.wait_synced()
        ann.insert(-1, "before ")
        for c in (amy, bob):
            c.wait_for(lambda c: c.text == "before ", "the first word")
        engine = sa.create_engine(pg_url)
        blocker = engine.connect()
        try:
            blocker.execute(sa.text("SELECT id FROM documents WHERE id = :d FOR UPDATE"), {"d": doc_id})
            ann.insert(-1, "held ")
            time.sleep(1.5)  # ample for a relay (a few ms) that did not wait for the commit
            assert amy.text == bob.text == "before ", "relayed before it was committed"
            assert log_seqs(pg_url, doc_id) == [1]
        finally:
            blocker.rollback()
            blocker.close()
            engine.dispose()
        for c in (amy, bob):
            c.wait_for(lambda c: c.text == "before held ", "the word once committed")
        assert log_seqs(pg_url, doc_id) == [1, 2]
    finally:
        stop_all(hubs)


def test_a_revert_on_a_cluster_reports_the_seq_the_database_gave_it(tmp_path, pg_url, redis_url):
    """With a cluster the database numbers entries at commit: the revert answers with that
    number (the entry really in the log), not the room's own count of its submissions, which
    entries from the other process leave behind."""
    hubs = start_hubs(tmp_path, 2, pg_url, redis_url)
    try:
        a, b = hubs
        doc_id, owner = a.create_doc("revert on a cluster")

        def committed(n: int) -> list[int]:
            deadline = time.monotonic() + 20
            while len(seqs := log_seqs(pg_url, doc_id)) < n:
                assert time.monotonic() < deadline, seqs
                time.sleep(0.05)
            return seqs

        async def go() -> dict:
            async with peer_on_each(hubs, doc_id) as (mine, other):  # open mode
                mine.text.insert(0, "undone")
                await mine.flush()
                await other.wait_for(lambda: str(other.text) == "undone", 20)
                for word in ("one ", "two ", "three "):  # numbered by the database, not by a's room
                    other.text.insert(0, word)
                    await other.flush()
                await mine.wait_for(lambda: str(mine.text).startswith("three two one "), 20)
                mine_seq = committed(4)[0]
                status, body = await asyncio.to_thread(
                    a.request, "POST", f"/api/docs/{doc_id}/revert", {"from": mine_seq, "to": mine_seq}, owner)
                assert status == 200, body
                await mine.wait_for(lambda: "undone" not in str(mine.text), 20)
                return body

        body = asyncio.run(go())
        assert body["seq"] == log_seqs(pg_url, doc_id)[-1] == 5
    finally:
        stop_all(hubs)


def test_rooms_are_read_by_shard_and_every_room_relays(tmp_path, pg_url, redis_url):
    """A process reads its rooms' streams with one reader per shard (each XREAD names its shard's
    rooms only): 64 documents open on two processes spread over the shards, and a word typed
    on one process reaches the other in every one of them."""
    hubs = start_hubs(tmp_path, 2, pg_url, redis_url, TINYMORPH_AUTO_CREATE_DOCS="true")
    docs = [f"shard-{i:03d}" for i in range(64)]
    try:
        async def scenario() -> None:
            async with AsyncExitStack() as stack:
                pairs = []
                for doc in docs:
                    a = await stack.enter_async_context(HubClient(hubs[0].ws_url, doc))
                    b = await stack.enter_async_context(HubClient(hubs[1].ws_url, doc))
                    pairs.append((a, b))
                for a, b in pairs:
                    await a.synced()
                    await b.synced()
                for doc, (a, _b) in zip(docs, pairs):
                    a.text.insert(0, f"in {doc}")
                for a, _b in pairs:
                    await a.flush()
                async with asyncio.timeout(30):
                    for doc, (_a, b) in zip(docs, pairs):
                        await b.wait_for(lambda b=b, doc=doc: str(b.text) == f"in {doc}", 30)

        asyncio.run(scenario())
        for hub in hubs:
            shards = hub.request("GET", "/healthz")[1]["cluster"]["shards"]
            assert sum(shards) == len(docs) and len(shards) > 1
            assert max(shards) < len(docs) / 4, shards  # spread, not all on one reader
    finally:
        stop_all(hubs)


def test_a_burst_of_joins_waits_for_redis_connections_instead_of_losing_redis(pg_url, redis_url):
    """Each join reads its stream's position before its room loads: 300 joins at once are more
    commands in flight than redis-py's default pool allows (100). They wait for a connection;
    before, the 101st failed with MaxConnectionsError, its join went on without a position, and
    the cluster took Redis for lost and caught every open room up from the database."""
    from collab.cluster import Cluster
    from collab.store import Store

    store = Store(pg_url, allocate_seq=True)
    store.migrate()

    async def burst() -> tuple[list, bool]:
        cluster = Cluster(redis_url, store)
        await cluster.start()
        try:
            got = await asyncio.gather(*(cluster.position(f"burst-{i}") for i in range(300)))
            return got, cluster.connected
        finally:
            await cluster.stop()

    try:
        got, connected = asyncio.run(burst())
    finally:
        store.close()
    assert connected
    assert got == ["0-0"] * 300  # every stream's position (none has a message yet), no None
