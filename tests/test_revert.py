"""Reverts planned by ``History.plan_revert`` on a small real log (SQLite ``Store``), without a hub:
which characters come out, which come back, and that the update does exactly that."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pycrdt
import pytest

from collab.history import Author, Change, History, RevertScope
from collab.store import LogEntry, Store

T0 = datetime(2024, 5, 1, 9, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'revert.db'}")
    try:
        store.migrate()
    except Exception:  # noqa: BLE001 - the schema's migrations may be mid-refactor; the tables are what matter
        from collab.models import Base

        Base.metadata.create_all(store.engine)
    yield store
    store.close()


class Log:
    """A document's log, one attributed edit at a time, and the document it adds up to."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.doc_id = store.create_document("doc", "alice")["id"]
        self.doc = pycrdt.Doc()
        self.text = self.doc.get("content", type=pycrdt.Text)
        self.seq = 0

    def edit(self, author: str, edit, meta: dict | None = None) -> int:
        peer = pycrdt.Doc(client_id={"alice": 1, "bob": 2, "editor": 3}[author])
        peer.apply_update(self.doc.get_update())
        before = peer.get_state()
        text = peer.get("content", type=pycrdt.Text)
        edit(text, str(text))
        update = peer.get_update(before)
        self.doc.apply_update(update)
        self.seq += 1
        kind = "agent" if author == "editor" else "human"
        self.store.append([LogEntry(self.doc_id, self.seq, update, author, author.title(), kind, peer.client_id,
                                    T0 + timedelta(seconds=self.seq), dict(meta or {}))])
        return self.seq

    def reverted(self, update: bytes) -> str:
        doc = pycrdt.Doc()
        doc.apply_update(self.doc.get_update())
        doc.apply_update(update)
        return str(doc.get("content", type=pycrdt.Text))


@pytest.fixture
def log(store) -> Log:
    """1 alice "Hello world." · 2 bob + " Nice day." · 3 the editor agent (run-1) + " It rains." ·
    4 bob deletes "Nice "  →  "Hello world. day. It rains." """
    log = Log(store)
    log.edit("alice", lambda t, s: t.insert(0, "Hello world."))
    log.edit("bob", lambda t, s: t.insert(len(s), " Nice day."))
    log.edit("editor", lambda t, s: t.insert(len(s), " It rains."), {"run_id": "run-1"})
    log.edit("bob", lambda t, s: t.__delitem__(slice(s.index("Nice "), s.index("Nice ") + 5)))
    assert str(log.text) == "Hello world. day. It rains."
    return log


def plan(log: Log, scope: RevertScope):
    return History(log.store).plan_revert(log.doc_id, log.doc.get_update(), log.seq, scope)


def test_reverting_a_run_removes_what_it_wrote(log):
    done = plan(log, RevertScope(run_id="run-1"))
    assert (done.removed, done.restored, done.reverted, done.seq) == (len(" It rains."), 0, [3], None)
    assert log.reverted(done.update) == "Hello world. day."
    assert str(log.text) == "Hello world. day. It rains."  # planning changes nothing


def test_reverting_an_author_skips_text_they_both_wrote_and_deleted(log):
    done = plan(log, RevertScope(author_id="bob"))
    assert (done.removed, done.restored, done.reverted) == (len(" day."), 0, [2, 4])
    assert log.reverted(done.update) == "Hello world. It rains."


def test_reverting_a_deletion_puts_the_text_back_where_it_was(log):
    done = plan(log, RevertScope(from_seq=4, to_seq=4))
    assert (done.removed, done.restored, done.reverted) == (0, len("Nice "), [4])
    assert log.reverted(done.update) == "Hello world. Nice day. It rains."


def test_nothing_to_revert_is_no_update(log):
    done = plan(log, RevertScope(run_id="run-2"))
    assert (done.update, done.removed, done.restored, done.reverted) == (None, 0, 0, [])
    assert done.as_dict() == {"seq": None, "removed": 0, "restored": 0, "reverted": []}


def test_scope_conditions_all_hold():
    change = Change(5, T0, Author("bob", "Bob", "agent", run_id="run-1"), None, {})
    assert RevertScope().matches(change)
    assert RevertScope(run_id="run-1", author_id="bob", from_seq=5, to_seq=5).matches(change)
    assert not RevertScope(run_id="run-1", author_id="alice").matches(change)
    assert not RevertScope(from_seq=6).matches(change)
    assert not RevertScope(to_seq=4).matches(change)
