"""Rooms: one live ``pycrdt.Doc`` per open document, its peers and its presence.

The path of an update: ``sockets.py`` decodes a frame → :meth:`Room.receive` validates it and
appends a log entry to the journal (nothing is applied yet) → once the journal has committed it,
:meth:`Room.committed` applies it to the room's doc, relays it to every other peer and publishes
``document.updated``. The doc therefore only ever holds committed state, so whatever a peer can
see, through a relayed update or a sync reply, is already durable.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pycrdt
from pycrdt import Awareness, Doc, Map, Text

from .auth import Identity
from .events import Event, EventBus
from .exceptions import (
    LimitExceeded,
    NotIntegrated,
    ProtocolError,
    UnknownDocument,
    UpdateDecodeError,
    UpdateGap,
    is_panic,
    recoverable,
)
from .journal import Journal
from .limits import UpdateLimits, UpdateShape, check_update, clocks_after
from .peers import Peer, PeerState
from .protocol import (
    Message,
    MessageType,
    SyncType,
    awareness_message,
    decode_awareness,
    encode_awareness,
    permission_denied,
    sync_step1,
    sync_step2,
    sync_update,
)
from .store import LoadedDocument, LogEntry, Store, decodes
from .updates import EMPTY_UPDATE, UpdateSummary, decode_state_vector, first_client, has_structs, summarize

__all__ = ["Room", "Rooms", "RoomSettings"]

log = logging.getLogger("tinymorph.rooms")

#: How long an update that builds on changes the hub lacks may wait for them, and how many of
#: one sender's updates may wait behind it (see ``Room._hold``).
GAP_HOLD_S = 3.0
GAP_HOLD_MAX = 1000


@dataclass(frozen=True, slots=True)
class RoomSettings:
    snapshot_every: int = 500
    grace_s: float = 30.0
    retention_days: float = 0.0
    auto_create: bool = False
    limits: UpdateLimits = field(default_factory=UpdateLimits)
    awareness_max_clients: int = 8


class Room:
    def __init__(self, doc_id: str, loaded: LoadedDocument, rooms: "Rooms") -> None:
        self.doc_id = doc_id
        self.rooms = rooms
        self._attach(self._build_doc(loaded))
        self.awareness = Awareness(self.doc)
        self.awareness.set_local_state(None)  # the hub itself has no presence
        #: What the presence update being applied changed (``_presence_changes``). Observed once
        #: per room: pycrdt's ``observe`` draws a uuid4 per subscription, a syscall per message.
        self._changed: dict[str, list[int]] | None = None
        self.awareness.observe(self._on_presence)
        self.peers: set[Peer] = set()
        #: Last sequence number handed out, and last one applied (committed) to ``doc``.
        #: With a cluster the database numbers entries at commit, and ``seq`` counts this
        #: process's submissions (their tickets, see ``LogEntry.ticket``); alone, ticket and seq
        #: are one.
        self.seq = loaded.seq
        self.applied_seq = loaded.seq
        #: The last ticket applied: a sender's presence waits for its updates by ticket.
        self.applied_ticket = loaded.seq
        #: Presence of clients on other hub processes: client id -> process id.
        self.remote_clients: dict[int, str] = {}
        #: Remote presence waiting for the log entries up to its seq: (seq, process, update, full).
        self._held_remote: list[tuple[int, str, bytes, list[int] | None]] = []
        #: Updates held until the hub has what they build on, per sender, in its order; and the
        #: timer that refuses them after ``GAP_HOLD_S`` (see ``_hold``).
        self._gapped: dict[Peer, list[tuple[bytes, UpdateShape]]] = {}
        self._gap_timers: dict[Peer, asyncio.TimerHandle] = {}
        self.snapshot_seq = loaded.snapshot_seq
        self.refs = 0
        self._origins: dict[int, Peer] = {}
        #: Presence messages waiting for their sender's updates up to ``seq`` to be relayed:
        #: (seq, message, excluded peer). See ``_relay_presence``.
        self._held: list[tuple[int, bytes, Peer | None, bytes | None]] = []
        #: What each transaction on ``doc`` changed, as pycrdt encodes it (only what was new).
        self._snapshotting = False
        self._evict_handle: asyncio.TimerHandle | None = None
        #: client id -> the clock after what this room's accepted updates write (in flight or
        #: applied); with the doc's own clocks, what ``_clocks_after`` compares with. Emptied when
        #: the doc is rebuilt (a quarantined entry's clocks never happened).
        self._inflight: dict[int, int] = {}
        #: ticket -> the clock ranges an entry with more than typing makes writes, until it is
        #: applied and found whole in the doc (see ``_check_integrated``).
        self._writes: dict[int, list[tuple[int, int, int]]] = {}
        #: Tickets of entries with more than typing makes (maps, embeds, types...): after them the doc's
        #: whole state is checked to decode (pycrdt encodes some hostile structs unreadably).
        self._verify: set[int] = set()
        #: ``(update, sender)`` of each run applied in the current commit batch, relayed together
        #: once the batch is applied (see ``_relay_batch``).
        self._relay: list[tuple[bytes, Peer | None]] = []

    def _build_doc(self, loaded: LoadedDocument) -> Doc:
        """A doc holding ``loaded``; if pycrdt panics on the merged state, it is rebuilt entry by
        entry so that only the entry it panics on is lost (quarantined), not the document."""
        doc = Doc()
        if loaded.state:
            try:
                doc.apply_update(loaded.state)
            except BaseException as exc:  # noqa: BLE001
                if not recoverable(exc):
                    raise
                log.error("the state of %s does not apply (%s); rebuilding it one entry at a time", self.doc_id, exc)
                doc = Doc()
                state = self.rooms.store.load(self.doc_id, at_seq=loaded.seq, one_by_one=True).state
                if state:
                    doc.apply_update(state)
        return doc

    def _attach(self, doc: Doc) -> None:
        """Make ``doc`` the room's document (at load, and when it is rebuilt from the log)."""
        self.doc = doc
        self.text = doc.get("content", type=Text)
        #: What each transaction on ``doc`` changed, as pycrdt encodes it (only what was new).
        self._changes: list[bytes] = []
        #: The doc's state vector as last decoded: after a change, a lower bound of it (stale),
        #: decoded again only when an update needs more than it and ``_inflight`` say.
        self._doc_clocks: dict[int, int] = {}
        self._doc_stale = True
        doc.observe(self._on_change)
        self._maps: dict[str, Map] = {}
        self._map_sizes: dict[str, int] = {}

    def _on_change(self, event: pycrdt.TransactionEvent) -> None:
        self._changes.append(event.update)
        self._doc_stale = True

    def map(self, name: str) -> Map:
        """The root ``Y.Map`` called ``name``, looked up once: ``Doc.get`` builds a new handle and
        runs a transaction on every call (~100 us), and bus filters ask on every keystroke."""
        m = self._maps.get(name)
        if m is None:
            m = self._maps[name] = self.doc.get(name, type=Map)
            m.observe(lambda _event: self._map_sizes.pop(name, None))
        return m

    def has_entries(self, name: str) -> bool:
        """Whether the root map ``name`` is non-empty; counted again only after it changed
        (``len`` of a map is a transaction, and most keystrokes leave every map alone)."""
        size = self._map_sizes.get(name)
        if size is None:
            size = self._map_sizes[name] = len(self.map(name))
        return size > 0

    # -- lifecycle (driven by Rooms) ------------------------------------------------------

    def evict_later(self, delay_s: float, evict: Callable[[], None]) -> None:
        """Call ``evict`` after ``delay_s`` unless :meth:`cancel_eviction` comes first."""
        self.cancel_eviction()
        self._evict_handle = asyncio.get_running_loop().call_later(delay_s, evict)

    def cancel_eviction(self) -> None:
        """Somebody joined (or the hub is closing): forget a pending eviction, if any."""
        if self._evict_handle is not None:
            self._evict_handle.cancel()
            self._evict_handle = None

    def state(self) -> tuple[int, bytes]:
        """``(applied_seq, full update)``: the document and the last log entry it holds, taken in
        one step so that they match (no entry can be applied between the two)."""
        return self.applied_seq, self.doc.get_update()

    @property
    def snapshot_due(self) -> bool:
        """Whether the log has grown since the last snapshot."""
        return self.applied_seq > self.snapshot_seq

    @property
    def snapshotting(self) -> bool:
        return self._snapshotting

    def start_snapshot(self) -> tuple[int, bytes] | None:
        """Mark a snapshot as running and return :meth:`state` to save; None if one already
        runs (the caller leaves it to that one). End it with :meth:`end_snapshot`."""
        if self._snapshotting:
            return None
        self._snapshotting = True
        return self.state()

    def snapshot_saved(self, seq: int) -> None:
        """The state at ``seq`` is in the store: entries up to it need no replay on load."""
        self.snapshot_seq = max(self.snapshot_seq, seq)

    def end_snapshot(self) -> None:
        self._snapshotting = False

    # -- peers ----------------------------------------------------------------------------

    def join(self, peer: Peer) -> None:
        """Start the y-websocket handshake and hand the newcomer every current presence."""
        self.peers.add(peer)
        peer.send(sync_step1(self.doc.get_state()))
        if self.awareness.states:
            peer.send(awareness_message(self.awareness.encode_awareness_update(list(self.awareness.states))))
        self._publish("participant.joined", peer.identity, peers=len(self.peers))

    def leave(self, peer: Peer) -> None:
        self.peers.discard(peer)
        self._drop_gapped(peer)
        gone = [cid for cid in peer.client_ids if cid in self.awareness.states]
        if gone:
            self.awareness.remove_awareness_states(gone, "close")
            update = self.awareness.encode_awareness_update(gone)
            self._relay_presence(peer, awareness_message(update), exclude=None, update=update)
        self._publish("participant.left", peer.identity, peers=len(self.peers), client_ids=sorted(peer.client_ids))

    # -- incoming -------------------------------------------------------------------------

    def receive(self, peer: Peer, msg: Message) -> None:
        """Handle one decoded message from ``peer``. Raises TinymorphError for bad input."""
        if msg.type is MessageType.SYNC:
            if msg.sync_type is SyncType.STEP1:
                if peer.pending_reply is not None:
                    return  # a reply is still queued for this peer: it answers this one too
                try:
                    reply = self.doc.get_update(msg.payload)
                except ValueError as exc:
                    raise UpdateDecodeError(f"sync step 1 carries an undecodable state vector: {exc}") from exc
                peer.pending_reply = message = sync_step2(reply)
                peer.send(message)
            else:
                self._receive_update(peer, msg.payload, resync=msg.sync_type is SyncType.STEP2)
        elif msg.type is MessageType.AWARENESS:
            self._receive_awareness(peer, msg.payload)
        elif msg.type is MessageType.QUERY_AWARENESS:
            peer.send(awareness_message(self.awareness.encode_awareness_update(list(self.awareness.states))))

    def _receive_update(self, peer: Peer, update: bytes, *, resync: bool) -> None:
        if update == EMPTY_UPDATE:
            return
        # Structure first, by our own non-recursive reader: pycrdt crashes the process on
        # values nested deeply enough (see limits.py). LimitExceeded closes this socket only.
        try:
            shape = check_update(update, self.rooms.settings.limits)
        except LimitExceeded:
            raise
        except ProtocolError as exc:
            raise UpdateDecodeError(f"update does not decode: {exc}") from exc
        try:
            pycrdt.get_state(update)  # decodes the whole update: this is the validation
        except ValueError as exc:
            raise UpdateDecodeError(f"update does not decode: {exc}") from exc
        ident = peer.identity
        if not ident.role.can_write:
            # A reconnecting viewer's sync step 2 may repeat what we have: that is no edit.
            if resync and not has_structs(pycrdt.get_update(update, self.doc.get_state())):
                return
            log.info("refused update from read-only %s on %s", peer.label, self.doc_id)
            peer.send(permission_denied(f"{ident.role} cannot edit this document"))
            return
        held = self._gapped.get(peer)
        if held is not None and not resync:  # behind its sender's earlier update that waits
            if len(held) >= GAP_HOLD_MAX:
                raise self._gap_error(held[0][1]) or UpdateGap("too many updates wait for what they build on")
            held.append((update, shape))
            return
        try:
            have = self._clocks_after(shape)
        except UpdateGap:
            self._hold(peer, update, shape)
            return
        self._accept(peer, update, shape, have)
        if self._gapped:
            self._retry_gapped()

    def _accept(self, peer: Peer, update: bytes, shape: UpdateShape, have: dict[int, int] | None = None) -> None:
        """Submit an update that needs nothing the hub lacks (``have``: what ``_clocks_after``
        said of it, if the caller asked already)."""
        self._inflight.update(self._clocks_after(shape) if have is None else have)
        ticket = self.submit(update, peer.identity, origin=peer)
        if not shape.plain:
            self._verify.add(ticket)
            if shape.ranges:
                self._writes[ticket] = shape.ranges

    # -- updates that build on what the hub does not have yet -----------------------------

    def _gap_error(self, shape: UpdateShape) -> UpdateGap | None:
        """What ``_clocks_after`` would refuse ``shape`` with, or None."""
        try:
            self._clocks_after(shape)
        except UpdateGap as exc:
            return exc
        return None

    def _hold(self, peer: Peer, update: bytes, shape: UpdateShape) -> None:
        """Keep an update that builds on changes the hub does not have, for ``GAP_HOLD_S``.

        A stock client that reconnects (to this hub after a restart, or to another process
        after one died) sends what it types at once, while the changes the hub lacks come a
        moment later in its sync step 2 (with a cluster, maybe from another process or the
        log). Refused with a 44xx close, y-websocket would stop for good; held, the update is
        submitted, in its sender's order, once what it needs is there."""
        self._gapped[peer] = [(update, shape)]
        self._gap_timers[peer] = asyncio.get_running_loop().call_later(GAP_HOLD_S, self._expire_gapped, peer)

    def _retry_gapped(self) -> None:
        for peer, held in list(self._gapped.items()):
            if peer.state is not PeerState.OPEN or peer not in self.peers:
                self._drop_gapped(peer)
                continue
            while held and self._gap_error(held[0][1]) is None:
                update, shape = held.pop(0)
                self._accept(peer, update, shape)
            if not held:
                self._drop_gapped(peer)

    def _expire_gapped(self, peer: Peer) -> None:
        """``GAP_HOLD_S`` passed and what the update needs never came: refused after all."""
        self._gap_timers.pop(peer, None)
        self._retry_gapped()
        held = self._gapped.get(peer)
        if held is None:
            return
        exc = self._gap_error(held[0][1]) or UpdateGap("an update waited too long for what it builds on")
        self._drop_gapped(peer)
        log.warning("closing %s on %s: %s (%d)", peer.label, self.doc_id, exc, exc.close_code)
        peer.close(exc.close_code, exc.reason)

    def _drop_gapped(self, peer: Peer) -> None:
        self._gapped.pop(peer, None)
        timer = self._gap_timers.pop(peer, None)
        if timer is not None:
            timer.cancel()

    def _clocks_after(self, shape: UpdateShape) -> dict[int, int]:
        """The clocks ``shape`` takes its clients to (nothing is recorded), or ``UpdateGap`` if it
        builds on changes the hub does not have: clocks of a client past a gap, or an origin or
        parent item nobody sent.

        yjs holds such structs back until what they need arrives; pycrdt integrates some of them
        at once, so a stock client would read another text than the hub. Nothing a real editor
        sends needs what it has not seen: a client's edits start where its last one ended and
        name items it has, all of which the hub holds (in the doc, or submitted and in flight).

        Typing needs no decoding: a keystroke starts where its client's last ended and names
        items this room accepted, all in ``_inflight``. The doc's state vector is read again only
        when that and the last reading of it are not enough (another process's entries, say)."""
        def known(client: int) -> int:
            return max(self._doc_clocks.get(client, 0), self._inflight.get(client, 0))

        try:
            return clocks_after(shape, known)
        except UpdateGap:
            if not self._doc_stale:
                raise
            self._doc_clocks, self._doc_stale = decode_state_vector(self.doc.get_state()), False
            return clocks_after(shape, known)

    def submit(self, update: bytes, ident: Identity, origin: Peer | None = None, meta: dict | None = None) -> int:
        """Log a validated update as ``ident``'s; it is applied and relayed once committed.
        The hub's own edits (reverts) come in here directly, with no socket behind them.
        Returns its ticket: its seq when this process is alone; with a cluster the seq is known
        only once committed (``submit_entry``)."""
        return self.submit_entry(update, ident, origin, meta).ticket

    def submit_entry(self, update: bytes, ident: Identity, origin: Peer | None = None,
                     meta: dict | None = None) -> LogEntry:
        """``submit``, returning the log entry: its ``seq`` is final once the journal committed it."""
        client_id = first_client(update)
        if client_id is None and origin is not None:
            client_id = min(origin.client_ids, default=None)
        self.seq += 1
        meta = {**ident.log_meta, **meta} if meta else ident.log_meta
        seq = 0 if self.rooms.cluster is not None else self.seq  # 0: numbered at commit
        entry = LogEntry(self.doc_id, seq, update, ident.user_id, ident.name, ident.kind, client_id, meta=meta,
                         ticket=self.seq)
        if origin is not None:
            self._origins[self.seq] = origin
            origin.last_seq = self.seq
        self.rooms.journal.append(entry)
        return entry

    def _receive_awareness(self, peer: Peer, update: bytes) -> None:
        """Apply a presence update and relay what actually changed.

        Stock y-websocket clients echo other clients' presence back, so a client id belongs to
        the socket through which it first appeared (as the Node server does), not to every
        socket that mentions it; and echoes that change nothing are not relayed.
        """
        entries = decode_awareness(update, self.rooms.settings.limits.max_depth)  # before pycrdt sees it
        # A socket speaks for its own client ids only: others' (stock clients echo them back) are
        # dropped here, and it may bring at most ``awareness_max_clients`` of its own.
        others: set[int] = set(self.remote_clients)
        for other in self.peers:
            if other is not peer:
                others |= other.client_ids
        own = [e for e in entries if e[0] not in others]
        if len(own) != len(entries):
            if not own:
                return
            update = encode_awareness(own)
        cap = self.rooms.settings.awareness_max_clients
        if len(peer.client_ids | {e[0] for e in own}) > cap:
            raise LimitExceeded(f"a socket may announce at most {cap} presence client ids")
        changed = self._presence_changes(lambda: self.awareness.apply_awareness_update(update, peer))
        peer.client_ids.update(changed.get("added", ()))
        peer.client_ids.difference_update(changed.get("removed", ()))
        ids = [*changed.get("added", ()), *changed.get("updated", ()), *changed.get("removed", ())]
        if ids:
            update = self.awareness.encode_awareness_update(ids)
            self._relay_presence(peer, awareness_message(update), exclude=peer, update=update)

    def _presence_changes(self, apply: Callable[[], None]) -> dict[str, list[int]]:
        """Run ``apply`` on the room's presence; the client ids it added, updated and removed."""
        self._changed = changed = {}
        try:
            apply()
        finally:
            self._changed = None
        return changed

    def _on_presence(self, topic: str, payload) -> None:
        if topic == "update" and self._changed is not None:
            for key, ids in payload[0].items():
                self._changed.setdefault(key, []).extend(ids)

    def _relay_presence(self, sender: Peer, message: bytes, exclude: Peer | None, update: bytes | None = None) -> None:
        """Relay a presence change, but never ahead of the sender's own earlier updates.

        Updates are relayed only once committed (a few ms later, more with a commit delay), while
        presence needs no commit. Sent at once, a cursor would point into text the others do not
        have yet, and a departing agent's presence would vanish before its last words arrive.
        Holding it until those updates are applied keeps each sender's messages in the order it
        sent them, as a relay that commits nothing (the Node server) does."""
        if sender.last_seq > self.applied_ticket:
            self._held.append((sender.last_seq, message, exclude, update))
        else:
            self._broadcast(message, exclude=exclude)
            if update is not None and self.rooms.cluster is not None:
                self.rooms.cluster.presence(self, update)

    def _release_presence(self, upto: int) -> None:
        """Relay held presence whose updates up to ticket ``upto`` are applied (or refused)."""
        if self._held_remote:
            self._release_remote()
        if not self._held:
            return
        ready = [h for h in self._held if h[0] <= upto]
        self._held = [h for h in self._held if h[0] > upto]
        for _seq, message, exclude, update in ready:
            self._broadcast(message, exclude=exclude, later=True)
            if update is not None and self.rooms.cluster is not None:
                self.rooms.cluster.presence(self, update)

    # -- other hub processes' presence (see cluster.py) -----------------------------------

    def local_client_ids(self) -> list[int]:
        """The presence client ids of this process's own peers."""
        return sorted({cid for peer in self.peers for cid in peer.client_ids if cid in self.awareness.states})

    def remote_presence(self, process: str, update: bytes, upto: int, full: list[int] | None = None) -> None:
        """Presence from another process's peers, relayed once the entries up to ``upto`` (their
        senders' updates) are applied here too. ``full``: all of that process's client ids in
        this room (an answer to a query): its others are gone."""
        if upto > self.applied_seq:
            self._held_remote.append((upto, process, update, full))
            return
        local = {cid for peer in self.peers for cid in peer.client_ids}
        entries = [e for e in decode_awareness(update, self.rooms.settings.limits.max_depth) if e[0] not in local]

        def apply() -> None:
            if full is not None:
                gone = [cid for cid, p in self.remote_clients.items() if p == process and cid not in full]
                self.awareness.remove_awareness_states(gone, "cluster")
                for cid in gone:
                    self.remote_clients.pop(cid, None)
            if entries:
                self.awareness.apply_awareness_update(encode_awareness(entries), "cluster")

        changed = self._presence_changes(apply)
        for cid in (*changed.get("added", ()), *changed.get("updated", ())):
            self.remote_clients[cid] = process
        for cid in changed.get("removed", ()):
            self.remote_clients.pop(cid, None)
        ids = [*changed.get("added", ()), *changed.get("updated", ()), *changed.get("removed", ())]
        if ids:
            self._broadcast(awareness_message(self.awareness.encode_awareness_update(ids)))

    def drop_remote_presence(self, process: str) -> None:
        """Another process is gone (its liveness key expired): its clients' presence goes."""
        self._held_remote = [h for h in self._held_remote if h[1] != process]
        gone = [cid for cid, p in self.remote_clients.items() if p == process]
        for cid in gone:
            del self.remote_clients[cid]
        gone = [cid for cid in gone if cid in self.awareness.states]
        if gone:
            self.awareness.remove_awareness_states(gone, "expired")
            self._broadcast(awareness_message(self.awareness.encode_awareness_update(gone)))

    def _release_remote(self) -> None:
        ready = [h for h in self._held_remote if h[0] <= self.applied_seq]
        self._held_remote = [h for h in self._held_remote if h[0] > self.applied_seq]
        for upto, process, update, full in ready:
            self.remote_presence(process, update, upto, full)

    def forget(self, entry: LogEntry) -> None:
        """A local entry whose copy from the database was applied first: its bookkeeping only."""
        self._origins.pop(entry.ticket, None)
        self.applied_ticket = max(self.applied_ticket, entry.ticket)
        self._release_presence(self.applied_ticket)
        self._flush_peers()

    # -- after commit ---------------------------------------------------------------------

    def committed(self, entries: list[LogEntry]) -> None:
        """Apply and relay committed entries. A run of consecutive entries from the same
        socket and author is applied in one transaction and relayed as one update:
        one observer call, one event and one send per peer instead of one per keystroke."""
        self._relay.clear()
        i = 0
        while i < len(entries):
            origin = self._origins.pop(entries[i].ticket, None)
            j = i + 1
            while (
                j < len(entries)
                and entries[j].author_id == entries[i].author_id
                and entries[j].meta == entries[i].meta
                and self._origins.get(entries[j].ticket) is origin
                and bool(entries[j].ticket) == bool(entries[i].ticket)  # another process's, or ours
            ):
                self._origins.pop(entries[j].ticket, None)
                j += 1
            self._apply_isolated(entries[i:j], origin)
            i = j
        self._relay_batch()
        self._release_presence(self.applied_ticket)
        if self._gapped:  # what they waited for may have come from another process or the log
            self._retry_gapped()
        self._flush_peers()  # the relayed updates were queued with later=True
        if self.applied_seq - self.snapshot_seq >= self.rooms.settings.snapshot_every:
            self.rooms.schedule_snapshot(self)

    def _apply_isolated(self, run: list[LogEntry], origin: Peer | None) -> None:
        """``_apply_run``, so that no exception costs another entry: a run that fails is applied
        again one entry at a time, and an entry that still fails is quarantined (the store skips
        it from then on, on every load) instead of stalling the room or being half applied.

        A failure inside pycrdt (a panic, even one raised by an observer as the transaction
        commits) may leave part of the run in the doc, applied but never relayed: so the doc is
        first rebuilt from the log, which is the truth, as it was before the run."""
        try:
            self._apply_run(run, origin)
            return
        except BaseException as exc:  # noqa: BLE001 - whatever it is (a pycrdt panic too), the others go on
            if not recoverable(exc):
                raise
            log.warning("applying entries %d-%d of %s failed (%s: %s); retrying one by one", run[0].seq,
                        run[-1].seq, self.doc_id, type(exc).__name__, exc,
                        exc_info=not (is_panic(exc) or isinstance(exc, NotIntegrated)))  # those say it all
        if self.applied_seq < run[0].seq:  # it failed while applying
            self._rebuild(run[0].seq - 1)
        for entry in run:
            if entry.seq <= self.applied_seq:
                continue  # the failed attempt got this far
            try:
                self._apply_run([entry], origin)
            except BaseException as exc:  # noqa: BLE001
                if not recoverable(exc):
                    raise
                log.error("entry %d of %s cannot be applied (%s: %s): quarantined; the room is "
                          "rebuilt from the log", entry.seq, self.doc_id, type(exc).__name__, exc)
                self.rooms.store.quarantined[(self.doc_id, entry.seq)] = f"{type(exc).__name__}: {exc}"
                self._writes.pop(entry.ticket, None)
                self._verify.discard(entry.ticket)
                self._rebuild(entry.seq)
                self.applied_seq = entry.seq
                self.applied_ticket = max(self.applied_ticket, entry.ticket)

    def _check_integrated(self, run: list[LogEntry]) -> None:
        """Raise ``NotIntegrated`` unless the doc now holds every clock the run's entries write.

        Each passed ``_clocks_after``, so nothing it needs is missing; yet pycrdt drops some
        hostile structs and integrates later ones past the hole, a state that yjs cannot load.
        Caught here, the entry is quarantined and the doc rebuilt without it. Only entries with
        more than typing makes are checked: what the fuzzer found pycrdt drop, or write in a way
        nobody can read back, always involved them (12 seeds of text-only hostile updates, a
        state check after every ten: none), and a check of the whole state costs a walk of it."""
        verify = [entry for entry in run if entry.ticket in self._verify]
        if verify:
            if not decodes(self.doc.get_update()):
                raise NotIntegrated(f"after entries {[e.seq for e in verify]} the doc's state no longer decodes")
            self._verify.difference_update(e.ticket for e in verify)
        writes = [(entry, w) for entry in run if (w := self._writes.get(entry.ticket))]
        if not writes:
            return
        clocks = decode_state_vector(self.doc.get_state())
        self._doc_clocks, self._doc_stale = clocks, False
        for entry, ranges in writes:
            for client, _start, end in ranges:
                if clocks.get(client, 0) < end:
                    raise NotIntegrated(f"entry {entry.seq} writes clocks of client {client} up to {end}, "
                                        f"but the doc holds them only up to {clocks.get(client, 0)}")
            del self._writes[entry.ticket]

    def _rebuild(self, upto: int) -> None:
        """Replace the doc with one rebuilt from the log up to ``upto``, quarantined entries left
        out. Reads the database on the event loop: it happens only after pycrdt failed."""
        self._attach(self._build_doc(self.rooms.store.load(self.doc_id, at_seq=upto)))
        self._inflight.clear()

    def _apply_run(self, run: list[LogEntry], origin: Peer | None) -> None:
        """Apply a run in one transaction, relay what it changed, publish ``document.updated``.

        The relayed update and the event's summary both come from the transaction's own update
        (the doc observer's): for a long run that is >10x cheaper and smaller than merging its
        updates (B4 trace), and unlike a text observer it never walks the text (a text delta
        costs ~100 us a keystroke on a 100k-character document).
        """
        self._changes.clear()
        if len(run) == 1:  # apply_update is its own transaction; a keystroke needs no outer one
            self.doc.apply_update(run[0].data)
        else:
            with self.doc.transaction():
                for entry in run:
                    self.doc.apply_update(entry.data)
        self._check_integrated(run)
        last = run[-1]
        self.applied_seq = last.seq
        self.applied_ticket = max(self.applied_ticket, last.ticket)
        summary = UpdateSummary("", 0)
        if self._changes:  # else nothing was new (a repeated update)
            update = self._changes[0]
            self._relay.append((update, origin))
            try:
                summary = summarize(update)
            except Exception as exc:  # noqa: BLE001 - e.g. a content kind we cannot read: only the summary is lost
                log.warning("cannot summarise update %d of %s: %s", last.seq, self.doc_id, exc)
        # With a cluster each process tells its own subscribers of every entry it applies (see
        # EventBus.publish_local); the one holding the document's lease acts on it.
        publish = self.rooms.bus.publish if self.rooms.cluster is None else self.rooms.bus.publish_local
        publish(
            Event(
                "document.updated",
                self.doc_id,
                {
                    "seq": last.seq,
                    "first_seq": run[0].seq,
                    "author_id": last.author_id,
                    "author_name": last.author_name,
                    "kind": last.author_kind,
                    "client_id": last.client_id,
                    "inserted": summary.inserted[:200],
                    "inserted_chars": len(summary.inserted),
                    "deleted": summary.deleted,  # items: characters (UTF-16 units), entries
                    "meta": last.meta,
                },
            )
        )

    def _relay_batch(self) -> None:
        """Queue what a commit batch changed for every peer, as one message.

        A lone run goes to everyone but its sender. Several runs (several typists in one group
        commit) are merged once and the same message goes to every peer, their senders too:
        a client ignores what it already has (the Node server echoes every update), and one
        merge per batch is far cheaper than a merge per peer of all runs but its own."""
        if not self._relay:
            return
        if len(self._relay) == 1:
            update, origin = self._relay[0]
        else:
            update, origin = pycrdt.merge_updates(*(u for u, _ in self._relay)), None
        self._relay.clear()
        self._broadcast(sync_update(update), exclude=origin, update=update, later=True)

    def failed(self, entry: LogEntry, exc: BaseException) -> None:
        """The database refused this update: it was never applied or relayed. The sender's client
        still has it and re-sends it through sync on reconnect, so close that socket."""
        origin = self._origins.pop(entry.ticket, None)
        self._writes.pop(entry.ticket, None)
        self._verify.discard(entry.ticket)
        self._release_presence(max(self.applied_ticket, entry.ticket))
        self._flush_peers()
        if origin is not None:
            origin.close(1011, "storage unavailable; reconnect to resend your changes")

    # -- helpers --------------------------------------------------------------------------

    def _broadcast(self, message: bytes, exclude: Peer | None = None, update: bytes | None = None,
                   later: bool = False) -> None:
        for peer in self.peers:
            if peer is not exclude:
                try:
                    peer.send(message, update, later=later)
                except Exception:  # noqa: BLE001 - one peer's failure is that peer's alone
                    self._drop(peer)

    def _flush_peers(self) -> None:
        """Send what was queued with ``later=True``: one flush per peer, not one per message."""
        for peer in list(self.peers):
            if peer.has_queued:
                try:
                    peer.flush()
                except Exception:  # noqa: BLE001
                    self._drop(peer)

    def _drop(self, peer: Peer) -> None:
        """A peer whose outbound path raised: closed (1011; its client resyncs on reconnect)."""
        log.exception("sending to %s on %s failed; closing it", peer.label, self.doc_id)
        try:
            peer.close(1011, "internal error")
        except Exception:  # noqa: BLE001
            log.exception("closing %s failed too", peer.label)

    def _publish(self, topic: str, ident: Identity, **data: Any) -> None:
        self.rooms.bus.publish(
            Event(topic, self.doc_id, {"user_id": ident.user_id, "name": ident.name, "role": str(ident.role), **data})
        )


