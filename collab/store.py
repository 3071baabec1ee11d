"""Durable storage: documents, the attributed update log, snapshots and tokens.

Synchronous SQLAlchemy on purpose: the hub calls it from one worker thread, or for small SQLite
batches on the event loop itself (see ``journal.py``), batching many updates per transaction; an
async driver would add a hop per statement and buy nothing. SQLite runs in WAL mode; PostgreSQL
works unchanged through ``postgresql+psycopg``.
"""

from __future__ import annotations

import logging
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable, Iterator

import pycrdt
from sqlalchemy import (BigInteger, DateTime, ForeignKey, String, Table, create_engine, delete, event, func, insert,
                        select, update)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, mapped_column

from .exceptions import ProtocolError, TinymorphError, recoverable
from .limits import UpdateLimits, check_update
from .models import Base, Document, Snapshot, Token, Update, utcnow

__all__ = ["Store", "LogEntry", "LoadedDocument", "StaleLease", "content_text", "decodes", "migrate"]

log = logging.getLogger("tinymorph.store")

#: The PostgreSQL advisory lock key migrations run under ("tmig" as a number).
MIGRATION_LOCK = 0x746D6967


class Lease(Base):
    """The newest fencing token given out for a document's background work (see ``take_lease``)."""

    __tablename__ = "leases"

    doc_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str] = mapped_column(String(200))
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StaleLease(TinymorphError):
    """A write of a document's background work (a snapshot, retention, a run started by a
    trigger) by a process whose lease on the document another process has taken since: its
    fencing token is no longer the document's newest. Refused; nothing was written."""

    http_status = 409


@dataclass(slots=True)
class LogEntry:
    """One row of the update log, as the hub builds it before commit."""

    doc_id: str
    seq: int
    data: bytes
    author_id: str
    author_name: str
    author_kind: str
    client_id: int | None = None
    created_at: datetime = field(default_factory=utcnow)
    meta: dict[str, Any] = field(default_factory=dict)
    #: The room's local order of submission (not stored). One process: equal to ``seq``. Several
    #: (``Store(allocate_seq=True)``): ``seq`` is given by the database at commit and the ticket
    #: keeps this process's bookkeeping; 0 for an entry another process committed.
    ticket: int = 0


@dataclass(slots=True)
class LoadedDocument:
    """What a room starts from: the merged state and the log position it covers."""

    state: bytes | None
    seq: int
    snapshot_seq: int
    #: Log positions skipped because their entry breaks the structural limits (see ``Store.admits``).
    quarantined: tuple[int, ...] = ()


