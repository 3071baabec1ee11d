"""Unit tests of session history (``collab/history.py``): versions, exact attributed diffs, blame,
sessions, on small logs of real pycrdt updates in a real ``Store`` (SQLite).

Each log entry is made the way a client makes one: a peer's ``pycrdt.Doc`` synced to the document
so far, one edit to its ``Text`` named ``content``, and the update that edit produced.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pycrdt
import pytest
from agents_support import migrated_store

from collab import LogEntry, Store
from collab.history import History, diff_ids, sessions
from collab.store import content_text

T0 = datetime(2024, 5, 1, 9, 0, 0, tzinfo=timezone.utc)
AGENT_META = {"run_id": "run-1", "model": "smol", "steering": [{"source": "caa:formal", "strength": 0.3}],
              "token_id": "tok-agent"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = migrated_store(tmp_path_factory.mktemp('history') / 'history.db')
    yield store
    store.close()


# -- building logs ---------------------------------------------------------------------------


def _byte(text: pycrdt.Text, i: int) -> int:
    """pycrdt indexes text by UTF-8 byte; the tests speak in characters."""
    return len(str(text)[:i].encode())


def insert(i: int, s: str) -> Callable[[pycrdt.Text], None]:
    def op(text: pycrdt.Text) -> None:
        text.insert(_byte(text, i), s)
    return op


def append(s: str) -> Callable[[pycrdt.Text], None]:
    def op(text: pycrdt.Text) -> None:
        text.insert(len(str(text).encode()), s)
    return op


def delete(i: int, n: int) -> Callable[[pycrdt.Text], None]:
    def op(text: pycrdt.Text) -> None:
        del text[_byte(text, i) : _byte(text, i + n)]
    return op


def delete_text(s: str) -> Callable[[pycrdt.Text], None]:
    def op(text: pycrdt.Text) -> None:
        i = str(text).index(s)
        delete(i, len(s))(text)
    return op


class Log:
    """A document's log, written one attributed edit at a time."""

    CLIENTS = {"alice": 101, "bob": 202, "editor": 303}

    def __init__(self, store: Store, title: str = "doc") -> None:
        self.store = store
        self.doc_id = store.create_document(title, "alice")["id"]
        self.doc = pycrdt.Doc()
        self.text = self.doc.get("content", type=pycrdt.Text)
        self.seq = 0
        self.versions = [""]  # the text after each seq

    def edit(self, author: str, *ops: Callable[[pycrdt.Text], None], at_s: float, kind: str = "human",
             meta: dict[str, Any] | None = None) -> int:
        peer = pycrdt.Doc(client_id=self.CLIENTS.get(author, 999))
        peer.apply_update(self.doc.get_update())
        text = peer.get("content", type=pycrdt.Text)
        before = peer.get_state()
        with peer.transaction():
            for op in ops:
                op(text)
        update = peer.get_update(before)
        self.doc.apply_update(update)
        self.seq += 1
        self.store.append([LogEntry(self.doc_id, self.seq, update, author, author.title(), kind, peer.client_id,
                                    T0 + timedelta(seconds=at_s), dict(meta or {}))])
        self.versions.append(str(self.text))
        return self.seq


@pytest.fixture
def log(store) -> Log:
    """Two sessions (idle for over an hour between them) by Alice, Bob and an agent run.

        1 alice  @0s     "Hello world."
        2 bob    @30s    + " Nice day."
        3 alice  @60s    "world" -> "there"
        4 editor @4000s  + " It rains."        (agent, run-1)
        5 bob    @4030s  - "Nice "
    """
    log = Log(store)
    log.edit("alice", insert(0, "Hello world."), at_s=0)
    log.edit("bob", append(" Nice day."), at_s=30)
    log.edit("alice", delete_text("world"), insert(6, "there"), at_s=60)
    log.edit("editor", append(" It rains."), at_s=4000, kind="agent", meta=AGENT_META)
    log.edit("bob", delete_text("Nice "), at_s=4030)
    assert log.versions == ["", "Hello world.", "Hello world. Nice day.", "Hello there. Nice day.",
                            "Hello there. Nice day. It rains.", "Hello there. day. It rains."]
    return log


