"""One connected client's outbound side: a queue drained by its own writer task.

Broadcasting only appends the (shared, already encoded) message to each peer's queue, so a slow
or stalled client never delays the others. When a peer falls behind, the updates waiting in its
queue are merged into one (pycrdt's ``merge_updates``) and sent as a single message. A send to a
peer that has gone is dropped: the peer is marked closed and its queue discarded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from enum import Enum
from typing import Any

import pycrdt
from starlette.websockets import WebSocket

from .auth import Identity
from .protocol import sync_update

__all__ = ["Peer", "PeerState"]

log = logging.getLogger("tinymorph.peers")


class PeerState(Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Peer:
    def __init__(self, websocket: WebSocket, identity: Identity) -> None:
        self.websocket = websocket
        self.identity = identity
        self.state = PeerState.OPEN
        #: Yjs client ids whose awareness this socket has announced (removed when it closes).
        self.client_ids: set[int] = set()
        # Each item: (yjs_update_or_None, encoded_message). Updates can be merged while queued.
        self._queue: deque[tuple[bytes | None, bytes]] = deque()
        self._ready = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._writer = asyncio.create_task(self._write(), name=f"peer-writer-{id(self):x}")
        self.sent = 0

    @property
    def label(self) -> str:
        return f"{self.identity.name}({self.identity.role})"

    def send(self, message: bytes, update: bytes | None = None) -> None:
        """Queue a message; ``update`` is the raw Yjs update inside it, if it is a sync update."""
        if self.state is not PeerState.OPEN:
            return
        self._queue.append((update, message))
        self._ready.set()

    def close(self, code: int, reason: str) -> None:
        """Send what is queued, then close the socket with ``code``."""
        if self.state is PeerState.OPEN:
            self.state = PeerState.CLOSING
            self._close = (code, reason)
            self._ready.set()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._writer)

    def discard(self) -> None:
        """The socket is gone: stop writing."""
        self.state = PeerState.CLOSED
        self._queue.clear()
        self._writer.cancel()

    async def _write(self) -> None:
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._queue:
                    await self.websocket.send_bytes(self._next_message())
                    self.sent += 1
                if self._close is not None:
                    code, reason = self._close
                    await self.websocket.close(code, reason)
                    self.state = PeerState.CLOSED
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away mid-send: harmless to everyone else
            log.debug("send to %s failed: %r", self.label, exc)
            self.state = PeerState.CLOSED
            self._queue.clear()

    def _next_message(self) -> bytes:
        update, message = self._queue.popleft()
        if update is None or not self._queue or self._queue[0][0] is None:
            return message
        updates = [update]
        while self._queue and self._queue[0][0] is not None:
            updates.append(self._queue.popleft()[0])  # type: ignore[arg-type]
        return sync_update(pycrdt.merge_updates(*updates))

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<Peer {self.label} {self.state.value} queued={len(self._queue)}>"

    def info(self) -> dict[str, Any]:
        return {"user_id": self.identity.user_id, "name": self.identity.name, "role": str(self.identity.role)}
