"""Session history from the attributed log: per-character identity, blame, diffs, timelines.

Yjs knows which client inserted each character, but pycrdt does not expose item ids, and a client
id says nothing about the person, agent or steering behind it. So history is rebuilt the simple
way: re-apply the log in order and follow ``content``'s text deltas, giving every inserted
character an id ``(seq << 32) | offset`` — the log entry that wrote it and its place in that entry.
From those ids: blame (who wrote each surviving character), exact diffs between versions (the
relative order of two characters never changes in a CRDT, so aligning by id is a perfect diff),
and the "left origin" of each character so that reverted deletions go back where they were.
Reverts are planned here too: which characters to remove and which to restore, as one update.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from array import array
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import pycrdt

from .auth import Identity
from .exceptions import InvalidRequest, Unavailable, recoverable
from .store import Store, as_utc
from .updates import edit_copy

if TYPE_CHECKING:
    from .rooms import Rooms

__all__ = ["Replay", "Change", "Author", "History", "Revert", "RevertScope", "diff_ids", "sessions"]

OFFSET_BITS = 32
START = -1  # the "left neighbour" of a character inserted at the very beginning


def seq_of(char_id: int) -> int:
    return char_id >> OFFSET_BITS


@dataclass(frozen=True, slots=True)
class Author:
    author_id: str
    author_name: str
    kind: str
    run_id: str | None = None
    steering: Any = None
    model: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"author_id": self.author_id, "author_name": self.author_name, "kind": self.kind}
        if self.run_id:
            out["run_id"] = self.run_id
        if self.steering is not None:
            out["steering"] = self.steering
        if self.model:
            out["model"] = self.model
        return out


@dataclass(slots=True)
class Change:
    """What one log entry did to the text."""

    seq: int
    at: datetime
    author: Author
    client_id: int | None
    meta: dict[str, Any]
    inserted: str = ""
    deleted: str = ""
    #: character ids this entry inserted / deleted (for revert and stats)
    inserted_ids: list[int] = field(default_factory=list)
    deleted_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": as_utc(self.at).isoformat(),
            **self.author.as_dict(),
            "client_id": self.client_id,
            "inserted": self.inserted,
            "deleted": self.deleted,
        }


def author_of(row) -> Author:
    meta = row.meta or {}
    return Author(row.author_id, row.author_name, row.author_kind, meta.get("run_id"), meta.get("steering"), meta.get("model"))


class Replay:
    """A document re-built entry by entry, with an id for every character it ever held."""

    def __init__(self) -> None:
        self.doc = pycrdt.Doc()
        self.text = self.doc.get("content", type=pycrdt.Text)
        self.seq = 0
        self.ids = array("q")  # ids of the characters currently in the text, in order
        self.chars: dict[int, str] = {}  # every character ever inserted
        self.left_of: dict[int, int] = {}  # its left neighbour when it was inserted
        self.authors: dict[int, Author] = {}  # seq -> who wrote that entry
        self.changes: list[Change] = []  # what every entry did, in order
        self._change: Change | None = None
        self.text.observe(self._on_delta)

    def apply(self, row) -> Change:
        change = Change(row.seq, row.created_at, author_of(row), row.client_id, row.meta or {})
        self.authors[row.seq] = change.author
        self._change = change
        self.doc.apply_update(row.data)
        self._change = None
        self.seq = row.seq
        self.changes.append(change)
        return change

    def _on_delta(self, event) -> None:
        # pycrdt counts text positions in UTF-8 bytes, so ``ids`` has one slot per byte: a
        # character's first byte holds its id, its continuation bytes hold ``-id - 1``.
        change = self._change
        if change is None:
            return
        pos = 0
        ids = self.ids
        for op in event.delta:
            if "retain" in op:
                pos += op["retain"]
            elif "insert" in op:
                s = op["insert"] if isinstance(op["insert"], str) else "\ufffc"  # an embed
                start = (change.seq << OFFSET_BITS) + len(change.inserted_ids)
                left = char_at(ids, pos - 1) if pos else START
                slots = array("q")
                for cid, ch in zip(range(start, start + len(s)), s):
                    self.chars[cid] = ch
                    self.left_of[cid] = left
                    left = cid
                    slots.append(cid)
                    for _ in range(len(ch.encode()) - 1):
                        slots.append(-cid - 1)
                ids[pos:pos] = slots
                change.inserted_ids.extend(range(start, start + len(s)))
                change.inserted += s
                pos += len(slots)
            elif "delete" in op:
                n = op["delete"]
                gone = [c for c in ids[pos : pos + n] if c >= 0]
                del ids[pos : pos + n]
                change.deleted_ids.extend(gone)
                change.deleted += "".join(self.chars[c] for c in gone)

    def char_ids(self) -> list[int]:
        """Ids of the characters in the text, in order (one per character, not per byte)."""
        return [c for c in self.ids if c >= 0]

    def blame(self) -> list[dict[str, Any]]:
        """The current text as spans of consecutive characters by the same author and run."""
        spans: list[dict[str, Any]] = []
        chars, authors = self.chars, self.authors
        cur_author, buf, first_seq = None, [], 0
        for cid in self.ids:
            if cid < 0:
                continue
            author = authors[cid >> OFFSET_BITS]
            if author is not cur_author and author != cur_author:
                if buf:
                    spans.append({"text": "".join(buf), "seq": first_seq, **cur_author.as_dict()})
                cur_author, buf, first_seq = author, [], cid >> OFFSET_BITS
            buf.append(chars[cid])
        if buf:
            spans.append({"text": "".join(buf), "seq": first_seq, **cur_author.as_dict()})
        return spans

    def position_after(self, char_id: int, alive: set[int]) -> int:
        """Byte position for text that followed ``char_id``: after its nearest surviving left origin."""
        while char_id != START and char_id not in alive:
            char_id = self.left_of[char_id]
        if char_id == START:
            return 0
        return self.ids.index(char_id) + len(self.chars[char_id].encode())

    def byte_index(self, char_id: int) -> int:
        return self.ids.index(char_id)


def char_at(ids: array, pos: int) -> int:
    """The character id whose bytes include position ``pos``."""
    cid = ids[pos]
    return cid if cid >= 0 else -cid - 1


def diff_ids(a: Iterable[int], b: Iterable[int], chars: dict[int, str]) -> list[dict[str, Any]]:
    """Exact diff of two versions given their character ids (both are in the CRDT's order)."""
    a = [c for c in a if c >= 0]
    b = [c for c in b if c >= 0]
    in_a, in_b = set(a), set(b)
    ops: list[dict[str, Any]] = []

    def emit(op: str, cid: int) -> None:
        if ops and ops[-1]["op"] == op and ops[-1]["_seq"] == seq_of(cid):
            ops[-1]["text"] += chars[cid]
        else:
            ops.append({"op": op, "text": chars[cid], "_seq": seq_of(cid)})

    i = j = 0
    while i < len(a) or j < len(b):
        if i < len(a) and a[i] not in in_b:
            emit("delete", a[i])
            i += 1
        elif j < len(b) and b[j] not in in_a:
            emit("insert", b[j])
            j += 1
        else:  # a[i] == b[j]: a common character
            emit("equal", a[i])
            i += 1
            j += 1
    return ops


class History:
    """Replays kept per document (the newest few), extended incrementally as the log grows."""

    def __init__(self, store: Store, keep: int = 4) -> None:
        self.store = store
        self.keep = keep
        self._replays: OrderedDict[str, Replay] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, doc_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(doc_id, threading.Lock())

    @contextmanager
    def at(self, doc_id: str, upto: int | None = None) -> Iterator[Replay]:
        """Hold a replay at ``upto`` (default: the end of the log). Call from a worker thread.

        The cached replay is extended when it is behind; going back in time replays afresh and
        leaves the cache alone, so the newest state stays warm.
        """
        with self._lock(doc_id):
            cached = self._replays.get(doc_id)
            fresh = cached is None or (upto is not None and cached.seq > upto)
            replay = Replay() if fresh else cached
            for row in self.store.updates(doc_id, after=replay.seq, upto=upto):
                if not self.store.admits(doc_id, row.seq, row.data):
                    replay.seq = row.seq  # quarantined: passed over, never applied
                    continue
                try:
                    replay.apply(row)
                except BaseException as exc:  # noqa: BLE001 - pycrdt refused (or panicked on) it
                    if not recoverable(exc):
                        raise
                    self.store.quarantined[(doc_id, row.seq)] = f"{type(exc).__name__}: {exc}"
                    replay.seq = row.seq
            if not fresh or cached is None:
                self._replays[doc_id] = replay
                self._replays.move_to_end(doc_id)
                while len(self._replays) > self.keep:
                    self._replays.popitem(last=False)
            yield replay

    def changes(self, doc_id: str, after: int = 0, upto: int | None = None) -> list[Change]:
        """What entries ``after < seq <= upto`` did (from the cached replay when it covers them)."""
        with self.at(doc_id, upto) as replay:
            return [c for c in replay.changes if c.seq > after]

    def _logged(self, doc_id: str, seq: int) -> bool:
        return any(True for _ in self.store.updates(doc_id, after=seq - 1, upto=seq))

    def position(self, doc_id: str, raw: str | None, default: int | None = None, *,
                 start: bool = False) -> int | None:
        """A log position from a request: a sequence number, an ISO-8601 time (the newest entry at
        or before it), or ``default`` when absent. ``start``: the first entry of a range that
        begins then (a time: the first entry at or after it). Call from a worker thread."""
        if raw is None or raw == "":
            return default
        if raw.isdigit():
            return int(raw)
        try:
            at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidRequest(f"{raw!r} is neither a sequence number nor an ISO-8601 time") from exc
        if start:
            return self.store.seq_at_time(doc_id, as_utc(at), strictly_before=True) + 1
        return self.store.seq_at_time(doc_id, as_utc(at))

    def diff(self, doc_id: str, lo: int, hi: int) -> list[dict[str, Any]]:
        """The attributed ops that turn the text at ``lo`` into the text at ``hi``. Either may be
        the later one: the later replay knows every character of both (and who wrote it)."""
        first, second = sorted((lo, hi))
        with self.at(doc_id, first) as r:
            early = r.ids[:]
        with self.at(doc_id, second) as r:
            a, b = (early, r.ids) if lo <= hi else (r.ids, early)
            ops = diff_ids(a, b, r.chars)
            for op in ops:
                author = r.authors.get(op.pop("_seq"))
                if author is not None and op["op"] != "equal":
                    op.update(author.as_dict())
        return ops

    def plan_revert(self, doc_id: str, state: bytes, seq: int, scope: RevertScope) -> Revert:
        """The update that undoes ``scope``'s entries up to ``seq`` on ``state`` (the document at
        ``seq``): their surviving characters deleted, their deletions restored where they were.
        Call from a worker thread; nothing is submitted."""
        targets = [ch for ch in self.changes(doc_id, upto=seq) if scope.matches(ch)]
        inserted = {c for ch in targets for c in ch.inserted_ids}
        deleted = [c for ch in targets for c in ch.deleted_ids]
        # Edits in the byte positions of the replay at seq, which is ``state``.
        edits: list[tuple[int, int, Any]] = []  # (position, 0 delete | 1 insert, bytes | text)
        with self.at(doc_id, seq) as r:
            alive = set(r.char_ids())
            for pos, c in enumerate(r.ids):
                if c >= 0 and c in inserted:
                    edits.append((pos, 0, len(r.chars[c].encode())))
            restores: list[list] = []
            for c in deleted:
                if c in alive or c in inserted:
                    continue
                pos = r.position_after(r.left_of[c], alive)
                if restores and restores[-1][0] == pos:
                    restores[-1][2] += r.chars[c]  # a run of deleted text comes back whole
                else:
                    restores.append([pos, 1, r.chars[c]])
            edits += [tuple(x) for x in restores]

        def apply(doc: pycrdt.Doc) -> None:
            text = doc.get("content", type=pycrdt.Text)
            # right to left, deletions before insertions at the same place: no shifting
            for pos, kind, arg in sorted(edits, key=lambda e: (-e[0], e[1])):
                if kind == 0:
                    del text[pos : pos + arg]
                else:
                    text.insert(pos, arg)

        update = edit_copy(state, apply) if edits else None
        removed = sum(1 for e in edits if e[1] == 0)
        restored = sum(len(e[2]) for e in edits if e[1] == 1)
        return Revert(update, removed, restored, [ch.seq for ch in targets])

    async def revert(self, rooms: "Rooms", doc_id: str, scope: RevertScope, by: Identity,
                     request: dict[str, Any]) -> Revert:
        """Undo ``scope``'s entries as one new edit, logged as the hub's own (author kind
        ``system``) on behalf of ``by``, and committed before this returns. ``request`` is
        what the log entry records about what was asked."""
        room = await rooms.acquire(doc_id)
        try:
            seq, state = room.state()
            plan = await asyncio.to_thread(self.plan_revert, doc_id, state, seq, scope)
            if plan.update is None:
                return plan
            system = Identity(by.user_id, by.name, by.role, doc_id, by.token_id, {}, system=True)
            meta = {"revert": {**request, "entries": len(plan.reverted)}, "requested_by": by.name}
            entry = room.submit_entry(plan.update, system, meta=meta)
            await rooms.journal.drain()  # with a cluster the database numbers the entry as it commits
            if not entry.seq or not await asyncio.to_thread(self._logged, doc_id, entry.seq):
                raise Unavailable("the revert was not committed: the database refused it; nothing changed")
            return dataclasses.replace(plan, seq=entry.seq)
        finally:
            rooms.release(room)


@dataclass(frozen=True, slots=True)
class RevertScope:
    """Which log entries a revert undoes: those that meet every condition given (None: any)."""

    run_id: str | None = None
    author_id: str | None = None
    #: Sequence numbers, both ends included.
    from_seq: int | None = None
    to_seq: int | None = None

    def matches(self, change: Change) -> bool:
        if self.run_id and change.author.run_id != self.run_id:
            return False
        if self.author_id and change.author.author_id != self.author_id:
            return False
        if self.from_seq is not None and change.seq < self.from_seq:
            return False
        return self.to_seq is None or change.seq <= self.to_seq


@dataclass(frozen=True, slots=True)
class Revert:
    """A revert: its update (None: nothing to undo), what it removes and restores, and the log
    entry it became (``seq``, once submitted)."""

    update: bytes | None
    #: Characters it deletes (the scope's surviving insertions).
    removed: int
    #: Characters it puts back (the scope's deletions that nothing else undid).
    restored: int
    #: The sequence numbers of the entries it undoes.
    reverted: list[int]
    seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "removed": self.removed, "restored": self.restored, "reverted": self.reverted}


def sessions(changes: Iterable[Change], gap_s: float, kept_ids: set[int]) -> list[dict[str, Any]]:
    """Group changes into sessions separated by idle gaps, with per-author figures."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    last_at: datetime | None = None
    for ch in changes:
        at = as_utc(ch.at)
        if current is None or (last_at is not None and (at - last_at).total_seconds() > gap_s):
            current = {"start": at, "end": at, "entries": 0, "authors": {}}
            out.append(current)
        current["end"] = at
        current["entries"] += 1
        last_at = at
        key = (ch.author.author_id, ch.author.kind)
        stats = current["authors"].setdefault(
            key, {"author_id": ch.author.author_id, "author_name": ch.author.author_name, "kind": ch.author.kind,
                  "written": 0, "kept": 0, "deleted": 0, "entries": 0}
        )
        stats["entries"] += 1
        stats["written"] += len(ch.inserted_ids)
        stats["kept"] += sum(1 for c in ch.inserted_ids if c in kept_ids)
        stats["deleted"] += len(ch.deleted_ids)
    for s in out:
        s["start"], s["end"] = s["start"].isoformat(), s["end"].isoformat()
        s["authors"] = list(s["authors"].values())
    return out