def attributed_diff(history: History, doc_id: str, lo: int, hi: int) -> list[dict[str, Any]]:
    """What ``GET /diff?from=lo&to=hi`` answers (the handler only resolves the positions)."""
    return history.diff(doc_id, lo, hi)


def brief(ops: list[dict[str, Any]]) -> list[tuple]:
    """``(op, text, author_id)``, adjacent unchanged spans joined (they come split per log entry)."""
    out: list[tuple] = []
    for o in ops:
        if o["op"] == "equal" and out and out[-1][0] == "equal":
            out[-1] = ("equal", out[-1][1] + o["text"], None)
        else:
            out.append((o["op"], o["text"], o.get("author_id")))
    return out


# -- versions ---------------------------------------------------------------------------------


def test_version_text_at_every_seq(store, log):
    history = History(store)
    for seq, expected in enumerate(log.versions):
        assert content_text(store.load(log.doc_id, at_seq=seq).state) == expected, seq
        with history.at(log.doc_id, seq) as replay:
            assert str(replay.text) == expected, seq
            assert replay.seq == seq
    assert store.last_seq(log.doc_id) == 5


def test_version_from_a_snapshot_plus_tail(store, log):
    snap = pycrdt.Doc()
    for row in store.updates(log.doc_id, upto=3):
        snap.apply_update(row.data)
    store.save_snapshot(log.doc_id, 3, snap.get_update())
    for seq in range(6):
        loaded = store.load(log.doc_id, at_seq=seq)
        assert loaded.seq == seq
        assert loaded.snapshot_seq == (3 if seq >= 3 else 0)
        assert content_text(loaded.state) == log.versions[seq], seq


def test_version_at_a_time(store, log):
    assert store.seq_at_time(log.doc_id, T0 - timedelta(seconds=1)) == 0
    assert store.seq_at_time(log.doc_id, T0) == 1
    assert store.seq_at_time(log.doc_id, T0 + timedelta(seconds=45)) == 2
    assert store.seq_at_time(log.doc_id, T0 + timedelta(seconds=60)) == 3
    assert store.seq_at_time(log.doc_id, T0 + timedelta(days=1)) == 5


# -- the timeline ------------------------------------------------------------------------------


def test_changes_say_who_inserted_and_deleted_what(store, log):
    changes = History(store).changes(log.doc_id)
    got = [(c.seq, c.author.author_id, c.author.kind, c.inserted, c.deleted) for c in changes]
    assert got == [
        (1, "alice", "human", "Hello world.", ""),
        (2, "bob", "human", " Nice day.", ""),
        (3, "alice", "human", "there", "world"),
        (4, "editor", "agent", " It rains.", ""),
        (5, "bob", "human", "", "Nice "),
    ]
    # the characters an entry deleted are the ones another entry wrote
    by_seq = {c.seq: c for c in changes}
    assert set(by_seq[5].deleted_ids) <= set(by_seq[2].inserted_ids)
    assert set(by_seq[3].deleted_ids) <= set(by_seq[1].inserted_ids)
    assert len(by_seq[1].inserted_ids) == len("Hello world.")


def test_change_as_dict_carries_the_agent_attribution(store, log):
    changes = History(store).changes(log.doc_id)
    agent = changes[3].as_dict()
    assert agent["author_id"] == "editor" and agent["kind"] == "agent"
    assert agent["run_id"] == "run-1" and agent["model"] == "smol"
    assert agent["steering"] == AGENT_META["steering"]
    assert agent["inserted"] == " It rains." and agent["client_id"] == Log.CLIENTS["editor"]
    assert datetime.fromisoformat(agent["at"]) == T0 + timedelta(seconds=4000)
    human = changes[0].as_dict()
    assert "run_id" not in human and "steering" not in human and "model" not in human


