"""One connected client's outbound side: a queue flushed once per loop turn, without a task.

Broadcasting appends the (shared, already encoded) message to each peer's queue and asks the
loop for one flush per peer; everything that queued up in the meantime (a burst) goes out in
that flush, updates merged into one message (pycrdt's ``merge_updates``). The send coroutine is
run eagerly, in place: a send to a socket that can take it completes without ever suspending
(uvicorn writes to the transport straight away), so the common case costs no task at all. Only
when a send does suspend (the client is slow and its transport is paused) does the peer get a
writer task, which finishes that send and drains what queued up meanwhile, so a slow or stalled
client never delays the others. A send to a peer that has gone is dropped: the peer is marked
closed and its queue discarded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine, Generator
from enum import Enum
from typing import Any

import pycrdt
from starlette.websockets import WebSocket

from .auth import Identity
from .protocol import sync_update
from .wsprotocol import SEND_NOWAIT

__all__ = ["Peer", "PeerState"]

log = logging.getLogger("tinymorph.peers")


class PeerState(Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class _Resumed:
    """Awaitable that carries on a coroutine which was started by hand and then suspended.

    Python 3.12 has eager tasks for this; on 3.11 we step the coroutine ourselves. The future it
    suspended on is handed up to the task that awaits us, exactly as if that task had started it.
    """

    def __init__(self, coro: Coroutine, suspended_on: Any) -> None:
        self.coro = coro
        self.suspended_on = suspended_on

    def __await__(self) -> Generator[Any, None, Any]:
        waiting = self.suspended_on
        while True:
            try:
                try:
                    yield waiting
                except BaseException as exc:  # e.g. cancelled while waiting: the coroutine sees it
                    waiting = self.coro.throw(exc)
                else:
                    waiting = self.coro.send(None)
            except StopIteration as stop:
                return stop.value


def _start(coro: Coroutine) -> _Resumed | None:
    """Run ``coro`` up to its first suspension; None if it finished (exceptions propagate)."""
    try:
        suspended_on = coro.send(None)
    except StopIteration:
        return None
    return _Resumed(coro, suspended_on)


class Peer:
    def __init__(self, websocket: WebSocket, identity: Identity, max_queued_bytes: int = 32 * 1024 * 1024) -> None:
        self.websocket = websocket
        self.identity = identity
        #: A client that does not read is closed (4507) once this much waits for it, instead of
        #: being buffered: its backlog would otherwise grow without bound.
        self.max_queued_bytes = max_queued_bytes
        self._queued_bytes = 0
        #: The sync step 2 reply still queued for this peer, if any: a second step 1 meanwhile is
        #: answered by it (it holds at least what the newer request lacks), not by another copy.
        self.pending_reply: bytes | None = None
        self.state = PeerState.OPEN
        #: Yjs client ids whose awareness this socket has announced (removed when it closes).
        self.client_ids: set[int] = set()
        #: The last log sequence number this socket's updates were given (0: none yet).
        self.last_seq = 0
        # Each item: (yjs_update_or_None, encoded_message). Updates can be merged while queued.
        self._queue: deque[tuple[bytes | None, bytes]] = deque()
        self._close: tuple[int, str] | None = None
        #: The writer task, only while a send is suspended or a backlog drains.
        self._writer: asyncio.Task | None = None
        self._flush_scheduled = False
        #: The server's synchronous send, where it offers one (our uvicorn protocol does; on the
        #: stock one every message goes through the awaitable send).
        self._send_nowait = (websocket.scope.get("extensions") or {}).get(SEND_NOWAIT)
        self._loop = asyncio.get_running_loop()
        self.sent = 0

    @property
    def label(self) -> str:
        return f"{self.identity.name}({self.identity.role})"

    def send(self, message: bytes, update: bytes | None = None, *, later: bool = False) -> None:
        """Queue a message for this loop turn's flush; ``update`` is the raw Yjs update inside
        it, if it is a sync update (those may be merged). ``later``: the caller flushes itself
        (the room does, once per commit for all its peers, which spares a callback per peer)."""
        if self.state is not PeerState.OPEN:
            return
        self._queue.append((update, message))
        self._queued_bytes += len(message)
        if self._queued_bytes > self.max_queued_bytes:
            log.warning("closing %s: %d bytes wait for it (limit %d)", self.label, self._queued_bytes,
                        self.max_queued_bytes)
            self._queue.clear()
            self._queued_bytes = 0
            self.pending_reply = None
            self.close(4507, "too slow: outbound backlog over the limit")
            return
        if not later and self._writer is None and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    @property
    def has_queued(self) -> bool:
        return bool(self._queue)

    def flush(self) -> None:
        """Write what is queued now, unless a writer task owns the socket (it drains the rest)."""
        self._flush_scheduled = False
        while self._queue and self._writer is None and self.state is PeerState.OPEN:
            try:
                message = self._next_message()
                if self._send_nowait is not None and self._send_nowait(message):
                    self.sent += 1
                    continue
                pending = _start(self.websocket.send_bytes(message))
            except Exception as exc:  # the client went away: harmless to everyone else
                self._gone(exc)
                return
            if pending is None:
                self.sent += 1
            else:  # the socket is full: a task finishes this send and drains the rest
                self._writer = asyncio.ensure_future(self._write(pending))

    def close(self, code: int, reason: str) -> None:
        """Send what is queued, then close the socket with ``code``."""
        if self.state is PeerState.OPEN:
            self.state = PeerState.CLOSING
            self._close = (code, reason)
            if self._writer is None:
                self._writer = asyncio.ensure_future(self._write(None))

    async def wait_closed(self) -> None:
        if self._writer is not None:
            await asyncio.shield(self._writer)

    def discard(self) -> None:
        """The socket is gone: stop writing."""
        self.state = PeerState.CLOSED
        self._queue.clear()
        self._queued_bytes = 0
        if self._writer is not None:
            self._writer.cancel()

    async def _write(self, pending: _Resumed | None) -> None:
        """Finish a suspended send, drain the backlog, close if asked; then go idle again."""
        try:
            if pending is not None:
                await pending
                self.sent += 1
            while self._queue:
                await self.websocket.send_bytes(self._next_message())
                self.sent += 1
            if self._close is not None:
                code, reason = self._close
                await self.websocket.close(code, reason)
                self.state = PeerState.CLOSED
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._gone(exc)
        finally:
            self._writer = None

    def _gone(self, exc: BaseException) -> None:
        log.debug("send to %s failed: %r", self.label, exc)
        self.state = PeerState.CLOSED
        self._queue.clear()
        self._queued_bytes = 0

    def _next_message(self) -> bytes:
        update, message = self._queue.popleft()
        self._queued_bytes -= len(message)
        if message is self.pending_reply:
            self.pending_reply = None
        if update is None or not self._queue or self._queue[0][0] is None:
            return message
        updates = [update]
        while self._queue and self._queue[0][0] is not None:
            merged_update, merged = self._queue.popleft()
            self._queued_bytes -= len(merged)
            updates.append(merged_update)  # type: ignore[arg-type]
        return sync_update(pycrdt.merge_updates(*updates))

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<Peer {self.label} {self.state.value} queued={len(self._queue)}>"

    def info(self) -> dict[str, Any]:
        return {"user_id": self.identity.user_id, "name": self.identity.name, "role": str(self.identity.role)}