class _InsertMany:
    """One INSERT of many log entries on a DBAPI connection, with the statement and the column
    types' bind processors SQLAlchemy compiled once.

    Why not ``conn.execute(insert(...), rows)``: Core builds a connection, transaction and
    execution context on every call, ~150 us of Python for one row, more than the whole rest
    of an update's path through the hub. The SQL text and value conversion stay SQLAlchemy's;
    what this adds is reading the values straight off the entries and converting each
    socket's ``meta`` dict (the same object on every keystroke) once, not once per row.
    """

    MEMO_MAX = 512

    def __init__(self, engine: Engine, table: Table) -> None:
        dialect = engine.dialect
        compiled = insert(table).compile(dialect=dialect)
        self.sql = compiled.string
        #: Parameter order: positional for SQLite's ``?``, the table's columns for named styles.
        self.positional = bool(compiled.positiontup)
        self.keys: tuple[str, ...] = tuple(compiled.positiontup) if self.positional else tuple(c.key for c in table.c)
        self.values = attrgetter(*self.keys)  # LogEntry's fields are named after the columns
        procs = {c.key: p for c in table.c if (p := c.type.dialect_impl(dialect).bind_processor(dialect))}
        self.procs = [(i, procs[k]) for i, k in enumerate(self.keys) if k in procs and k != "meta"]
        self.meta_proc = procs.get("meta")
        self.meta_at = self.keys.index("meta")
        #: id(meta dict) -> (the dict, its bound value); the dict is kept so its id stays its own.
        self._memo: dict[int, tuple[Any, Any]] = {}
        self.dbapi_error = dialect.loaded_dbapi.Error

    def params(self, entry: LogEntry) -> tuple | dict[str, Any]:
        values = list(self.values(entry))
        for i, proc in self.procs:
            values[i] = proc(values[i])
        if self.meta_proc is not None:
            meta = values[self.meta_at]
            hit = self._memo.get(id(meta))
            if hit is None or hit[0] is not meta:
                if len(self._memo) >= self.MEMO_MAX:
                    self._memo.clear()
                hit = self._memo[id(meta)] = (meta, self.meta_proc(meta))
            values[self.meta_at] = hit[1]
        return tuple(values) if self.positional else dict(zip(self.keys, values))

    def __call__(self, conn: Any, entries: list[LogEntry], *, autocommit: bool = False) -> None:
        """Insert and commit ``entries`` on the DBAPI connection ``conn`` (rolled back on failure).
        ``autocommit``: ``conn`` is a sqlite3 connection in autocommit mode, where one row is its
        own transaction (no BEGIN and COMMIT statements to prepare: about a tenth of a lone
        keystroke's commit) and several rows get an explicit one."""
        params = [self.params(e) for e in entries]
        try:
            cur = conn.cursor()
            if autocommit and len(params) == 1:
                cur.execute(self.sql, params[0])
            elif autocommit:
                cur.execute("BEGIN")
                cur.executemany(self.sql, params)
                cur.execute("COMMIT")
            else:
                cur.executemany(self.sql, params)
                conn.commit()
            cur.close()
        except self.dbapi_error as exc:
            conn.rollback()
            # the same exception classes Core raises (IntegrityError, OperationalError, ...)
            raise DBAPIError.instance(self.sql, None, exc, self.dbapi_error) from exc
        except BaseException:
            conn.rollback()
            raise


#: Structure only, no size limits: a whole document's state, not one client's message.
_STATE_LIMITS = UpdateLimits(max_structs=1 << 40, max_clients=1 << 30, max_string_bytes=1 << 40)


def decodes(state: bytes) -> bool:
    """Whether a joining client can load ``state``: a fresh pycrdt doc applies it, and it reads
    as yjs reads (strict UTF-8 among other things; pycrdt writes some hostile combinations in a
    way neither reads back)."""
    try:
        pycrdt.Doc().apply_update(state)
        check_update(state, _STATE_LIMITS)
    except BaseException as exc:  # noqa: BLE001
        if not recoverable(exc):
            raise
        return False
    return True