def test_changes_between_positions(store, log):
    history = History(store)
    assert [c.seq for c in history.changes(log.doc_id, after=2, upto=4)] == [3, 4]
    assert [c.seq for c in history.changes(log.doc_id, after=4)] == [5]
    assert history.changes(log.doc_id, after=5) == []


def test_cached_replay_goes_back_in_time_and_is_extended_as_the_log_grows(store, log):
    history = History(store)
    with history.at(log.doc_id) as r:
        assert str(r.text) == log.versions[5]
    with history.at(log.doc_id, 2) as r:  # back in time: a fresh replay
        assert str(r.text) == log.versions[2]
    with history.at(log.doc_id) as r:  # the newest is still right
        assert str(r.text) == log.versions[5] and r.seq == 5
    log.edit("alice", append(" Fin."), at_s=4100)
    with history.at(log.doc_id) as r:  # extended by the new entry
        assert str(r.text) == "Hello there. day. It rains. Fin." and r.seq == 6
    assert [c.seq for c in history.changes(log.doc_id)] == [1, 2, 3, 4, 5, 6]


# -- diff -------------------------------------------------------------------------------------


def test_diff_replacement_is_exact_and_attributed(store, log):
    ops = attributed_diff(History(store), log.doc_id, 2, 3)
    assert brief(ops) == [
        ("equal", "Hello ", None),
        ("delete", "world", "alice"),  # attributed to the entry that wrote the deleted text
        ("insert", "there", "alice"),
        ("equal", ". Nice day.", None),
    ]


def test_diff_across_authors_and_an_agent_run(store, log):
    ops = attributed_diff(History(store), log.doc_id, 1, 5)
    assert brief(ops) == [
        ("equal", "Hello ", None),
        ("delete", "world", "alice"),
        ("insert", "there", "alice"),
        ("equal", ".", None),
        ("insert", " day.", "bob"),  # Bob's " Nice day." less the "Nice " he deleted again
        ("insert", " It rains.", "editor"),
    ]
    agent = ops[-1]
    assert agent["kind"] == "agent" and agent["run_id"] == "run-1" and agent["model"] == "smol"
    assert agent["steering"] == AGENT_META["steering"]
    assert all("author_id" not in o for o in ops if o["op"] == "equal")


def test_diff_deletion_of_another_authors_text(store, log):
    ops = attributed_diff(History(store), log.doc_id, 4, 5)
    assert brief(ops) == [
        ("equal", "Hello there. ", None),
        ("delete", "Nice ", "bob"),
        ("equal", "day. It rains.", None),
    ]


def test_diff_splits_inserts_by_entry(store, log):
    ops = attributed_diff(History(store), log.doc_id, 0, 2)
    assert brief(ops) == [("insert", "Hello world.", "alice"), ("insert", " Nice day.", "bob")]


@pytest.mark.parametrize("lo,hi", [(0, 5), (1, 5), (2, 4), (3, 5), (3, 3), (5, 5)])
def test_diff_reconstructs_both_versions(store, log, lo, hi):
    ops = attributed_diff(History(store), log.doc_id, lo, hi)
    assert "".join(o["text"] for o in ops if o["op"] != "insert") == log.versions[lo]
    assert "".join(o["text"] for o in ops if o["op"] != "delete") == log.versions[hi]
    if lo == hi:
        assert all(o["op"] == "equal" for o in ops)


@pytest.mark.parametrize("lo,hi", [(5, 1), (4, 2)])
def test_diff_backwards_in_time(store, log, lo, hi):
    ops = attributed_diff(History(store), log.doc_id, lo, hi)
    assert "".join(o["text"] for o in ops if o["op"] != "insert") == log.versions[lo]
    assert "".join(o["text"] for o in ops if o["op"] != "delete") == log.versions[hi]


def test_diff_of_an_empty_document_is_empty(store, log):
    assert attributed_diff(History(store), log.doc_id, 0, 0) == []


