"""Exactly-once background work across hub processes (issue 17, requirement 4).

Of the processes that hold a document, one holds its lease (Redis) and with it a fencing token
the database gave out (``leases``); snapshots and retention are written only under that token,
so a holder that was paused or cut off while another took the lease over cannot write late.
Each job is checked with two real hub processes on one PostgreSQL and one Redis, and the fence
itself with a write in flight while the token moves on."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from pycrdt import Map

from collab.store import LogEntry, StaleLease, Store
from tests.test_cluster import peer_on_each, start_hubs, stop_all

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

TRACEBACK = "Traceback (most recent call last)"


def scalar(pg_url: str, sql: str, **params):
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def owners(hubs, doc_id: str, timeout: float = 10) -> list:
    """The processes that say they do ``doc_id``'s background work, once exactly one does."""
    deadline = time.monotonic() + timeout
    while True:
        got = [h for h in hubs if doc_id in h.request("GET", "/healthz")[1]["cluster"]["owned"]]
        if len(got) == 1:
            return got
        assert time.monotonic() < deadline, f"{len(got)} processes own {doc_id}"
        time.sleep(0.1)


@pytest.fixture
def store(pg_url):
    s = Store(pg_url, allocate_seq=True)
    s.migrate()
    yield s
    s.close()


def test_a_stale_fencing_token_refuses_snapshots_and_retention(store, pg_url):
    """Two processes took the lease one after the other: the first one's token is stale, and its
    snapshot and retention are refused without writing; the newest holder's go through."""
    doc = store.create_document("fenced", "me")["id"]
    store.append([LogEntry(doc, 0, b"\x00\x00", "me", "Me", "human")])
    old = Store(pg_url, allocate_seq=True)
    try:
        first = old.take_leases([doc], "old")[doc]
        second = store.take_leases([doc], "new")[doc]
        assert second == first + 1
        old.fences, store.fences = (lambda _d: first), (lambda _d: second)
        stale = []
        old.on_stale = lambda d, t: stale.append((d, t))
        with pytest.raises(StaleLease, match="stale"):
            old.save_snapshot(doc, 1, b"\x00\x00")
        later = datetime.now(timezone.utc) + timedelta(days=1)
        with pytest.raises(StaleLease, match="stale"):
            old.apply_retention(doc, later)
        assert stale == [(doc, first), (doc, first)]
        assert scalar(pg_url, "SELECT count(*) FROM snapshots") == 0
        old.fences = lambda _d: None  # not the holder at all (its lease ran out by its own clock)
        with pytest.raises(StaleLease, match="does not hold"):
            old.save_snapshot(doc, 1, b"\x00\x00")
        store.save_snapshot(doc, 1, b"\x00\x00")
        assert store.apply_retention(doc, later) == 1
        assert scalar(pg_url, "SELECT count(*) FROM snapshots") == 1
        assert scalar(pg_url, "SELECT count(*) FROM updates") == 0
    finally:
        old.close()


def test_a_takeover_waits_for_the_fenced_write_in_flight(store, pg_url):
    """The fence is read FOR SHARE: a new token waits for the write that holds the old one, so
    that write lands wholly before the takeover; written after it, it is refused."""
    doc = store.create_document("in flight", "me")["id"]
    token = store.take_leases([doc], "a")[doc]
    other = Store(pg_url, allocate_seq=True)
    try:
        taken: list[int] = []
        with store.fenced(doc, token) as conn:
            conn.execute(sa.text("INSERT INTO snapshots (doc_id, seq, state, created_at) "
                                 "VALUES (:d, 0, '', now())"), {"d": doc})
            t = threading.Thread(target=lambda: taken.append(other.take_leases([doc], "b")[doc]))
            t.start()
            time.sleep(0.5)
            assert taken == [], "the takeover did not wait for the write in flight"
        t.join(10)
        assert taken == [token + 1]
        with pytest.raises(StaleLease):
            with store.fenced(doc, token):
                pass
    finally:
        other.close()


class _OpenRoom:
    """Stands for a room a process has open: lease renewal looks only at which documents those are."""

    remote_clients: dict = {}


