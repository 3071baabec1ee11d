"""The Hub: owns the store, the journal, the rooms, the event bus and the live sockets.

It is what the Starlette app keeps in ``app.state.hub``; the websocket endpoint and the REST API
both act through it. Its lifecycle is explicit (:class:`HubState`) because shutdown order is what
makes SIGTERM lose nothing: stop accepting → drain in-flight frames → commit → snapshot → close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import Callable, TypeVar

from .auth import Authenticator
from .cluster import Cluster
from .config import Settings
from .events import Event, EventBus, create_bus
from .history import History
from .journal import Journal
from .metrics import HubMetrics
from .peers import Peer
from .rooms import Rooms, RoomSettings
from .store import Store

__all__ = ["Hub", "HubState"]

T = TypeVar("T")

log = logging.getLogger("tinymorph.hub")


class HubState(Enum):
    CREATED = "created"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class Hub:
    def __init__(self, settings: Settings, bus: EventBus | None = None) -> None:
        self.settings = settings
        self.store = Store(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous,
                           limits=settings.update_limits(), allocate_seq=bool(settings.cluster_url))
        #: The other hub processes serving the same documents (None: this one is alone).
        self.cluster: Cluster | None = None
        if settings.cluster_url:
            self.cluster = Cluster(settings.cluster_url, self.store, gap_s=settings.cluster_gap_ms / 1000,
                                   check_s=settings.cluster_check_s,
                                   presence_ttl_s=settings.cluster_presence_ttl_s,
                                   on_relay_lag=lambda s: self.metrics.relay_lag.observe(s))
        self.auth = Authenticator(self.store, settings.signing_secret(), settings.auth_mode, settings.token_ttl_s)
        self.bus = bus or create_bus(settings.event_bus)
        self.history = History(self.store)
        self.metrics = HubMetrics(self)
        self.state = HubState.CREATED
        self.journal: Journal | None = None
        self.rooms: Rooms | None = None
        #: Extensions' Alembic script directories, migrated after the hub's own tables.
        self.migrations: list[Path] = []
        self._peers: set[Peer] = set()
        self._token_watch: asyncio.Task | None = None
        #: Sockets accepted and not yet finished (``max_connections`` counts these).
        self.sockets = 0
        self._history_pool = ThreadPoolExecutor(max(1, settings.history_workers), thread_name_prefix="history")
        self.frames_received = 0
        self._last_frame = 0.0

    async def start(self) -> None:
        await asyncio.to_thread(self.store.migrate, *self.migrations)
        await self.bus.start()
        self.journal = Journal(
            self.store,
            on_commit=self._committed,
            on_fail=self._failed,
            delay_s=self.settings.commit_delay_ms / 1000,
            group_size=self.settings.commit_group_size,
            max_batch=self.settings.commit_max_batch,
            max_pending=self.settings.commit_max_pending,
            metrics=self.metrics,
        )
        self.rooms = Rooms(
            self.store,
            self.journal,
            self.bus,
            RoomSettings(
                snapshot_every=self.settings.snapshot_every,
                grace_s=self.settings.room_grace_s,
                retention_days=self.settings.retention_days,
                auto_create=self.settings.auto_create_docs,
                limits=self.settings.update_limits(),
                awareness_max_clients=self.settings.awareness_max_clients,
            ),
            cluster=self.cluster,
        )
        if self.cluster is not None:
            await self.cluster.start()
        self.journal.start()
        self.bus.subscribe("token.revoked", self._on_token_revoked)
        self._token_watch = asyncio.create_task(self._watch_tokens())
        self.state = HubState.RUNNING
        log.info("hub running on %s (auth: %s)", self._safe_url(), self.settings.auth_mode)

    async def replay(self, work: Callable[[], T]) -> T:
        """Run history work (replays of the log) on its own small pool: however many review
        requests arrive, they queue there, and a socket's join never waits behind them."""
        return await asyncio.get_running_loop().run_in_executor(self._history_pool, work)

    async def document_state(self, doc_id: str) -> tuple[bytes | None, int]:
        """The committed state of a document and its log position: from its room when open."""
        room = self.rooms.get(doc_id) if self.rooms else None
        if room is not None:
            return room.doc.get_update(), room.applied_seq
        loaded = await asyncio.to_thread(self.store.load, doc_id)
        return loaded.state, loaded.seq

    # The journal calls these; they route to the rooms (kept as methods so rooms can be swapped).
    def _committed(self, batch) -> None:
        self.rooms.committed(batch)

    def _failed(self, batch, exc) -> None:
        self.rooms.failed(batch, exc)

    # -- sockets --------------------------------------------------------------------------

    def register(self, peer: Peer) -> None:
        self._peers.add(peer)

    def unregister(self, peer: Peer) -> None:
        self._peers.discard(peer)

    def frame_received(self) -> None:
        self.frames_received += 1
        self._last_frame = time.monotonic()

    @property
    def peers(self) -> set[Peer]:
        return self._peers

    async def _on_token_revoked(self, event: Event) -> None:
        token_id = event.data.get("token_id")
        for peer in list(self._peers):
            if peer.identity.token_id == token_id:
                log.info("closing %s on %s: token revoked", peer.label, event.doc_id)
                peer.close(4410, "token revoked")

    async def _watch_tokens(self) -> None:
        """Tokens hold on open sockets, not only at connect: every ``token_check_s`` a socket
        whose token expired is closed with 4401, and one whose token was revoked with 4410 —
        the check behind the ``token.revoked`` event, for when the bus missed it (Redis down)."""
        while True:
            await asyncio.sleep(self.settings.token_check_s)
            try:
                now = time.time()
                for peer in list(self._peers):
                    expires = peer.identity.expires_at
                    if expires is not None and now >= expires:
                        log.info("closing %s: token expired", peer.label)
                        peer.close(4401, "token expired")
                ids = sorted({p.identity.token_id for p in self._peers if p.identity.token_id})
                revoked = await asyncio.to_thread(self.store.revoked_among, ids) if ids else set()
                for peer in list(self._peers):
                    if peer.identity.token_id in revoked:
                        log.info("closing %s: token revoked", peer.label)
                        peer.close(4410, "token revoked")
            except Exception:  # noqa: BLE001 - a database hiccup: try again next time
                log.exception("token check failed")

    async def revoke(self, doc_id: str, token_id: str) -> bool:
        """Revoke in the database, then tell every process (via the bus) to close its sockets."""
        if not await asyncio.to_thread(self.store.revoke_token, token_id):
            return False
        self.bus.publish(Event("token.revoked", doc_id, {"token_id": token_id}))
        return True

    # -- shutdown -------------------------------------------------------------------------

    async def drain(self, quiet_s: float = 0.3, max_s: float = 5.0) -> None:
        """Refuse new sockets and keep reading the open ones until they have been quiet for
        ``quiet_s``, so a burst that is on the wire when SIGTERM lands is still accepted."""
        self.state = HubState.DRAINING
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline and self._peers:
            if time.monotonic() - self._last_frame >= quiet_s:
                break
            await asyncio.sleep(quiet_s / 4)
        if self.journal:
            await self.journal.drain()

    async def stop(self) -> None:
        """Commit everything accepted, snapshot the rooms, release the database."""
        if self.state is HubState.STOPPED:
            return
        self.state = HubState.DRAINING
        if self._token_watch:
            self._token_watch.cancel()
        for peer in list(self._peers):
            peer.close(1012, "server restarting")
        if self.journal:
            await self.journal.stop()
        if self.journal:
            log.info("journal drained: %d updates in %d commits", self.journal.committed, self.journal.batches)
        if self.rooms:
            await self.rooms.close()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.bus.stop()
        self._history_pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.store.close)
        self.state = HubState.STOPPED

    def _safe_url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.store.url).render_as_string(hide_password=True)