class Store:
    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL", echo: bool = False,
                 limits: UpdateLimits | None = None, allocate_seq: bool = False) -> None:
        self.url = url
        #: Several hub processes share this database: ``append`` gives each entry its ``seq``
        #: inside the commit, under the document row's lock (see ``_allocate``).
        self.allocate_seq = allocate_seq
        #: ``(doc_id, seq)`` this process is committing right now (allocated, not yet handed to
        #: the rooms): a backfill that reads one of them leaves it to the commit's own callback.
        self.committing: set[tuple[str, int]] = set()
        #: What an entry must satisfy to be applied when a document is loaded or replayed. The hub
        #: checks updates before they are logged; this keeps an entry logged before those checks
        #: existed (or under looser limits) from crashing every process that loads it.
        self.limits = limits or UpdateLimits()
        #: ``(doc_id, seq)`` of the entries skipped so far by this process, with the reason.
        self.quarantined: dict[tuple[str, int], str] = {}
        #: Several processes: the fencing token this one holds for a document's background work
        #: (``Cluster.fence``; None: it does not hold the lease). Snapshots and retention are
        #: written only under it (see ``fenced``). None here: this process is alone.
        self.fences: Callable[[str], int | None] | None = None
        #: Told ``(doc_id, token)`` when a fenced write found ``token`` stale (from any thread).
        self.on_stale: Callable[[str, int], None] | None = None
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            _create_private(url)
        if allocate_seq and not url.startswith("postgresql"):
            from .exceptions import ConfigError

            raise ConfigError("several hub processes (cluster_url) need PostgreSQL as the database")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        #: An engine for commits made on the event loop itself: SQLite without fsync commits a
        #: small batch in well under a millisecond, cheaper than the hop to a worker thread. It
        #: waits at most 20 ms for a lock; the journal falls back to the thread when it would.
        self.inline_engine: Engine | None = None
        self._inline_conn: Any = None
        if self.is_sqlite:
            sync = sqlite_synchronous.upper()
            self._sqlite_pragmas(self.engine, sync, busy_ms=30000)
            if sync in ("OFF", "NORMAL"):
                self.inline_engine = create_engine(url, **kwargs, pool_size=1, max_overflow=0)
                self._sqlite_pragmas(self.inline_engine, sync, busy_ms=20, autocommit=True)
        self._insert_updates = _InsertMany(self.engine, Update.__table__)

    @property
    def can_append_inline(self) -> bool:
        return self.inline_engine is not None

    @staticmethod
    def _sqlite_pragmas(engine: Engine, sync: str, busy_ms: int, autocommit: bool = False) -> None:
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # WAL: readers never block the writer
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute(f"PRAGMA synchronous={sync}")
            dbapi_conn.execute("PRAGMA foreign_keys=ON")
            dbapi_conn.execute(f"PRAGMA busy_timeout={busy_ms}")
            if autocommit:  # only the inline log writer: see _InsertMany
                dbapi_conn.isolation_level = None

    # -- schema ---------------------------------------------------------------------------

    def migrate(self, *extensions: Path) -> None:
        """Bring the schema to the newest revision (idempotent): the hub's tables, then those of
        each extension's Alembic script directory (each keeps its own version table)."""
        from .schema import upgrade

        if self.engine.dialect.name != "postgresql":
            return upgrade(self.engine, *extensions)
        # Several hub processes starting at once on one database: one migrates, the others wait
        # for it (a session-level advisory lock) and then find nothing to do.
        from sqlalchemy import text

        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            try:
                upgrade(self.engine, *extensions)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
                conn.commit()

    def close(self) -> None:
        self.engine.dispose()
        if self._inline_conn is not None:
            self._inline_conn.close()
            self._inline_conn = None
        if self.inline_engine is not None:
            self.inline_engine.dispose()

    # -- documents ------------------------------------------------------------------------

    def create_document(self, title: str, owner_id: str, doc_id: str | None = None, *,
                        exist_ok: bool = False) -> dict[str, Any]:
        """``exist_ok``: a document created meanwhile under ``doc_id`` (by another hub process
        joining it first) is no error."""
        row = {"id": doc_id or uuid.uuid4().hex, "title": title, "owner_id": owner_id, "created_at": utcnow()}
        self._create(row["id"], title, owner_id, row=row, exist_ok=exist_ok)
        return row

    def _create(self, doc_id: str, title: str, owner_id: str, *, row: dict[str, Any] | None = None,
                exist_ok: bool = True) -> bool:
        """Insert a document; False when it exists already (and ``exist_ok``)."""
        from sqlalchemy.exc import IntegrityError

        row = row or {"id": doc_id, "title": title, "owner_id": owner_id, "created_at": utcnow()}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(Document), row)
        except IntegrityError:
            if not (exist_ok and self.get_document(doc_id) is not None):
                raise
            return False
        return True

    def get_document(self, doc_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(Document.__table__).where(Document.id == doc_id)).mappings().first()
            return dict(row) if row else None

    def list_documents(self, owner_or_member: str | None = None) -> list[dict[str, Any]]:
        """All documents, or those a user owns or holds a live token for."""
        q = select(Document.__table__).order_by(Document.created_at)
        if owner_or_member is not None:
            member = select(Token.doc_id).where(Token.user_id == owner_or_member, Token.revoked_at.is_(None),
                                                Token.expires_at > utcnow())
            q = q.where((Document.owner_id == owner_or_member) | Document.id.in_(member))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def rename_document(self, doc_id: str, title: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(Document).where(Document.id == doc_id).values(title=title))

    # -- the log --------------------------------------------------------------------------

    def append(self, entries: list[LogEntry], *, inline: bool = False) -> None:
        """Commit a batch of log entries in one transaction (the group commit). ``inline``: on
        the event loop's own SQLite connection (only when ``can_append_inline``)."""
        if not entries:
            return
        if inline:
            if self._inline_conn is None:
                self._inline_conn = self.inline_engine.raw_connection()  # held: no pool round trip
            self._insert_updates(self._inline_conn, entries, autocommit=True)
            return
        conn = self.engine.raw_connection()
        try:
            if self.allocate_seq:
                return self._append_allocating(conn, entries)
            self._insert_updates(conn, entries)
        finally:
            conn.close()  # back to the pool

    def _append_allocating(self, conn: Any, entries: list[LogEntry]) -> None:
        """Give the entries their sequence numbers and insert them, in one transaction.

        Each document's row is locked (``FOR NO KEY UPDATE``, in id order so two batches never
        deadlock) before its last ``seq`` is read, so two processes committing to one document
        take turns: the second reads the first's entries once they are committed, and numbers
        its own after them. A rollback gives the numbers back with the rows: no gap, no
        collision (the primary key would refuse one anyway)."""
        docs = sorted({e.doc_id for e in entries})
        taken: list[tuple[str, int]] = []
        try:
            cur = conn.cursor()
            cur.execute("SELECT id FROM documents WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE", (docs,))
            cur.execute(
                "SELECT d, max(s) FROM (SELECT doc_id AS d, max(seq) AS s FROM updates WHERE doc_id = ANY(%s) "
                "GROUP BY doc_id UNION ALL SELECT doc_id, max(seq) FROM snapshots WHERE doc_id = ANY(%s) "
                "GROUP BY doc_id) AS m GROUP BY d", (docs, docs))
            last = dict.fromkeys(docs, 0) | {d: s or 0 for d, s in cur.fetchall()}
            cur.close()
            for e in entries:
                last[e.doc_id] = e.seq = last[e.doc_id] + 1
                taken.append((e.doc_id, e.seq))
            self.committing.update(taken)  # before the commit makes them visible to a backfill
        except BaseException:
            conn.rollback()
            raise
        try:
            self._insert_updates(conn, entries)
        except BaseException:
            self.committing.difference_update(taken)
            raise

    def committed_locally(self, entries: list[LogEntry]) -> None:
        """The rooms have the entries of a commit: a backfill may read them as anyone's now."""
        if self.committing:
            self.committing.difference_update((e.doc_id, e.seq) for e in entries)

    def entries(self, doc_id: str, after: int, upto: int | None = None) -> list[LogEntry]:
        """Log entries ``after < seq <= upto`` as LogEntry (ticket 0): a gap backfilled."""
        q = select(Update.__table__).where(Update.doc_id == doc_id, Update.seq > after).order_by(Update.seq)
        if upto is not None:
            q = q.where(Update.seq <= upto)
        with self.engine.connect() as conn:
            rows = conn.execute(q.limit(5000)).mappings().all()
        return [LogEntry(r["doc_id"], r["seq"], r["data"], r["author_id"], r["author_name"], r["author_kind"],
                         r["client_id"], as_utc(r["created_at"]), r["meta"] or {}) for r in rows]

    def last_seqs(self, doc_ids: list[str]) -> dict[str, int]:
        """Each document's last log position, in one query (the cluster's periodic check)."""
        if not doc_ids:
            return {}
        q = select(Update.doc_id, func.max(Update.seq)).where(Update.doc_id.in_(doc_ids)).group_by(Update.doc_id)
        with self.engine.connect() as conn:
            return {d: s for d, s in conn.execute(q).all()}

    def last_seq(self, doc_id: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.max(Update.seq), 0)).where(Update.doc_id == doc_id)).scalar_one()

    def open(self, doc_id: str, *, create: bool = False) -> LoadedDocument | None:
        """What a room starts from (``load``), or None for an unknown document unless ``create``
        (then it is created, titled with its id, by whichever process gets there first)."""
        found = self.open_many([doc_id], create=create)[doc_id]
        if isinstance(found, BaseException):
            raise found
        return found

    @contextmanager
    def _driver(self) -> Iterator[Any]:
        """A cursor of a pooled driver connection, in one transaction: committed when the block
        ends, rolled back if it raises; the connection goes back to the pool either way."""
        conn = self.engine.raw_connection()
        try:
            yield conn.cursor()
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    def open_many(self, doc_ids: list[str], *, create: bool = False) -> dict[str, LoadedDocument | None | Exception]:
        """``open`` for several documents in one transaction: a burst of joins (the hub's room
        loader batches them) costs one hop to a worker thread and a few statements, not a few
        per join. Each document's answer is its own: a state that fails to merge is that
        document's exception, not the batch's.

        Plain SQL on the driver (as ``_InsertMany``): SQLAlchemy's per-statement Python cost was
        most of a join's CPU outside the event loop, several times the queries' own."""
        ids = list(dict.fromkeys(doc_ids))
        p = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        marks = ", ".join([p] * len(ids))
        with self._driver() as cur:
            if create:
                # RETURNING names the rows made just now (ON CONFLICT DO NOTHING returns none for
                # the others): those have nothing to read back.
                now = self._created_at()
                cur.execute(f"INSERT INTO documents (id, title, owner_id, created_at) VALUES "
                            + ", ".join([f"({p}, '', {p}, {p})"] * len(ids)) + " ON CONFLICT (id) DO NOTHING RETURNING id",
                            [v for d in ids for v in (d, d, now)])
                made = {row[0] for row in cur.fetchall()}
                known = [d for d in ids if d not in made]
            else:
                made = set()
                cur.execute(f"SELECT id FROM documents WHERE id IN ({marks})", ids)
                present = {row[0] for row in cur.fetchall()}
                known = [d for d in ids if d in present]
            snaps: dict[str, tuple[int, bytes]] = {}
            tails: dict[str, list[tuple[int, bytes]]] = {d: [] for d in known}
            if known:
                km = ", ".join([p] * len(known))
                newest = f"SELECT doc_id, MAX(seq) AS seq FROM snapshots WHERE doc_id IN ({km}) GROUP BY doc_id"
                cur.execute(f"SELECT s.doc_id, s.seq, s.state FROM snapshots s JOIN ({newest}) n "
                            "ON s.doc_id = n.doc_id AND s.seq = n.seq", known)
                snaps = {d: (seq, state) for d, seq, state in cur.fetchall()}
                cur.execute(f"SELECT u.doc_id, u.seq, u.data FROM updates u LEFT JOIN ({newest}) n ON u.doc_id = n.doc_id "
                            f"WHERE u.doc_id IN ({km}) AND u.seq > COALESCE(n.seq, 0) ORDER BY u.doc_id, u.seq",
                            known + known)
                for d, seq, data in cur.fetchall():
                    tails[d].append((seq, data))
        out: dict[str, LoadedDocument | None | Exception] = {d: None for d in ids}
        for d in made:
            out[d] = LoadedDocument(None, 0, 0)
        for d in known:
            try:
                out[d] = self._merged(d, snaps.get(d), tails[d], None, one_by_one=False)
            except Exception as exc:  # noqa: BLE001 - this document's failure, not its batch's
                out[d] = exc
        return out

    def _created_at(self) -> Any:
        """Now, as the driver takes it for ``documents.created_at`` (SQLAlchemy's conversion)."""
        dialect = self.engine.dialect
        proc = Document.__table__.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
        return proc(utcnow()) if proc else utcnow()

    def load(self, doc_id: str, at_seq: int | None = None, *, one_by_one: bool = False) -> LoadedDocument:
        """Newest snapshot at or before ``at_seq`` plus the log tail after it, merged;
        ``one_by_one``: applied one at a time instead, quarantining any that pycrdt refuses or
        panics on (for a state that merged but does not apply)."""
        with self.engine.connect() as conn:
            snap_q = select(Snapshot.seq, Snapshot.state).where(Snapshot.doc_id == doc_id)
            tail_q = select(Update.seq, Update.data).where(Update.doc_id == doc_id)
            if at_seq is not None:
                snap_q = snap_q.where(Snapshot.seq <= at_seq)
                tail_q = tail_q.where(Update.seq <= at_seq)
            snap = conn.execute(snap_q.order_by(Snapshot.seq.desc()).limit(1)).first()
            tail = conn.execute(tail_q.where(Update.seq > (snap.seq if snap else 0)).order_by(Update.seq)).all()
        return self._merged(doc_id, snap, tail, at_seq, one_by_one=one_by_one)

    def _merged(self, doc_id: str, snap: tuple[int, bytes] | None, tail: list[tuple[int, bytes]],
                at_seq: int | None, *, one_by_one: bool) -> LoadedDocument:
        """The snapshot ``(seq, state)`` (or None) and the log's ``(seq, data)`` rows after it,
        merged into one state; entries outside the limits quarantined."""
        snapshot_seq = snap[0] if snap else 0
        if snap is not None and not self.admits(doc_id, -snap[0], snap[1]):
            return self._load_without_snapshots(doc_id, at_seq)
        kept = [(seq, data) for seq, data in tail if self.admits(doc_id, seq, data)]
        parts = ([snap[1]] if snap else []) + [data for _seq, data in kept]
        seq = tail[-1][0] if tail else snapshot_seq
        skipped = tuple(s for s, _d in tail if (doc_id, s) in self.quarantined)
        if not parts:
            return LoadedDocument(None, seq, snapshot_seq, skipped)
        state = None
        if not one_by_one:
            try:
                state = parts[0] if len(parts) == 1 else pycrdt.merge_updates(*parts)
            except BaseException as exc:  # noqa: BLE001 - one entry pycrdt refuses (or panics on): find it
                if not recoverable(exc):
                    raise
        if state is None:
            state = self._merge_one_by_one(doc_id, [(-snap[0], snap[1])] if snap else [], kept)
            skipped = tuple(s for s, _d in tail if (doc_id, s) in self.quarantined)
        return LoadedDocument(state, seq, snapshot_seq, skipped)

    def _merge_one_by_one(self, doc_id: str, *groups: list[tuple[int, bytes]]) -> bytes:
        """Apply entries one at a time, quarantining any that pycrdt refuses or panics on, and
        any after which the doc's own state no longer decodes (pycrdt encodes some hostile
        structs in a way it cannot read back; checked once at the end, then entry by entry)."""
        entries = [item for group in groups for item in group]
        doc = self._apply_each(doc_id, entries, verify=False)
        if decodes(doc.get_update()):
            return doc.get_update()
        return self._apply_each(doc_id, entries, verify=True).get_update()

    def _apply_each(self, doc_id: str, entries: list[tuple[int, bytes]], *, verify: bool) -> pycrdt.Doc:
        doc, kept = pycrdt.Doc(), []
        for seq, data in entries:
            if (doc_id, seq) in self.quarantined:
                continue
            try:
                doc.apply_update(data)
                if verify and not decodes(doc.get_update()):
                    raise ValueError("the document's state no longer decodes after it")
                kept.append(data)
            except BaseException as exc:  # noqa: BLE001
                if not recoverable(exc):
                    raise
                self.quarantined[(doc_id, seq)] = f"{type(exc).__name__}: {exc}"
                log.warning("quarantined log entry %d of %s: pycrdt refuses it (%s)", seq, doc_id, exc)
                doc = pycrdt.Doc()  # it may be partly in: again without it
                for good in kept:
                    doc.apply_update(good)
        return doc

    def _load_without_snapshots(self, doc_id: str, at_seq: int | None) -> LoadedDocument:
        """A snapshot that breaks the limits (taken before they existed): the log is the truth."""
        tail_q = select(Update.seq, Update.data).where(Update.doc_id == doc_id)
        if at_seq is not None:
            tail_q = tail_q.where(Update.seq <= at_seq)
        with self.engine.connect() as conn:
            tail = conn.execute(tail_q.order_by(Update.seq)).all()
        kept = [r.data for r in tail if self.admits(doc_id, r.seq, r.data)]
        skipped = tuple(r.seq for r in tail if (doc_id, r.seq) in self.quarantined)
        seq = tail[-1].seq if tail else 0
        state = (kept[0] if len(kept) == 1 else pycrdt.merge_updates(*kept)) if kept else None
        return LoadedDocument(state, seq, 0, skipped)

    def admits(self, doc_id: str, seq: int, data: bytes) -> bool:
        """Whether a log entry (a snapshot: negative ``seq``) is within the structural limits;
        one that is not is quarantined: skipped, remembered and logged once, never applied."""
        key = (doc_id, seq)
        if key in self.quarantined:
            return False
        try:
            check_update(data, self.limits)
        except ProtocolError as exc:
            self.quarantined[key] = str(exc)
            log.warning("quarantined %s of %s: %s (skipped, never applied)",
                        f"snapshot at {-seq}" if seq < 0 else f"log entry {seq}", doc_id, exc)
            return False
        return True

    def seq_at_time(self, doc_id: str, at: datetime, *, strictly_before: bool = False) -> int:
        """The last log position written at or before ``at`` (0 before the first edit);
        ``strictly_before``: before ``at``, not at it."""
        q = (
            select(Update.seq)
            .where(Update.doc_id == doc_id, Update.created_at < at if strictly_before else Update.created_at <= at)
            .order_by(Update.created_at.desc(), Update.seq.desc())  # one seek on ix_updates_doc_time
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(q).scalar() or 0

    def updates(self, doc_id: str, after: int = 0, upto: int | None = None) -> Iterator[Update]:
        """Log entries in order, streamed (the history views read these)."""
        q = select(Update).where(Update.doc_id == doc_id, Update.seq > after).order_by(Update.seq)
        if upto is not None:
            q = q.where(Update.seq <= upto)
        from sqlalchemy.orm import Session

        with Session(self.engine) as session:
            yield from session.scalars(q.execution_options(yield_per=2000))

    def save_snapshot(self, doc_id: str, seq: int, state: bytes) -> None:
        """Idempotent: another process holding the same document may save the same one. With
        several processes, only under this one's fencing token (else ``StaleLease``)."""
        from sqlalchemy.exc import IntegrityError

        try:
            with self._background(doc_id) as conn:
                exists = conn.execute(
                    select(Snapshot.seq).where(Snapshot.doc_id == doc_id, Snapshot.seq == seq)
                ).first()
                if not exists:
                    conn.execute(insert(Snapshot), {"doc_id": doc_id, "seq": seq, "state": state,
                                                    "created_at": utcnow()})
                    log.info("snapshot of %s at %d saved", doc_id, seq)
        except IntegrityError:
            if self.get_document(doc_id) is None:
                raise
            log.debug("snapshot %d of %s was saved by another process meanwhile", seq, doc_id)

    def apply_retention(self, doc_id: str, older_than: datetime) -> int:
        """Delete log entries both covered by a snapshot and older than the cut-off.

        Only called when a retention policy is configured: by default history is kept forever.
        Entries after the newest snapshot are never deleted, so the document always loads whole.
        With several processes, only under this one's fencing token (else ``StaleLease``).
        """
        with self._background(doc_id) as conn:
            newest = conn.execute(select(func.max(Snapshot.seq)).where(Snapshot.doc_id == doc_id)).scalar()
            if not newest:
                return 0
            res = conn.execute(
                delete(Update).where(
                    Update.doc_id == doc_id, Update.seq <= newest, Update.created_at < older_than
                )
            )
            return res.rowcount or 0

    # -- leases: fencing tokens for background work ----------------------------------------

    def take_leases(self, doc_ids: list[str], holder: str) -> dict[str, int]:
        """New fencing tokens for these documents' background work, now ``holder``'s: each one
        more than the last given out for its document, so every earlier holder's token is stale
        from this commit on. Called when a process takes a lease (``Cluster``), not when it
        renews one; one statement for all the rooms a burst of joins opened."""
        if not doc_ids:
            return {}
        # Plain SQL on the driver (as ``open_many``): SQLAlchemy compiled this many-row statement
        # afresh for every burst (its size varies), a tenth of a cluster hub's CPU during joins.
        ids = sorted(set(doc_ids))  # id order: no deadlock between two processes' takes
        taken_at = utcnow()  # PostgreSQL only (a cluster's database): psycopg takes the datetime as it is
        with self._driver() as cur:
            cur.execute("INSERT INTO leases (doc_id, token, holder, taken_at) VALUES "
                        + ", ".join(["(%s, 1, %s, %s)"] * len(ids))
                        + " ON CONFLICT (doc_id) DO UPDATE SET token = leases.token + 1,"
                          " holder = excluded.holder, taken_at = excluded.taken_at RETURNING doc_id, token",
                        [v for d in ids for v in (d, holder, taken_at)])
            return dict(cur.fetchall())

    @contextmanager
    def fenced(self, doc_id: str, token: int | None) -> Iterator[Any]:
        """A transaction (a Connection) for a write of ``doc_id``'s background work, entered only
        while ``token`` is the document's newest fencing token; ``StaleLease`` (nothing written)
        if another process has taken the lease since, or ``token`` is None (this one never held
        it). The lease row is read ``FOR SHARE``: a takeover's new token waits for this write's
        commit, so the write lands either wholly before the takeover or not at all."""
        if token is None:
            raise StaleLease(f"this process does not hold the lease of {doc_id!r}: background work refused")
        with self.engine.begin() as conn:
            newest = conn.execute(select(Lease.token).where(Lease.doc_id == doc_id).with_for_update(read=True)).scalar()
            if newest != token:
                if self.on_stale is not None:
                    self.on_stale(doc_id, token)
                raise StaleLease(f"fencing token {token} of {doc_id!r} is stale (newest: {newest}): "
                                 "another process took its lease; write refused")
            yield conn

    def _background(self, doc_id: str):
        """The transaction a snapshot or retention writes in: fenced with several processes."""
        if self.fences is None:
            return self.engine.begin()
        return self.fenced(doc_id, self.fences(doc_id))

    # -- tokens ---------------------------------------------------------------------------

    def add_token(self, *, doc_id: str | None, user_id: str, name: str, role: str, expires_at: datetime) -> str:
        token_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(
                insert(Token),
                {
                    "id": token_id,
                    "doc_id": doc_id,
                    "user_id": user_id,
                    "name": name,
                    "role": role,
                    "created_at": utcnow(),
                    "expires_at": expires_at,
                },
            )
        return token_id

    def get_token(self, token_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(Token.__table__).where(Token.id == token_id)).mappings().first()
            return dict(row) if row else None

    def list_tokens(self, doc_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            q = select(Token.__table__).where(Token.doc_id == doc_id).order_by(Token.created_at)
            return [dict(r) for r in conn.execute(q).mappings()]

    def revoked_among(self, token_ids: list[str]) -> set[str]:
        """Which of these tokens are revoked (the hub's periodic check of its open sockets)."""
        if not token_ids:
            return set()
        with self.engine.connect() as conn:
            q = select(Token.id).where(Token.id.in_(token_ids), Token.revoked_at.is_not(None))
            return set(conn.execute(q).scalars())

    def revoke_token(self, token_id: str) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Token).where(Token.id == token_id, Token.revoked_at.is_(None)).values(revoked_at=utcnow())
            )
            return bool(res.rowcount)


def content_text(state: bytes | None) -> str:
    """The main text (the ``Y.Text`` named ``content``) of a stored document state."""
    doc = pycrdt.Doc()
    if state:
        doc.apply_update(state)
    return str(doc.get("content", type=pycrdt.Text))


def _create_private(url: str) -> None:
    """Create a new SQLite database file readable by its owner only (0600): it holds every
    document and token. SQLite gives its -wal and -shm files the database file's mode."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def migrate(url: str, *extensions: Path) -> None:
    """Bring the database at ``url`` to the newest schema (for processes without a Store)."""
    store = Store(url)
    try:
        store.migrate(*extensions)
    finally:
        store.close()


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything here is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