def test_leases_of_many_rooms_are_claimed_renewed_and_handed_over_in_chunks(store, redis_url):
    """A process with more open rooms than one claim script call covers (``_CLAIM_CHUNK``): each
    document's answer is matched to its own document across the chunks. The first process takes
    them all; a second holding the same rooms gets none while the first renews; once the first
    lets go, the second takes each with a newer fencing token."""
    from collab.cluster import _CLAIM_CHUNK, Cluster

    docs = [store.create_document(f"lease {i}", "me")["id"] for i in range(2 * _CLAIM_CHUNK + 37)]

    async def scenario() -> None:
        first, second = Cluster(redis_url, store), Cluster(redis_url, store)
        for cluster in (first, second):
            cluster.rooms.update({d: _OpenRoom() for d in docs})
        await first.start()
        await second.start()
        try:
            await first._claim_leases()
            await second._claim_leases()
            assert all(first.owns(d) for d in docs) and not any(second.owns(d) for d in docs)
            tokens = {d: first.fence(d) for d in docs}
            await first._claim_leases()  # a renewal keeps the token
            assert {d: first.fence(d) for d in docs} == tokens
            await first.stop()  # gives its leases up
            await second._claim_leases()
            assert all(second.owns(d) for d in docs)
            assert all(second.fence(d) == tokens[d] + 1 for d in docs)
        finally:
            await second.stop()

    asyncio.run(scenario())


def test_a_snapshot_in_flight_when_the_lease_moves_on_is_refused_and_written_once(tmp_path, pg_url, redis_url):
    """Two hub processes hold the document (a peer on each). Only the lease holder snapshots;
    a snapshot it has in flight while the token moves on (the test holds the lease row, then
    gives out a newer token, as a takeover would) is refused by the fence and nothing is written;
    the holder takes a fresh token (Redis still names it) and its next snapshot goes through."""
    hubs = start_hubs(tmp_path, 2, pg_url, redis_url, log_level="info", allow_in_log=(TRACEBACK,),
                      TINYMORPH_SNAPSHOT_EVERY="10")
    try:
        doc_id, _ = hubs[0].create_doc("fenced snapshots")

        async def scenario():
            async with peer_on_each(hubs, doc_id) as (a, b):
                (owner,) = await asyncio.to_thread(owners, hubs, doc_id)
                mine = a if owner is hubs[0] else b
                token = scalar(pg_url, "SELECT token FROM leases WHERE doc_id = :d", d=doc_id)
                engine = sa.create_engine(pg_url)
                blocker = engine.connect()
                try:
                    blocker.execute(sa.text("SELECT token FROM leases WHERE doc_id = :d FOR UPDATE"), {"d": doc_id})
                    for i in range(12):  # a snapshot falls due on the owner: its write waits on the fence
                        mine.text.insert(len(mine.text), f"w{i} ")
                        await mine.flush()
                    await asyncio.sleep(1.0)
                    blocker.execute(sa.text("UPDATE leases SET token = token + 1, holder = 'takeover' "
                                            "WHERE doc_id = :d"), {"d": doc_id})
                    blocker.commit()
                finally:
                    blocker.close()
                    engine.dispose()
                deadline = time.monotonic() + 10
                while "is stale" not in owner.log():
                    assert time.monotonic() < deadline, "the in-flight snapshot was not refused"
                    await asyncio.sleep(0.1)
                assert scalar(pg_url, "SELECT count(*) FROM snapshots WHERE doc_id = :d", d=doc_id) == 0
                # Redis still names the owner: it takes a fresh token and snapshots again.
                while scalar(pg_url, "SELECT token FROM leases WHERE doc_id = :d", d=doc_id) != token + 2:
                    assert time.monotonic() < deadline, "the holder never took a fresh token"
                    await asyncio.sleep(0.1)
                for i in range(12):
                    mine.text.insert(len(mine.text), f"x{i} ")
                    await mine.flush()
                while not scalar(pg_url, "SELECT count(*) FROM snapshots WHERE doc_id = :d", d=doc_id):
                    assert time.monotonic() < deadline + 10, "no snapshot under the fresh token"
                    await asyncio.sleep(0.1)
                return owner

        owner = asyncio.run(scenario())
        other = hubs[1] if owner is hubs[0] else hubs[0]
        assert f"snapshot of {doc_id} at" in owner.log()
        assert f"snapshot of {doc_id} at" not in other.log(), "a snapshot written by the process without the lease"
        holder = scalar(pg_url, "SELECT holder FROM leases WHERE doc_id = :d", d=doc_id)
        assert holder == owner.request("GET", "/healthz")[1]["cluster"]["process"]
    finally:
        stop_all(hubs)
    # The only tracebacks are the refused snapshot's.
    log = owner.log()
    assert log.count(TRACEBACK) == log.count("StaleLease: fencing token"), log[-3000:]
    assert TRACEBACK not in other.log()


