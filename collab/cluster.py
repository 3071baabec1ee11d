"""Several hub processes, one document: fan-out over Redis Streams, the database as the truth.

Each process commits its own peers' updates to the shared PostgreSQL log; the database numbers
them inside the commit (``Store(allocate_seq=True)``: the document row is locked, so one gap-free
sequence per document whatever process commits). Only then does the process relay them: to its
own peers at once, and to the other processes by appending them to the document's Redis stream
(``tm:doc:<id>``). Every process with the document open reads that stream and applies entries
strictly in sequence order (:class:`Sequencer`). A hole in the sequence — a message lost to a
Redis hiccup, a stream trimmed, a process killed between its commit and its append — is filled
from the database after ``gap_s``, and a periodic check (``check_s``) compares every open room
with the log's last position, so even a hole nobody follows up is filled. Redis is a bus: when it
is down each process goes on committing and serving its own peers, and when it returns each one
reads what it missed from the database.

A process reads its rooms' streams with one reader per shard (rooms hashed into ``shards``
groups; each reader blocks in an XREAD of its group's streams only): XREAD is issued again after
every message it returns, and naming a shard's rooms instead of every open room keeps that cost
flat with thousands of rooms.

Presence travels on the same stream (so it never overtakes its sender's updates) tagged with the
sending process. Each process holds a liveness key (``tm:proc:<id>``) with a TTL of
``presence_ttl_s``, renewed three times per TTL; a process whose key has expired (killed, cut off)
has its clients' presence removed by the others. A room opened on a process asks the others for
their presence (a query on the stream); they answer with all of theirs.

Nothing here is on a single process's path: a room whose peers are all on one process relays to
them exactly as without a cluster, and the append to Redis is queued for a sender task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
import zlib
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from .lib0 import Reader, Writer
from .store import LogEntry, Store, as_utc

if TYPE_CHECKING:
    from .rooms import Room

__all__ = ["Cluster", "Sequencer", "stream_key"]

log = logging.getLogger("tinymorph.cluster")

PREFIX = "tm"
#: A document's stream is dropped after this long without a message (the log has it all).
STREAM_TTL_S = 24 * 3600
#: How long a reader's XREAD blocks before it is issued again (a wake-up ends it sooner).
READ_BLOCK_MS = 2000
#: Connections for everything but the readers' XREADs (appends, positions, leases, heartbeats):
#: redis-py's default number, but a command waits for one instead of failing (see ``start``).
REDIS_CONNECTIONS = 100


def stream_key(doc_id: str) -> str:
    return f"{PREFIX}:doc:{doc_id}"


def _proc_key(proc_id: str) -> str:
    return f"{PREFIX}:proc:{proc_id}"


def _owner_key(doc_id: str) -> str:
    return f"{PREFIX}:owner:{doc_id}"


def shard_of(doc_id: str, shards: int) -> int:
    """The reader a document's stream is read by: the same on every process (crc32, not
    Python's per-process salted ``hash``), so the rooms spread evenly over the readers."""
    return zlib.crc32(doc_id.encode()) % shards


class _Shard:
    """One reader's share of the open rooms: a blocking XREAD names only these rooms' streams
    (and the shard's wake-up stream), so a message costs a re-issue over a shard's rooms, not
    over every room the process holds."""

    __slots__ = ("index", "wake_key", "wake_pos", "docs", "resync", "wake_pending")

    def __init__(self, index: int, wake_key: str) -> None:
        self.index = index
        self.wake_key = wake_key
        self.wake_pos = "$"
        self.docs: set[str] = set()
        #: Read positions are unknown (Redis was away, or a room opened while it was).
        self.resync = True
        self.wake_pending = False


#: For each key: take the lease if free (2), renew it if ours (1), another process holds it (0).
#: One script call per chunk of documents, not one per document: renewals run every heartbeat for
#: every open room, and a command per room was a measurable share of a busy process's CPU.
_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == false then redis.call('SET', key, ARGV[1], 'PX', ARGV[2]) out[i] = 2
  elseif v == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2]) out[i] = 1
  else out[i] = 0 end
