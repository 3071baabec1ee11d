"""The ``/ws/{doc_id}`` endpoint: where every websocket frame enters the hub.

Accept → authenticate (``?token=``) → join the room → read frames until the socket closes.
Each frame is size-checked and decoded here, then handed to the room. Any bad input closes this
socket only, with the close code of its exception (see ``exceptions.py``) and a log line; nothing
from the bad frame is applied and the room and its other peers carry on.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.websockets import WebSocket

from .exceptions import HubShuttingDown, MessageTooLarge, ProtocolError, TinymorphError
from .hub import Hub, HubState
from .peers import Peer, PeerState
from .protocol import decode_message

__all__ = ["websocket_endpoint"]

log = logging.getLogger("tinymorph.sockets")


async def websocket_endpoint(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    doc_id = websocket.path_params["doc_id"]
    # Accept first so that refusals reach the client as a close code and reason, which a
    # browser can read, instead of a bare failed handshake.
    await websocket.accept()
    try:
        if hub.state is not HubState.RUNNING:
            raise HubShuttingDown("server is shutting down; reconnect shortly")
        identity = await asyncio.to_thread(hub.auth.for_document, websocket.query_params.get("token"), doc_id)
        room = await hub.rooms.acquire(doc_id)
    except TinymorphError as exc:
        log.warning("refused socket for %s: %s (%d)", doc_id, exc, exc.close_code)
        await websocket.close(exc.close_code, exc.reason)
        return

    peer = Peer(websocket, identity)
    hub.register(peer)
    room.join(peer)
    limit = hub.settings.max_message_bytes
    journal = hub.journal
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes")
            if data is None:
                raise ProtocolError("text frames are not part of the y-websocket protocol")
            if len(data) > limit:
                raise MessageTooLarge(f"message of {len(data)} bytes is over the {limit}-byte limit")
            hub.frame_received()
            room.receive(peer, decode_message(data))
            await journal.wait_for_space()
    except TinymorphError as exc:
        log.warning("closing %s on %s: %s (%d)", peer.label, doc_id, exc, exc.close_code)
        peer.close(exc.close_code, exc.reason)
    except Exception:
        log.exception("internal error on socket of %s on %s", peer.label, doc_id)
        peer.close(1011, "internal error")
    finally:
        room.leave(peer)
        hub.unregister(peer)
        hub.rooms.release(room)
        if peer.state is PeerState.CLOSING:
            try:
                await asyncio.wait_for(peer.wait_closed(), timeout=2)
            except (asyncio.TimeoutError, Exception):
                pass
        peer.discard()