def test_diff_ids_alone():
    chars = {1: "a", 2: "b", 3: "c", 4: "X", (2 << 32) | 0: "Y"}
    ops = diff_ids([1, 2, 3], [1, 4, 3, (2 << 32)], chars)
    assert [(o["op"], o["text"]) for o in ops] == [("equal", "a"), ("delete", "b"), ("insert", "X"), ("equal", "c"),
                                                   ("insert", "Y")]
    assert diff_ids([], [], {}) == []
    # continuation bytes of multi-byte characters (negative slots) are not characters
    assert [(o["op"], o["text"]) for o in diff_ids([1, -2, 2], [1, -2, 2], chars)] == [("equal", "ab")]


# -- blame ------------------------------------------------------------------------------------


def test_blame_spans(store, log):
    with History(store).at(log.doc_id) as r:
        spans = r.blame()
    assert "".join(s["text"] for s in spans) == log.versions[5]
    assert [(s["text"], s["author_id"], s["kind"], s["seq"]) for s in spans] == [
        ("Hello there.", "alice", "human", 1),  # two entries by Alice, one span
        (" day.", "bob", "human", 2),
        (" It rains.", "editor", "agent", 4),
    ]
    assert spans[0]["author_name"] == "Alice" and "run_id" not in spans[0]
    assert spans[2]["run_id"] == "run-1" and spans[2]["model"] == "smol"
    assert spans[2]["steering"] == AGENT_META["steering"]


def test_blame_at_an_earlier_position(store, log):
    with History(store).at(log.doc_id, 3) as r:
        spans = r.blame()
        assert r.seq == 3
    assert [(s["text"], s["author_id"]) for s in spans] == [("Hello there.", "alice"), (" Nice day.", "bob")]
    with History(store).at(log.doc_id, 0) as r:
        assert r.blame() == []


def test_blame_separates_runs_of_the_same_agent(store):
    log = Log(store)
    log.edit("alice", insert(0, "Start."), at_s=0)
    log.edit("editor", append(" One."), at_s=10, kind="agent", meta={"run_id": "r1"})
    log.edit("editor", append(" Two."), at_s=20, kind="agent", meta={"run_id": "r2"})
    log.edit("editor", append(" More."), at_s=30, kind="agent", meta={"run_id": "r2"})
    with History(store).at(log.doc_id) as r:
        spans = r.blame()
    assert [(s["text"], s["author_id"], s.get("run_id")) for s in spans] == [
        ("Start.", "alice", None), (" One.", "editor", "r1"), (" Two. More.", "editor", "r2")]


def test_blame_interleaved_typing(store):
    log = Log(store)
    log.edit("alice", insert(0, "ac"), at_s=0)
    log.edit("bob", insert(1, "b"), at_s=1)
    log.edit("alice", append("d"), at_s=2)
    with History(store).at(log.doc_id) as r:
        spans = r.blame()
    assert [(s["text"], s["author_id"], s["seq"]) for s in spans] == [
        ("a", "alice", 1), ("b", "bob", 2), ("cd", "alice", 1)]


def test_multibyte_text_in_blame_diff_and_versions(store):
    """pycrdt positions are UTF-8 bytes; history must still speak characters."""
    log = Log(store)
    log.edit("alice", insert(0, "Café ☕ naïve."), at_s=0)
    log.edit("bob", delete_text("☕"), insert(5, "🍵 tea"), at_s=5)
    log.edit("alice", append(" Über."), at_s=10)
    assert log.versions[-1] == "Café 🍵 tea naïve. Über."
    history = History(store)
    with history.at(log.doc_id) as r:
        assert str(r.text) == log.versions[-1]
        spans = r.blame()
        assert len(r.char_ids()) == len(log.versions[-1])
    assert [(s["text"], s["author_id"]) for s in spans] == [
        ("Café ", "alice"), ("🍵 tea", "bob"), (" naïve. Über.", "alice")]
    changes = history.changes(log.doc_id)
    assert (changes[1].inserted, changes[1].deleted) == ("🍵 tea", "☕")
    ops = attributed_diff(history, log.doc_id, 1, 2)
    assert brief(ops) == [("equal", "Café ", None), ("delete", "☕", "alice"), ("insert", "🍵 tea", "bob"),
                          ("equal", " naïve.", None)]
    for seq, expected in enumerate(log.versions):
        assert content_text(store.load(log.doc_id, at_seq=seq).state) == expected