class Opener:
    """Opens documents for rooms in batches, on a thread of its own. Joins that arrive while a
    batch is at the database wait for the next one (the journal's group commit, for loads): a
    burst of joins costs a few statements and one thread hop per batch instead of per join.

    Why not a task and ``asyncio.to_thread``: in a burst of joins every event-loop turn handles
    hundreds of handshakes, and each hop between a task, a thread's future and a shielded
    future waits a whole turn. The thread hands a batch back with one ``call_soon_threadsafe``
    that answers each joiner's own future, so a join waits two turns after its batch is read,
    not eight. Each :meth:`open` gets a future of its own: a joiner that gives up cancels only
    that, never the others' load."""

    #: Documents per batch: bounds one transaction's statements and parameters.
    MAX_BATCH = 256

    def __init__(self, store: Store, create: bool) -> None:
        self.store = store
        self.create = create
        #: doc id -> the futures of the joins waiting for it: not yet at the database, and at it.
        self._waiting: dict[str, list[asyncio.Future[LoadedDocument | None]]] = {}
        self._loading: dict[str, list[asyncio.Future[LoadedDocument | None]]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def open(self, doc_id: str) -> asyncio.Future[LoadedDocument | None]:
        """A future of ``doc_id``'s committed state (None: no such document), from the batch at
        the database if it holds this document, else from the next one (sent at once if none is
        in flight). A failed load sets that document's exception."""
        fut = asyncio.get_running_loop().create_future()
        if doc_id in self._loading:
            self._loading[doc_id].append(fut)
        else:
            self._waiting.setdefault(doc_id, []).append(fut)
            if not self._loading:
                self._send()
        return fut

    def _send(self) -> None:
        """The next batch to the database thread."""
        batch = list(itertools.islice(self._waiting, self.MAX_BATCH))
        for doc_id in batch:
            self._loading[doc_id] = self._waiting.pop(doc_id)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="room-loader")
        self._pool.submit(self._load, asyncio.get_running_loop(), batch)

    def _load(self, loop: asyncio.AbstractEventLoop, batch: list[str]) -> None:
        """On the loader thread: read the batch, hand it to the loop."""
        try:
            found = self.store.open_many(batch, create=self.create)
        except Exception as exc:  # noqa: BLE001 - e.g. the database is down: each join fails with it
            found = dict.fromkeys(batch, exc)
        try:
            loop.call_soon_threadsafe(self._loaded, found)
        except RuntimeError:
            pass  # the loop has closed (shutdown): nobody waits any more

    def _loaded(self, found: dict[str, LoadedDocument | None | Exception]) -> None:
        loading, self._loading = self._loading, {}
        if self._waiting:
            self._send()  # the database reads the next batch while this one's joins go on
        for doc_id, futures in loading.items():
            result = found.get(doc_id)
            for fut in futures:
                if fut.done():
                    continue  # its joiner gave up
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class Rooms:
    """Open rooms by document id: load once on first join, evict after an idle grace period."""

    def __init__(self, store: Store, journal: Journal, bus: EventBus, settings: RoomSettings,
                 cluster: Any = None) -> None:
        #: The other hub processes (``cluster.Cluster``), or None when this one is alone.
        self.cluster = cluster
        self.store = store
        self.journal = journal
        self.bus = bus
        self.settings = settings
        self._rooms: dict[str, Room] = {}
        self._opener = Opener(store, settings.auto_create)
        self._background: set[asyncio.Task] = set()

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._rooms

    def get(self, doc_id: str) -> Room | None:
        return self._rooms.get(doc_id)

    def all(self) -> list[Room]:
        return list(self._rooms.values())

    async def acquire(self, doc_id: str) -> Room:
        """The room for ``doc_id``, loading it if needed; concurrent first joins share one load
        (the opener's), and whichever of them resumes first makes the room."""
        room = self._rooms.get(doc_id)
        if room is None:
            # With a cluster: the stream's position first, then the database (see
            # Cluster.position). Read per join, not per batch: one Redis pipeline per batch
            # measured slower (issue 17).
            position = await self.cluster.position(doc_id) if self.cluster is not None else None
            loaded = await self._opener.open(doc_id)
            room = self._rooms.get(doc_id)  # another join's load made it meanwhile
            if room is None:
                if loaded is None:
                    raise UnknownDocument(f"unknown document {doc_id!r}")
                room = self._open(doc_id, loaded, position)
        room.refs += 1
        room.cancel_eviction()
        return room

    def _open(self, doc_id: str, loaded: LoadedDocument, position: Any) -> Room:
        room = Room(doc_id, loaded, self)
        self._rooms[doc_id] = room
        if self.cluster is not None:
            self.cluster.attach(room, position)
        log.info("room %s loaded at seq %d (snapshot %d)", doc_id, loaded.seq, loaded.snapshot_seq)
        return room

    def release(self, room: Room) -> None:
        room.refs -= 1
        if room.refs <= 0 and self._rooms.get(room.doc_id) is room:
            room.evict_later(self.settings.grace_s, lambda: self._spawn(self._evict(room)))

    async def _evict(self, room: Room) -> None:
        await self.journal.drain()
        if room.refs > 0:
            return  # somebody joined while we waited
        if room.snapshot_due and self.background_here(room):
            await self._snapshot(room)
        if room.refs <= 0 and self._rooms.get(room.doc_id) is room:
            del self._rooms[room.doc_id]
            if self.cluster is not None:
                self.cluster.detach(room)
            log.info("room %s evicted", room.doc_id)

    def background_here(self, room: Room) -> bool:
        """Whether this process does the room's background work (snapshots, retention): always
        when alone; with a cluster, only while it holds the document's lease."""
        return self.cluster is None or self.cluster.owns(room.doc_id)

    def schedule_snapshot(self, room: Room) -> None:
        if not room.snapshotting and self.background_here(room):
            self._spawn(self._snapshot(room))

    async def _snapshot(self, room: Room) -> None:
        taken = room.start_snapshot()
        if taken is None:
            return
        seq, state = taken
        try:
            await asyncio.to_thread(self.store.save_snapshot, room.doc_id, seq, state)
            room.snapshot_saved(seq)
            if self.settings.retention_days > 0:
                cutoff = datetime.now(timezone.utc) - timedelta(days=self.settings.retention_days)
                n = await asyncio.to_thread(self.store.apply_retention, room.doc_id, cutoff)
                if n:
                    log.info("retention: deleted %d log entries of %s", n, room.doc_id)
        except Exception:
            log.exception("snapshot of %s failed (the log still has everything)", room.doc_id)
        finally:
            room.end_snapshot()

    async def close(self) -> None:
        """Shutdown: snapshot every room whose log has grown since its last snapshot."""
        for room in list(self._rooms.values()):
            room.cancel_eviction()
            if room.snapshot_due and self.background_here(room):
                await self._snapshot(room)
        if self._background:
            await asyncio.wait(list(self._background), timeout=10)
        self._opener.close()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- journal callbacks ----------------------------------------------------------------

    def committed(self, batch: list[LogEntry]) -> None:
        by_room: dict[str, list[LogEntry]] = {}
        for entry in batch:
            by_room.setdefault(entry.doc_id, []).append(entry)
        for doc_id, entries in by_room.items():
            room = self._rooms.get(doc_id)
            if room is None and self.cluster is None:
                continue
            try:
                if self.cluster is not None:  # to the other processes, and applied in seq order
                    self.cluster.committed(doc_id, entries)
                else:
                    room.committed(entries)
            except BaseException as exc:  # noqa: BLE001 - one room's failure never costs another room
                if not recoverable(exc):
                    raise
                log.exception("room %s failed after commit", doc_id)

    def failed(self, batch: list[LogEntry], exc: BaseException) -> None:
        for entry in batch:
            room = self._rooms.get(entry.doc_id)
            if room is not None:
                room.failed(entry, exc)

