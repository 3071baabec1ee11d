"""The durable log on SQLite and on the real PostgreSQL: append, load = snapshot + tail, retention."""

from __future__ import annotations

from datetime import timedelta

import pycrdt
import pytest
from sqlalchemy.exc import IntegrityError

from collab.models import utcnow
from collab.store import LoadedDocument, LogEntry, Store, content_text
from collab.testing import HUB_ONLY, HubProcess


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = Store(url)
    s.migrate()
    s.migrate()  # idempotent
    yield s
    s.close()


def _edits(n: int) -> tuple[list[bytes], str]:
    doc = pycrdt.Doc()
    text = doc.get("content", type=pycrdt.Text)
    updates: list[bytes] = []
    sub = doc.observe(lambda e: updates.append(e.update))
    for i in range(n):
        text.insert(len(text), f"{i} ")
        if i % 5 == 4:
            del text[0:1]
    doc.unobserve(sub)
    return updates, str(text)


def test_append_load_snapshot_tail(store):
    doc = store.create_document("t", "alice")["id"]
    updates, final = _edits(60)
    entries = [
        LogEntry(doc, i + 1, u, "alice", "Alice", "human", 42, meta={"run_id": "r1"} if i % 2 else {})
        for i, u in enumerate(updates)
    ]
    n = len(entries)  # 60 inserts and 12 deletions
    store.append(entries[:30])
    store.append(entries[30:])
    assert store.last_seq(doc) == n == 72
    loaded = store.load(doc)
    assert (loaded.seq, loaded.snapshot_seq, content_text(loaded.state)) == (n, 0, final)

    # a snapshot at 40 makes loading = snapshot + tail, same result
    store.save_snapshot(doc, 40, pycrdt.merge_updates(*updates[:40]))
    loaded = store.load(doc)
    assert (loaded.seq, loaded.snapshot_seq, content_text(loaded.state)) == (n, 40, final)
    # historic versions still come from the log
    assert content_text(store.load(doc, at_seq=10).state) == content_text(pycrdt.merge_updates(*updates[:10]))

    rows = list(store.updates(doc, after=n - 2))
    assert [(r.seq, r.author_name, r.author_kind, r.client_id, r.meta) for r in rows] == [
        (n - 1, "Alice", "human", 42, {}),
        (n, "Alice", "human", 42, {"run_id": "r1"}),
    ]


def test_duplicate_sequence_is_refused_atomically(store):
    doc = store.create_document("t", "a")["id"]
    updates, _ = _edits(3)
    store.append([LogEntry(doc, 1, updates[0], "a", "A", "human")])
    with pytest.raises(IntegrityError):
        store.append([LogEntry(doc, 2, updates[1], "a", "A", "human"), LogEntry(doc, 1, updates[2], "a", "A", "human")])
    assert store.last_seq(doc) == 1  # the whole batch rolled back


def test_inline_appends_commit_and_survive_a_refused_batch(tmp_path):
    """The hub's event-loop commits (SQLite, synchronous NORMAL) hold one connection: a refused
    batch rolls back and leaves it usable, and what it committed is visible to everyone."""
    store = Store(f"sqlite:///{tmp_path / 'inline.db'}")
    store.migrate()
    assert store.can_append_inline
    doc = store.create_document("t", "a")["id"]
    updates, _ = _edits(3)
    store.append([LogEntry(doc, 1, updates[0], "a", "A", "human")], inline=True)
    with pytest.raises(IntegrityError):
        store.append([LogEntry(doc, 2, updates[1], "a", "A", "human"), LogEntry(doc, 1, updates[2], "a", "A", "human")],
                     inline=True)
    store.append([LogEntry(doc, 2, updates[1], "a", "A", "human", meta={"k": "v"})], inline=True)
    assert [(u.seq, u.meta) for u in store.updates(doc)] == [(1, {}), (2, {"k": "v"})]
    store.close()
    assert not Store(f"sqlite:///{tmp_path / 'full.db'}", sqlite_synchronous="FULL").can_append_inline