# -- sessions ---------------------------------------------------------------------------------


def _sessions(store: Store, doc_id: str, gap_s: float) -> list[dict[str, Any]]:
    """What ``GET /sessions?gap=`` computes: the changes, and the characters alive at the end."""
    history = History(store)
    changes = history.changes(doc_id)
    with history.at(doc_id) as r:
        kept = set(r.ids)
    return sessions(changes, gap_s, kept)


def _figures(session: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    return {(a["author_id"], a["kind"]): (a["written"], a["kept"], a["deleted"], a["entries"])
            for a in session["authors"]}


def test_sessions_split_by_idle_gap_with_per_author_figures(store, log):
    out = _sessions(store, log.doc_id, gap_s=600)
    assert len(out) == 2
    first, second = out
    assert (first["start"], first["end"], first["entries"]) == (
        T0.isoformat(), (T0 + timedelta(seconds=60)).isoformat(), 3)
    assert (second["start"], second["end"], second["entries"]) == (
        (T0 + timedelta(seconds=4000)).isoformat(), (T0 + timedelta(seconds=4030)).isoformat(), 2)
    #                                written kept deleted entries
    assert _figures(first) == {("alice", "human"): (17, 12, 5, 2),  # "Hello world." + "there", "world" gone
                               ("bob", "human"): (10, 5, 0, 1)}  # " Nice day.", later cut to " day."
    assert _figures(second) == {("editor", "agent"): (10, 10, 0, 1),
                                ("bob", "human"): (0, 0, 5, 1)}  # deleted his own "Nice "
    assert [a["author_id"] for a in first["authors"]] == ["alice", "bob"]  # in order of appearance
    names = {a["author_id"]: a["author_name"] for s in out for a in s["authors"]}
    assert names == {"alice": "Alice", "bob": "Bob", "editor": "Editor"}


def test_session_gap_boundary(store, log):
    """A pause of exactly ``gap`` seconds stays in the session; a longer one ends it."""
    assert [s["entries"] for s in _sessions(store, log.doc_id, gap_s=30)] == [3, 2]
    assert [s["entries"] for s in _sessions(store, log.doc_id, gap_s=29.9)] == [1, 1, 1, 1, 1]
    assert [s["entries"] for s in _sessions(store, log.doc_id, gap_s=3940)] == [5]
    assert [s["entries"] for s in _sessions(store, log.doc_id, gap_s=3939)] == [3, 2]


def test_one_session_totals(store, log):
    (only,) = _sessions(store, log.doc_id, gap_s=10**6)
    assert only["entries"] == 5
    assert _figures(only) == {("alice", "human"): (17, 12, 5, 2), ("bob", "human"): (10, 5, 5, 2),
                              ("editor", "agent"): (10, 10, 0, 1)}
    kept_total = sum(a["kept"] for a in only["authors"])
    assert kept_total == len(log.versions[-1])  # every surviving character is somebody's


def test_sessions_keep_kinds_apart(store):
    """The same person's own edits and the hub's revert on their behalf are separate rows."""
    log = Log(store)
    log.edit("alice", insert(0, "abc"), at_s=0)
    log.edit("alice", delete_text("b"), at_s=1, kind="system", meta={"revert": {"author_id": "bob"}})
    (only,) = _sessions(store, log.doc_id, gap_s=60)
    assert _figures(only) == {("alice", "human"): (3, 2, 0, 1), ("alice", "system"): (0, 0, 1, 1)}


def test_sessions_of_an_empty_log(store):
    assert sessions([], 60, set()) == []
    log = Log(store)
    assert _sessions(store, log.doc_id, 60) == []