end
return out
"""
#: Documents per claim script call: keeps each call short, so Redis serves others between them.
_CLAIM_CHUNK = 500
#: Give the lease up if ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Sequencer:
    """One room's committed entries, local and remote, applied strictly in ``seq`` order.

    Entries arrive out of order (two processes append to one stream in their own order; a local
    commit may be numbered after a remote one not yet heard of); each waits here until every
    number before it has been applied. A hole that lasts ``gap_s`` is read from the database."""

    def __init__(self, room: "Room", cluster: "Cluster") -> None:
        self.room = room
        self.cluster = cluster
        self.pending: dict[int, LogEntry] = {}
        self._gap: asyncio.TimerHandle | None = None
        self._filling = False
        #: Highest seq known committed (from the periodic check): a hole up to it is real.
        self.known = 0

    def add(self, entries: list[LogEntry]) -> None:
        applied = self.room.applied_seq
        for e in entries:
            if e.seq > applied and (e.seq not in self.pending or e.ticket):
                self.pending[e.seq] = e
            elif e.ticket:  # a local entry a backfill brought first (``Store.committing`` prevents it)
                self.room.forget(e)
        self.drain()

    def drain(self) -> None:
        room = self.room
        run: list[LogEntry] = []
        nxt = room.applied_seq + 1
        while nxt in self.pending:
            run.append(self.pending.pop(nxt))
            nxt += 1
        if run:
            room.committed(run)
        if self.pending or self.known > room.applied_seq:
            if self._gap is None and not self._filling:
                self._gap = asyncio.get_running_loop().call_later(self.cluster.gap_s, self._fill_soon)
        elif self._gap is not None:
            self._gap.cancel()
            self._gap = None

    def _fill_soon(self) -> None:
        self._gap = None
        self.cluster.spawn(self.fill())

    async def fill(self) -> None:
        """Read the hole after ``applied_seq`` from the database."""
        if self._filling:
            return
        self._filling = True
        try:
            room = self.room
            after = room.applied_seq
            upto = min(self.pending) - 1 if self.pending else None
            if upto is not None and upto <= after:
                return
            store = self.cluster.store
            got = await asyncio.to_thread(store.entries, room.doc_id, after, upto)
            mine = store.committing
            got = [e for e in got if (e.doc_id, e.seq) not in mine]
            if got:
                self.cluster.gaps_filled += len(got)
                log.info("room %s: %d entries after %d read from the database", room.doc_id, len(got), after)
                for e in got:
                    if e.seq > room.applied_seq:
                        self.pending.setdefault(e.seq, e)
        except Exception:  # noqa: BLE001 - the database is away: the next check tries again
            log.warning("backfill of %s failed; will retry", self.room.doc_id, exc_info=True)
        finally:
            self._filling = False
        self.drain()

    def close(self) -> None:
        if self._gap is not None:
            self._gap.cancel()
            self._gap = None


class Cluster:
    """This process's link to the others (see the module docstring)."""

    def __init__(self, url: str, store: Store, *, gap_s: float = 0.05, check_s: float = 2.0,
                 presence_ttl_s: float = 3.0, stream_max_len: int = 10_000, shards: int = 16,
                 on_relay_lag: Callable[[float], None] | None = None) -> None:
        self.url = url
        self.store = store
        self.gap_s = gap_s
        self.check_s = check_s
        self.presence_ttl_s = presence_ttl_s
        self.stream_max_len = stream_max_len
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.rooms: dict[str, Room] = {}
        self.sequencers: dict[str, Sequencer] = {}
        #: Stream position read up to, per document (None: unknown, resync from the database).
        self._positions: dict[str, str | None] = {}
        self._outbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=100_000)
        self._tasks: list[asyncio.Task] = []
        self._spawned: set[asyncio.Task] = set()
        self._redis: Any = None
        #: The readers' connections (one per shard: each blocks in its own XREAD).
        self._reader_redis: Any = None
        self.connected = False
        #: Rooms hashed into a fixed number of shards, one reader each (see :class:`_Shard`).
        self.shards = [_Shard(i, f"{PREFIX}:wake:{self.id}:{i}") for i in range(max(1, shards))]
        #: Documents whose background work (snapshots, retention, agents' triggers, the graph,
        #: the watcher) is this process's, and until when (monotonic): see :meth:`owns`.
        self._owned_until: dict[str, float] = {}
        #: The fencing token the database gave this process with each lease (see :meth:`fence`).
        self._tokens: dict[str, int] = {}
        self._to_claim: set[str] = set()
        store.fences = self.fence
        store.on_stale = self._stale
        self._loop: asyncio.AbstractEventLoop | None = None
        # counters for /metrics
        self.gaps_filled = 0
        self.relayed_in = 0
        self.relayed_out = 0
        #: Told how long each entry took from the other process's commit to here (metrics).
        self.on_relay_lag = on_relay_lag

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        import redis.asyncio as redis

        self._loop = asyncio.get_running_loop()
        kw = {"socket_connect_timeout": 2, "health_check_interval": 10}
        # Blocking pools: a command waits (up to ``timeout``) for a free connection. redis-py's
        # default pool raises MaxConnectionsError at its 100th concurrent command instead, which
        # a burst of joins (each reads its stream's position) reached: the cluster then took
        # Redis for lost and caught every open room up from the database.
        pool = redis.BlockingConnectionPool.from_url(self.url, max_connections=REDIS_CONNECTIONS, timeout=5,
                                                     socket_timeout=5, **kw)
        self._redis = redis.Redis(connection_pool=pool)
        # A reader blocks up to READ_BLOCK_MS in XREAD; longer than that without an answer is a
        # Redis that is paused or cut off (then it reconnects and catches up from the database).
        readers = redis.BlockingConnectionPool.from_url(self.url, max_connections=len(self.shards) + 4, timeout=5,
                                                        socket_timeout=READ_BLOCK_MS / 1000 + 5, **kw)
        self._reader_redis = redis.Redis(connection_pool=readers)
        try:
            await self._redis.ping()
            self.connected = True
        except Exception as exc:  # noqa: BLE001 - serve anyway: Redis is a bus, not the truth
            log.warning("cluster: redis at %s unreachable (%s); serving this process's peers alone", self.url, exc)
        self._tasks = [asyncio.create_task(self._send(), name="cluster-send"),
                       *(asyncio.create_task(self._read(shard), name=f"cluster-read-{shard.index}")
                         for shard in self.shards),
                       asyncio.create_task(self._heartbeat(), name="cluster-heartbeat"),
                       asyncio.create_task(self._check(), name="cluster-check")]
        log.info("cluster: process %s on %s", self.id, self.url)

    async def stop(self) -> None:
        deadline = time.monotonic() + 2
        while not self._outbox.empty() and self.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for task in self._tasks:
            task.cancel()
        for task in [*self._tasks, *self._spawned]:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for seq in self.sequencers.values():
            seq.close()
        for r in (self._redis, self._reader_redis):
            if r is not None:
                try:
                    if self.connected and r is self._redis:  # the others take over at once
                        for doc_id in [d for d in self._owned_until if self.owns(d)]:
                            await self._release(doc_id)
                        await r.delete(_proc_key(self.id), *(shard.wake_key for shard in self.shards))
                    await r.aclose(close_connection_pool=True)  # the pools were passed in: not closed otherwise
                except Exception:  # noqa: BLE001
                    pass

    def spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    # -- rooms ----------------------------------------------------------------------------

    async def position(self, doc_id: str) -> str | None:
        """The stream's last id, read *before* the room loads from the database: whatever is
        committed after that load was appended after this id, so reading on from it misses
        nothing (and what the load already had is dropped by its seq)."""
        if not self.connected:
            return None
        try:
            last = await self._redis.xrevrange(stream_key(doc_id), "+", "-", count=1)
        except Exception:  # noqa: BLE001
            return None
        return last[0][0].decode() if last else "0-0"

    def attach(self, room: "Room", position: str | None) -> None:
        self.rooms[room.doc_id] = room
        self.sequencers[room.doc_id] = Sequencer(room, self)
        self._positions[room.doc_id] = position
        shard = self._shard(room.doc_id)
        shard.docs.add(room.doc_id)
        if position is None:
            shard.resync = True
        if not shard.wake_pending:  # one wake-up per read: it reads every room added meanwhile
            shard.wake_pending = True
            self._queue(shard.wake_key, {"t": "w"})
        self._queue(room.doc_id, {"t": "q"})  # the others' presence, please
        if self.connected:
            if not self._to_claim:  # one claim for every room opened in this loop turn
                asyncio.get_running_loop().call_soon(self._claim_opened)
            self._to_claim.add(room.doc_id)

    def _claim_opened(self) -> None:
        docs, self._to_claim = list(self._to_claim), set()
        self.spawn(self._claim_or_wait(docs))

    async def _claim_or_wait(self, docs: list[str]) -> None:
        try:
            await self._claim_leases(docs)
        except Exception as exc:  # noqa: BLE001 - Redis away: the heartbeat claims them when it returns
            self._lost(exc)

    def detach(self, room: "Room") -> None:
        if self.rooms.get(room.doc_id) is room:
            del self.rooms[room.doc_id]
            self.sequencers.pop(room.doc_id).close()
            self._positions.pop(room.doc_id, None)
            self._shard(room.doc_id).docs.discard(room.doc_id)
            self._tokens.pop(room.doc_id, None)
            if self._owned_until.pop(room.doc_id, None) is not None and self.connected:
                self.spawn(self._release(room.doc_id))

    def _shard(self, doc_id: str) -> _Shard:
        return self.shards[shard_of(doc_id, len(self.shards))]

    # -- exactly-once background work ----------------------------------------------------

    def owns(self, doc_id: str) -> bool:
        """Whether this process does the document's background work now. Of the processes that
        have it open, one holds its lease (``tm:owner:<id>``, TTL ``presence_ttl_s``, renewed
        with the liveness key); it counts itself owner only until its last renewal's TTL runs
        out by its own clock, so a process paused or cut off from Redis stops before another
        can take over (no two owners at once). When the owner dies, another process holding
        the room takes the lease within the TTL. A clock is no proof (a pause can land between
        this check and the write it allows): the write itself carries :meth:`fence`."""
        return self._owned_until.get(doc_id, 0.0) > time.monotonic() and doc_id in self._tokens

    def fence(self, doc_id: str) -> int | None:
        """The fencing token for a write of ``doc_id``'s background work (``Store.fenced``): the
        number the database gave out when this process took the lease, refused there once
        another process has taken it since. None while this process does not own it."""
        return self._tokens.get(doc_id) if self.owns(doc_id) else None

    def _stale(self, doc_id: str, token: int) -> None:
        """A fenced write found this process's token stale (another took the lease meanwhile):
        forget it; if Redis still names this process the holder, the next renewal takes a new one."""
        def forget() -> None:
            if self._tokens.get(doc_id) == token:
                del self._tokens[doc_id]
                log.warning("cluster: fencing token %d of %s is stale; background work stops until "
                            "this process holds the lease again", token, doc_id)

        if self._loop is not None:
            self._loop.call_soon_threadsafe(forget)

    async def _claim_leases(self, docs: list[str] | None = None) -> None:
        docs = list(self.rooms) if docs is None else docs
        if not docs:
            return
        started = time.monotonic()
        ttl_ms = int(self.presence_ttl_s * 1000)
        pipe = self._redis.pipeline(transaction=False)
        for i in range(0, len(docs), _CLAIM_CHUNK):
            keys = [_owner_key(doc_id) for doc_id in docs[i:i + _CLAIM_CHUNK]]
            pipe.eval(_CLAIM, len(keys), *keys, self.id, ttl_ms)
        answers = [ours for chunk in await pipe.execute() for ours in chunk]
        taken = []
        for doc_id, ours in zip(docs, answers):
            if ours and doc_id in self.rooms:
                if ours == 2 or doc_id not in self._tokens:  # taken now: earlier holders are fenced off
                    self._tokens.pop(doc_id, None)
                    taken.append(doc_id)
                self._owned_until[doc_id] = started + self.presence_ttl_s * 0.8
            else:
                self._owned_until.pop(doc_id, None)
                self._tokens.pop(doc_id, None)
        if not taken:
            return
        try:
            tokens = await asyncio.to_thread(self.store.take_leases, taken, self.id)
        except Exception:  # noqa: BLE001 - the database is away: no token, no background work; next renewal retries
            log.warning("cluster: no fencing token for %d documents; will retry", len(taken), exc_info=True)
            return
        for doc_id, token in tokens.items():
            if doc_id in self.rooms and doc_id in self._owned_until:
                self._tokens[doc_id] = token
                log.info("cluster: this process now does the background work of %s (fencing token %d)", doc_id, token)

    async def _release(self, doc_id: str) -> None:
        try:
            await self._redis.eval(_RELEASE, 1, _owner_key(doc_id), self.id)
        except Exception:  # noqa: BLE001 - it expires anyway
            pass

    def committed(self, doc_id: str, entries: list[LogEntry]) -> None:
        """A local commit: tell the others (one stream message for the document's part of the
        commit), then apply in order (the room relays to its own peers)."""
        self._queue(doc_id, {"t": "u", "d": encode_entries(entries), "ts": time.time()})
        self.store.committed_locally(entries)
        seq = self.sequencers.get(doc_id)
        if seq is not None:
            seq.add(entries)

    def presence(self, room: "Room", update: bytes, *, full: list[int] | None = None) -> None:
        """A presence change of this process's peers, after their updates up to ``applied_seq``."""
        fields: dict[str, Any] = {"t": "p", "d": update, "upto": room.applied_seq}
        if full is not None:
            fields["full"] = ",".join(map(str, full))
        self._queue(room.doc_id, fields)

    def waiting(self) -> int:
        """Entries received but not applicable yet (an earlier one is missing)."""
        return sum(len(s.pending) for s in self.sequencers.values())

    @property
    def outbox_depth(self) -> int:
        return self._outbox.qsize()

    # -- sending --------------------------------------------------------------------------

    def _queue(self, doc_id: str, fields: dict[str, Any]) -> None:
        if not self.connected:
            return  # the others read entries from the database when it returns; presence is re-asked
        fields["src"] = self.id
        try:
            self._outbox.put_nowait((doc_id, fields))
        except asyncio.QueueFull:
            log.warning("cluster: outbox full; others will read %s from the database", doc_id)

    async def _send(self) -> None:
        """Append queued messages in order, many per round trip (a pipeline)."""
        while True:
            item = await self._outbox.get()
            batch = [item]
            while not self._outbox.empty() and len(batch) < 500:
                batch.append(self._outbox.get_nowait())
            try:
                pipe = self._redis.pipeline(transaction=False)
                for doc_id, fields in batch:
                    if fields["t"] == "w":  # ``doc_id`` is a shard's wake-up stream
                        pipe.xadd(doc_id, fields, maxlen=10, approximate=True)
                    else:
                        pipe.xadd(stream_key(doc_id), fields, maxlen=self.stream_max_len, approximate=True)
                for doc_id in {d for d, f in batch if f["t"] != "w"}:  # an idle document's stream goes
                    pipe.expire(stream_key(doc_id), STREAM_TTL_S)
                await pipe.execute()
                self.relayed_out += sum(1 for _d, f in batch if f.get("t") == "u")  # commits, not entries
                if not self.connected:
                    self._back()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis down: the log has it; others backfill
                self._lost(exc)
                await asyncio.sleep(0.2)

    # -- reading --------------------------------------------------------------------------

    async def _read(self, shard: _Shard) -> None:
        """One shard's reader: a blocking XREAD of its rooms' streams from their positions."""
        backoff = 0.2
        while True:
            try:
                if shard.resync:
                    await self._catch_up(shard)
                shard.wake_pending = False
                streams = {shard.wake_key: shard.wake_pos}
                for doc_id in shard.docs:
                    if (pos := self._positions.get(doc_id)) is not None:
                        streams[stream_key(doc_id)] = pos
                got = await self._reader_redis.xread(streams, count=1000, block=READ_BLOCK_MS)
                if not self.connected:
                    self._back()
                backoff = 0.2
                for key, messages in got or ():
                    key = key.decode()
                    if key == shard.wake_key:
                        shard.wake_pos = messages[-1][0].decode()
                        continue
                    doc_id = key[len(PREFIX) + 5:]
                    if doc_id not in shard.docs:
                        continue
                    self._positions[doc_id] = messages[-1][0].decode()
                    self._handle(doc_id, messages)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - connection errors of every kind
                self._lost(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _catch_up(self, shard: _Shard) -> None:
        """After Redis was away (or a room opened while it was): note each stream's position,
        then read the database from each room's position on, then read the streams from there.
        The log's end for all the shard's rooms is one query, and only rooms behind it read
        their hole: a room at a time was a query per open room, thousands after a blip."""
        shard.resync = False
        shard.wake_pos = "$"
        docs = list(shard.docs)
        if not docs:
            return
        # On the main connection: the readers' pool holds one blocking XREAD per shard.
        pipe = self._redis.pipeline(transaction=False)
        for doc_id in docs:
            pipe.xrevrange(stream_key(doc_id), "+", "-", count=1)
        for doc_id, last in zip(docs, await pipe.execute()):
            if doc_id in self._positions:
                self._positions[doc_id] = last[0][0].decode() if last else "0-0"
        try:
            ends = await asyncio.to_thread(self.store.last_seqs, docs)
        except Exception:  # noqa: BLE001 - the database is away: read on, and catch up again next round
            log.warning("cluster: cannot read the log's end for %d rooms; will retry", len(docs), exc_info=True)
            shard.resync = True
            await asyncio.sleep(1.0)
            return
        for doc_id in docs:
            if (seq := self.sequencers.get(doc_id)) is None:
                continue
            end = ends.get(doc_id, 0)
            if end > seq.room.applied_seq:
                seq.known = max(seq.known, end)
                await seq.fill()
            self._queue(doc_id, {"t": "q"})

    def _handle(self, doc_id: str, messages: list) -> None:
        room = self.rooms.get(doc_id)
        if room is None:
            return
        entries: list[LogEntry] = []
        now = time.time()
        for _id, raw in messages:
            f = {k.decode(): v for k, v in raw.items()}
            src = f.get("src", b"").decode()
            if src == self.id:
                continue
            kind = f.get("t", b"").decode()
            try:
                if kind == "u":
                    got = decode_entries(doc_id, f["d"])
                    entries += got
                    self.relayed_in += len(got)
                    if self.on_relay_lag is not None:
                        self.on_relay_lag(max(0.0, now - float(f["ts"])))
                elif kind == "p":
                    if entries:  # updates before this presence first
                        self.sequencers[doc_id].add(entries)
                        entries = []
                    full = f.get("full")
                    ids = [int(x) for x in full.decode().split(",") if x] if full is not None else None
                    room.remote_presence(src, f["d"], int(f["upto"]), full=ids)
                elif kind == "q":
                    ids = room.local_client_ids()
                    self.presence(room, room.awareness.encode_awareness_update(ids), full=ids)
            except Exception:  # noqa: BLE001 - one bad message never stops the reader
                log.exception("cluster: cannot read a %r message on %s", kind, doc_id)
        if entries:
            self.sequencers[doc_id].add(entries)

    # -- liveness and the periodic check --------------------------------------------------

    async def _heartbeat(self) -> None:
        ttl_ms = int(self.presence_ttl_s * 1000)
        while True:
            try:
                await self._redis.set(_proc_key(self.id), b"1", px=ttl_ms)
                if not self.connected:
                    self._back()
                await self._claim_leases()
                await self._expire_dead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                self._lost(exc)
            await asyncio.sleep(self.presence_ttl_s / 3)

    async def _expire_dead(self) -> None:
        """Remove the presence of clients whose process's liveness key has expired."""
        procs = sorted({p for room in self.rooms.values() for p in room.remote_clients.values()})
        if not procs:
            return
        alive = await self._redis.exists(*[_proc_key(p) for p in procs]) if len(procs) == 1 else None
        if alive is not None:
            dead = [] if alive else procs
        else:
            pipe = self._redis.pipeline(transaction=False)
            for p in procs:
                pipe.exists(_proc_key(p))
            dead = [p for p, n in zip(procs, await pipe.execute()) if not n]
        for p in dead:
            log.info("cluster: process %s is gone; removing its clients' presence", p)
            for room in list(self.rooms.values()):
                room.drop_remote_presence(p)

    async def _check(self) -> None:
        """Every ``check_s``: is any open room behind the log? (A hole nobody followed up.)"""
        while True:
            await asyncio.sleep(self.check_s)
            try:
                last = await asyncio.to_thread(self.store.last_seqs, list(self.sequencers))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.warning("cluster: periodic check failed", exc_info=True)
                continue
            for doc_id, seq in last.items():
                sequencer = self.sequencers.get(doc_id)
                if sequencer is not None and seq > sequencer.room.applied_seq:
                    sequencer.known = max(sequencer.known, seq)
                    sequencer.drain()

    # -- connection state -----------------------------------------------------------------

    def _lost(self, exc: BaseException) -> None:
        if self.connected:
            log.warning("cluster: redis lost (%s); committing and serving this process's peers, "
                        "will catch up from the database", exc)
            self.connected = False
        for shard in self.shards:
            shard.resync = True

    def _back(self) -> None:
        log.warning("cluster: redis is back; catching up from the database")
        self.connected = True
        for shard in self.shards:
            shard.resync = True

    def stats(self) -> dict[str, Any]:
        return {"process": self.id, "redis": self.connected, "rooms": len(self.rooms),
                "relayed_in": self.relayed_in, "relayed_out": self.relayed_out, "gaps_filled": self.gaps_filled,
                "waiting": self.waiting(), "outbox": self.outbox_depth,
                "shards": [len(shard.docs) for shard in self.shards],
                "owned": sorted(d for d in self.rooms if self.owns(d))}


def encode_entries(entries: list[LogEntry]) -> bytes:
    """Log entries as one lib0 blob (a stream message carries a commit's entries of a document)."""
    w = Writer().var_uint(len(entries))
    metas: dict[int, bytes] = {}
    for e in entries:
        meta = metas.get(id(e.meta))
        if meta is None:
            meta = metas[id(e.meta)] = json.dumps(e.meta, separators=(",", ":")).encode()
        w.var_uint(e.seq).var_bytes(e.data).var_string(e.author_id).var_string(e.author_name)
        w.var_string(e.author_kind).var_uint(0 if e.client_id is None else e.client_id + 1)
        w.var_string(e.created_at.isoformat()).var_bytes(meta)
    return w.to_bytes()


def decode_entries(doc_id: str, blob: bytes) -> list[LogEntry]:
    r = Reader(blob)
    out = []
    for _ in range(r.var_uint()):
        seq, data = r.var_uint(), r.var_bytes()
        author_id, author_name, kind = r.var_string(), r.var_string(), r.var_string()
        client = r.var_uint()
        created = as_utc(datetime.fromisoformat(r.var_string()))
        out.append(LogEntry(doc_id, seq, data, author_id, author_name, kind, client - 1 if client else None,
                            created, json.loads(r.var_bytes()), ticket=0))
    return out