async def test_journal_commit_delay_groups_a_busy_rooms_updates_and_never_holds_a_lone_one(tmp_path):
    """What commits when, told by the batches and the loop turns, not by a stopwatch: an update
    after a quiet spell commits in the loop turn after it arrived; one right behind another waits
    (it is still uncommitted after many loop turns) until ``group_size`` are waiting, and then
    they all commit in the next turn; a lone waiting one commits once the delay has passed (not
    before it: a lower bound, which a loaded machine can only make longer)."""
    import asyncio
    import time

    from collab.journal import Journal

    delay = 1.0
    store = Store(f"sqlite:///{tmp_path / 'j.db'}")
    store.migrate()
    doc = store.create_document("t", "a")["id"]
    updates, _ = _edits(6)
    batches: list[list[int]] = []
    journal = Journal(store, on_commit=lambda b: batches.append([e.seq for e in b]),
                      on_fail=lambda b, e: None, delay_s=delay, group_size=3)
    journal.start()
    def entry(i: int) -> LogEntry:
        return LogEntry(doc, i, updates[i - 1], "a", "A", "human")

    async def turns(n: int = 5) -> None:  # let the loop run n times, no more
        for _ in range(n):
            await asyncio.sleep(0)

    try:
        journal.append(entry(1))  # after a quiet spell: committed at once
        await turns()
        assert batches == [[1]]

        journal.append(entry(2))  # right behind it: the room is busy, so this one waits for company
        await turns(20)
        assert batches == [[1]] and store.last_seq(doc) == 1
        journal.append(entry(3))
        journal.append(entry(4))  # the third waiting: the group is full and commits without the delay
        await turns()
        assert batches == [[1], [2, 3, 4]]
        assert store.last_seq(doc) == 4

        t0 = time.monotonic()
        journal.append(entry(5))  # busy again, and nothing follows: it waits the delay ...
        await turns(20)
        assert batches[-1] == [2, 3, 4]
        await asyncio.wait_for(journal.drain(), 30)  # ... and then commits on its own
        assert batches[-1] == [5]
        assert time.monotonic() - t0 >= delay * 0.99

        await asyncio.sleep(delay * 1.2)  # a quiet spell longer than the delay
        journal.append(entry(6))
        await turns()
        assert batches == [[1], [2, 3, 4], [5], [6]]  # committed without waiting
        assert store.last_seq(doc) == 6
    finally:
        await asyncio.wait_for(journal.stop(), 30)
        store.close()


def test_retention_only_deletes_history_covered_by_a_snapshot(store):
    doc = store.create_document("t", "a")["id"]
    updates, final = _edits(10)
    old = utcnow() - timedelta(days=30)
    store.append([LogEntry(doc, i + 1, u, "a", "A", "human", created_at=old) for i, u in enumerate(updates)])
    assert store.apply_retention(doc, utcnow() - timedelta(days=7)) == 0  # no snapshot: keep all
    store.save_snapshot(doc, 6, pycrdt.merge_updates(*updates[:6]))
    assert store.apply_retention(doc, utcnow() - timedelta(days=7)) == 6
    assert content_text(store.load(doc).state) == final


def test_tokens_revocation(store):
    doc = store.create_document("t", "a")["id"]
    tid = store.add_token(doc_id=doc, user_id="u", name="U", role="editor", expires_at=utcnow() + timedelta(days=1))
    assert store.get_token(tid)["revoked_at"] is None
    assert store.revoke_token(tid) is True
    assert store.revoke_token(tid) is False
    assert store.get_token(tid)["revoked_at"] is not None
    assert [d["id"] for d in store.list_documents("u")] == []  # revoked tokens grant nothing
    assert [d["id"] for d in store.list_documents("a")] == [doc]


async def test_hub_on_postgresql_survives_restart(tmp_path, pg_url):
    from collab.client import HubClient

    hub = HubProcess(tmp_path / "hub", db=pg_url, env=HUB_ONLY)
    try:
        hub.start()
        doc_id, _ = hub.create_doc("pg")
        a = HubClient(hub.ws_url, doc_id)
        await a.connect()
        await a.synced()
        for i in range(100):
            a.text.insert(len(a.text), f"{i};")
        expected = str(a.text)
        await a.flush()
        await a.close()
        assert hub.stop() == 0, hub.log()
        hub.start()
        b = HubClient(hub.ws_url, doc_id)
        await b.connect()
        await b.synced()
        assert str(b.text) == expected
        await b.close()
    finally:
        hub.stop()
    hub.assert_clean()


