"""The ``/ws/{doc_id}`` endpoint: where every websocket frame enters the hub.

Accept → authenticate (``?token=``) → join the room → read frames until the socket closes.
Each frame is size-checked and decoded here, then handed to the room. Any bad input closes this
socket only, with the close code of its exception (see ``exceptions.py``) and a log line; nothing
from the bad frame is applied, nothing after it is read, and the room and its other peers carry on.

Frames arrive two ways, both through :meth:`Connection.handle`: as ASGI messages from
``websocket.receive()``, and, with the hub's own uvicorn protocol, by a direct call from the
socket while this endpoint waits (the ``RECEIVE_DIRECT`` extension, see ``wsprotocol.py``), which
spares every keystroke a queue, a task switch and Starlette's receive chain. The protocol only
calls directly when nothing is queued, so frames are handled in the order they arrived either way.
On uvicorn's stock protocol (the fallback) the extension is absent and every frame is received.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.websockets import WebSocket

from .exceptions import (
    HubShuttingDown,
    MessageTooLarge,
    ProtocolError,
    RateLimited,
    TinymorphError,
    TooManyConnections,
    recoverable,
)
from .hub import Hub, HubState
from .peers import Peer, PeerState
from .protocol import MessageType, SyncType, decode_message
from .rooms import Room
from .wsprotocol import RECEIVE_DIRECT

__all__ = ["websocket_endpoint", "TOKEN_SUBPROTOCOL"]

TOKEN_SUBPROTOCOL = "tinymorph.token."

log = logging.getLogger("tinymorph.sockets")


class Connection:
    """One socket's inbound side, from join to leave."""

    def __init__(self, hub: Hub, room: Room, peer: Peer, websocket: WebSocket) -> None:
        self.hub = hub
        self.room = room
        self.peer = peer
        self.websocket = websocket
        self.limit = hub.settings.max_message_bytes
        self.journal = hub.journal
        #: Set once a frame was refused: the socket is closing and nothing more is read.
        self.failed = False
        self._direct = (websocket.scope.get("extensions") or {}).get(RECEIVE_DIRECT)
        #: Presence, sync step 1 and queries cost the hub a reply each: at most ``control_rate``
        #: a second on average, bursts of ``control_burst`` (a token bucket). Updates are paced by
        #: the journal's backpressure instead: a paste or a replay is real editing.
        self.rate = hub.settings.control_messages_per_s
        self.burst = float(hub.settings.control_messages_burst)
        self._tokens = self.burst
        self._last = time.monotonic()

    def handle(self, data: bytes | None) -> None:
        """One binary message. Raises TinymorphError for bad input (nothing of it is applied)."""
        if data is None:
            raise ProtocolError("text frames are not part of the y-websocket protocol")
        if len(data) > self.limit:
            raise MessageTooLarge(f"message of {len(data)} bytes is over the {self.limit}-byte limit")
        self.hub.frame_received()
        msg = decode_message(data)
        if msg.type is not MessageType.SYNC or msg.sync_type is SyncType.STEP1:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1:
                raise RateLimited(f"over {self.rate:g} presence/sync requests a second")
            self._tokens -= 1
        self.room.receive(self.peer, msg)

    def receive_direct(self, data: bytes) -> None:
        """The socket's direct call. Stops direct delivery while the journal is full, so that
        frames queue up and the socket pauses (see :meth:`run`)."""
        try:
            self.handle(data)
        except BaseException as exc:  # noqa: BLE001 - every failure closes this socket only
            if not recoverable(exc):
                raise
            self.fail(exc)
            return
        if not self.journal.has_space:
            self.stop_direct()

    def stop_direct(self) -> None:
        """From here on frames queue for :meth:`run` (which turns direct delivery on again)."""
        if self._direct is not None:
            self._direct(None)

    def fail(self, exc: BaseException) -> None:
        self.failed = True
        self.stop_direct()
        label, doc_id = self.peer.label, self.room.doc_id
        if isinstance(exc, TinymorphError):
            log.warning("closing %s on %s: %s (%d)", label, doc_id, exc, exc.close_code)
            self.peer.close(exc.close_code, exc.reason)
        else:
            log.error("internal error on socket of %s on %s", label, doc_id, exc_info=exc)
            self.peer.close(1011, "internal error")

    async def run(self) -> None:
        """Read until the socket closes or a frame is refused."""
        while not self.failed:
            if self._direct is not None:
                self._direct(self.receive_direct)  # again, after backpressure stopped it
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect" or self.failed:
                return
            try:
                self.handle(message.get("bytes"))
            except BaseException as exc:  # noqa: BLE001
                if not recoverable(exc):
                    raise
                self.fail(exc)
                return
            await self.journal.wait_for_space()


async def websocket_endpoint(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    doc_id = websocket.path_params["doc_id"]
    # A token comes as ``?token=`` or, kept out of URLs and logs, as a subprotocol
    # ``tinymorph.token.<token>`` (``new WebsocketProvider(url, room, doc, {protocols: [...]})``).
    token, subprotocol = websocket.query_params.get("token"), None
    for offered in websocket.scope.get("subprotocols") or ():
        if offered.startswith(TOKEN_SUBPROTOCOL):
            token, subprotocol = offered[len(TOKEN_SUBPROTOCOL):], offered
            break
    # Accept first so that refusals reach the client as a close code and reason, which a
    # browser can read, instead of a bare failed handshake.
    await websocket.accept(subprotocol)
    # Counted from the accept, before anything awaits: sockets still authenticating count too,
    # or a burst of connections would all pass the check before the first one registered.
    if hub.sockets >= hub.settings.max_connections:
        exc = TooManyConnections(f"the hub holds its limit of {hub.settings.max_connections} sockets")
        log.warning("refused socket for %s: %s (%d)", doc_id, exc, exc.close_code)
        await websocket.close(exc.close_code, exc.reason)
        return
    hub.sockets += 1
    try:
        await _serve(hub, websocket, doc_id, token)
    finally:
        hub.sockets -= 1


async def _serve(hub: Hub, websocket: WebSocket, doc_id: str, token: str | None) -> None:
    try:
        if hub.state is not HubState.RUNNING:
            raise HubShuttingDown("server is shutting down; reconnect shortly")
        # A token is looked up in the database (revocation): off the event loop. Without one
        # nothing is (open mode: a guest; tokens mode: refused), so no thread hop for it.
        identity = (hub.auth.for_document(token, doc_id) if not token
                    else await asyncio.to_thread(hub.auth.for_document, token, doc_id))
        room = await hub.rooms.acquire(doc_id)
    except TinymorphError as exc:
        log.warning("refused socket for %s: %s (%d)", doc_id, exc, exc.close_code)
        await websocket.close(exc.close_code, exc.reason)
        return

    peer = Peer(websocket, identity, hub.settings.max_peer_queue_bytes)
    hub.register(peer)
    room.join(peer)
    conn = Connection(hub, room, peer, websocket)
    try:
        await conn.run()
    except Exception as exc:  # noqa: BLE001 - e.g. the ASGI server failing the receive
        conn.fail(exc)
    finally:
        conn.stop_direct()
        room.leave(peer)
        hub.unregister(peer)
        hub.rooms.release(room)
        if peer.state is PeerState.CLOSING:
            try:
                await asyncio.wait_for(peer.wait_closed(), timeout=2)
            except (asyncio.TimeoutError, Exception):
                pass
        peer.discard()