def test_the_agents_triggers_act_once_whichever_processes_hold_the_document(tmp_path, pg_url, redis_url):
    """Two processes hold the document (a peer on each) and both hear every edit: a request in
    the ``requests`` map starts one run, and the watcher (a margin note after the writers pause)
    proposes once, both on the lease holder only."""
    hubs = start_hubs(tmp_path, 2, pg_url, redis_url, TINYMORPH_EXTENSIONS="agents",
                      TINYMORPH_WATCHER_ENABLED="true", TINYMORPH_WATCHER_DEBOUNCE_S="0.5")
    try:
        doc_id, _ = hubs[0].create_doc("triggers")

        async def scenario() -> dict:
            async with peer_on_each(hubs, doc_id) as (a, b):
                await asyncio.to_thread(owners, hubs, doc_id)
                for i in range(6):  # both sides type, then pause
                    for c in (a, b):
                        c.text.insert(len(c.text), f"word{i} ")
                        await c.flush()
                    await asyncio.sleep(0.05)
                b.doc.get("requests", type=Map)["r1"] = {"agent": "plain", "task": "continue"}
                await b.flush()
                async with asyncio.timeout(30):
                    while not (b.doc.get("requests", type=Map).get("r1") or {}).get("run_id"):
                        await asyncio.sleep(0.05)
                    while not scalar(pg_url, "SELECT count(*) FROM agent_runs WHERE doc_id = :d AND task = 'margin_note'",
                                     d=doc_id):
                        await asyncio.sleep(0.1)
                await asyncio.sleep(2)  # time for the other process to (wrongly) act too
                return dict(b.doc.get("requests", type=Map)["r1"])

        entry = asyncio.run(scenario())
        engine = sa.create_engine(pg_url)
        with engine.connect() as conn:
            runs = dict(conn.execute(sa.text("SELECT task, count(*) FROM agent_runs WHERE doc_id = :d GROUP BY task"),
                                     {"d": doc_id}).all())
            requested = conn.execute(sa.text("SELECT id FROM agent_runs WHERE doc_id = :d AND task = 'continue'"),
                                     {"d": doc_id}).scalar()
        engine.dispose()
        assert runs == {"continue": 1, "margin_note": 1}
        assert requested == entry["run_id"]
    finally:
        stop_all(hubs)


def test_a_revoked_token_closes_its_sockets_on_every_process(tmp_path, pg_url, redis_url):
    """Revocation is every process's duty for its own sockets (not one owner's): a token revoked
    through one process closes its sockets on both with 4410, and the database records it once."""
    hubs = start_hubs(tmp_path, 2, pg_url, redis_url, auth_mode="tokens", TINYMORPH_SECRET="s" * 32,
                      TINYMORPH_TOKEN_CHECK_S="0.5")
    try:
        doc_id, owner_token = hubs[0].create_doc("revoked", token=hubs[0].issue_token("alice", "Alice"))
        status, body = hubs[0].request("POST", f"/api/docs/{doc_id}/tokens", {"role": "editor", "name": "ed"},
                                       owner_token)
        assert status == 201, body
        token, token_id = body["token"], body["token_id"]

        async def scenario() -> list[int | None]:
            async with peer_on_each(hubs, doc_id, token) as (a, b):
                status, _ = await asyncio.to_thread(hubs[1].request, "DELETE", f"/api/docs/{doc_id}/tokens/{token_id}",
                                                    None, owner_token)
                assert status in (200, 204)
                for c in (a, b):
                    await c.wait_closed(10)
                return [a.close_code, b.close_code]

        assert asyncio.run(scenario()) == [4410, 4410]
        assert scalar(pg_url, "SELECT count(*) FROM tokens WHERE id = :t AND revoked_at IS NOT NULL", t=token_id) == 1
    finally:
        stop_all(hubs)