def test_open_many_one_transaction_per_burst(store, monkeypatch):
    """``open_many`` (the room loader's batch) gives each document what ``open`` would: new ones
    made, known ones as snapshot + tail, unknown ones None; one document that fails to merge is
    that document's error, not its batch's."""
    updates, final = _edits(20)
    known = store.create_document("known", "alice")["id"]
    store.append([LogEntry(known, i + 1, u, "alice", "Alice", "human", 42) for i, u in enumerate(updates)])
    store.save_snapshot(known, 8, pycrdt.merge_updates(*updates[:8]))
    bare = store.create_document("bare", "alice")["id"]
    broken = store.create_document("broken", "alice")["id"]
    store.append([LogEntry(broken, 1, updates[0], "alice", "Alice", "human", 42)])

    found = store.open_many([known, bare, "nobody", known])
    assert set(found) == {known, bare, "nobody"}
    assert found["nobody"] is None and store.open("nobody") is None
    assert (found[bare].state, found[bare].seq) == (None, 0)
    loaded = found[known]
    assert (loaded.seq, loaded.snapshot_seq, content_text(loaded.state)) == (len(updates), 8, final)

    made = store.open_many(["fresh-1", known, "fresh-2"], create=True)
    assert made["fresh-1"] == made["fresh-2"] == store.open("fresh-1", create=True)  # made once, then read
    assert made["fresh-1"].state is None and store.get_document("fresh-2") is not None
    assert content_text(made[known].state) == final

    merged = Store._merged

    def refuse(self, doc_id, *args, **kwargs):
        if doc_id == broken:
            raise RuntimeError("this document's state does not merge")
        return merged(self, doc_id, *args, **kwargs)

    monkeypatch.setattr(Store, "_merged", refuse)
    found = store.open_many([broken, known])
    assert isinstance(found[broken], RuntimeError)
    assert content_text(found[known].state) == final
    with pytest.raises(RuntimeError, match="does not merge"):
        store.open(broken)


def test_room_opener_batches_a_burst_of_joins(store, monkeypatch):
    """The hub's room loader: fifty first joins at once cost a couple of ``open_many`` batches,
    not fifty; each join gets its own document, and one that fails fails alone."""
    import asyncio

    from collab.rooms import Opener

    updates, final = _edits(5)
    broken = store.create_document("broken", "alice")["id"]
    store.append([LogEntry(broken, 1, updates[0], "alice", "Alice", "human", 42)])
    batches: list[list[str]] = []
    open_many, merged = store.open_many, Store._merged

    def counted(doc_ids, **kwargs):
        batches.append(list(doc_ids))
        return open_many(doc_ids, **kwargs)

    def refuse(self, doc_id, *args, **kwargs):
        if doc_id == broken:
            raise RuntimeError("this document's state does not merge")
        return merged(self, doc_id, *args, **kwargs)

    monkeypatch.setattr(store, "open_many", counted)
    monkeypatch.setattr(Store, "_merged", refuse)

    async def burst():
        opener = Opener(store, create=True)
        ids = [f"join-{i}" for i in range(50)]
        return await asyncio.gather(*(opener.open(d) for d in [*ids, broken, ids[0]]), return_exceptions=True)

    results = asyncio.run(burst())
    assert all(r == LoadedDocument(None, 0, 0) for r in results[:50]), results[:50]  # made just now
    assert isinstance(results[50], RuntimeError) and results[51] == results[0]
    assert sorted(d for b in batches for d in b) == sorted([*(f"join-{i}" for i in range(50)), broken])
    assert len(batches) <= 3, [len(b) for b in batches]
    assert all(store.get_document(f"join-{i}") is not None for i in range(50))


def test_room_opener_answers_each_join_alone(store, monkeypatch):
    """A join that gives up cancels only its own wait: another join of the same document, and
    the batch it shares, still get it. A join that arrives while its document is at the database
    shares that read instead of making a second, and the first batch leaves at once (it does
    not wait for a loop turn to fill)."""
    import asyncio
    import threading

    from collab.rooms import Opener

    reads: list[list[str]] = []
    at_database, release = threading.Event(), threading.Event()
    open_many = store.open_many

    def slow(doc_ids, **kwargs):
        reads.append(list(doc_ids))
        at_database.set()
        release.wait(10)
        return open_many(doc_ids, **kwargs)

    monkeypatch.setattr(store, "open_many", slow)

    async def joins():
        opener = Opener(store, create=True)
        try:
            first = opener.open("shared")
            await asyncio.to_thread(at_database.wait, 10)  # the first batch left with one join
            assert reads == [["shared"]]
            second, other = opener.open("shared"), opener.open("other")
            quitter = asyncio.ensure_future(asyncio.wait_for(first, 0.05))
            with pytest.raises(asyncio.TimeoutError):
                await quitter
            release.set()
            return await asyncio.wait_for(asyncio.gather(second, other), 10), first.cancelled()
        finally:
            opener.close()

    (shared, other), first_cancelled = asyncio.run(joins())
    assert first_cancelled  # the join that gave up
    assert shared == LoadedDocument(None, 0, 0) and other == LoadedDocument(None, 0, 0)
    assert reads == [["shared"], ["other"]]  # "shared" read once, for both of its joins
