"""A Python y-websocket client on pycrdt: what agents (and tests) use to join a document as a peer.

Edits made on ``client.doc`` are sent as sync updates; remote updates are applied as they come;
presence goes through a pycrdt ``Awareness``. pycrdt has the primitives but no client loop, hence
this module.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import websockets
from pycrdt import Awareness, Doc, Text
from websockets.asyncio.client import ClientConnection, connect

from .protocol import (
    MessageType,
    SyncType,
    awareness_message,
    decode_auth,
    decode_message,
    sync_step1,
    sync_step2,
    sync_update,
)

__all__ = ["HubClient"]


class HubClient:
    def __init__(
        self,
        ws_url: str,
        doc_id: str,
        *,
        token: str | None = None,
        presence: dict[str, Any] | None = None,
        doc: Doc | None = None,
    ) -> None:
        self.url = f"{ws_url.rstrip('/')}/{doc_id}" + (f"?token={token}" if token else "")
        self.doc_id = doc_id
        self.doc = doc or Doc()
        self.text: Text = self.doc.get("content", type=Text)
        self.awareness = Awareness(self.doc)
        self.awareness.set_local_state(presence)
        self.denied: list[str] = []
        #: Sync update messages received (a hub merges a slow reader's backlog into fewer).
        self.updates_received = 0
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._ws: ClientConnection | None = None
        self._synced = asyncio.Event()
        self._closed = asyncio.Event()
        self._applying = False
        self._reader: asyncio.Task | None = None
        self._changed = asyncio.Event()
        self._doc_sub = None
        self._aw_sub = None
        self._outbox: asyncio.Queue[bytes] | None = None
        self._sender: asyncio.Task | None = None

    async def __aenter__(self) -> "HubClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._ws = await connect(self.url, compression=None, max_size=None)
        self._outbox = asyncio.Queue()
        self._sender = asyncio.create_task(self._send_loop())
        self._doc_sub = self.doc.observe(self._on_doc_update)
        self._aw_sub = self.awareness.observe(self._on_awareness)
        self._reader = asyncio.create_task(self._read())
        try:
            await self._ws.send(sync_step1(self.doc.get_state()))
            if self.awareness.get_local_state() is not None:
                await self._send_awareness()
        except websockets.ConnectionClosed:
            pass  # refused at once (bad token, unknown document): see close_code

    async def synced(self, timeout: float = 10) -> None:
        """Wait for the server's answer to our sync step 1 (the document is then complete)."""
        await asyncio.wait_for(self._synced.wait(), timeout)

    async def wait_for(self, predicate, timeout: float = 10) -> None:
        """Wait until ``predicate()`` is true, re-checking after every remote change."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_closed(self, timeout: float = 10) -> None:
        await asyncio.wait_for(self._closed.wait(), timeout)

    def set_presence(self, state: dict[str, Any] | None) -> None:
        self.awareness.set_local_state(state)

    @property
    def peers(self) -> dict[int, dict[str, Any]]:
        """Presence of everybody else in the room."""
        return {cid: s for cid, s in self.awareness.states.items() if cid != self.awareness.client_id}

    async def send_raw(self, frame: bytes | str) -> None:
        """Send an arbitrary frame (tests of bad input use this)."""
        await self._ws.send(frame)

    async def close(self) -> None:
        if self._ws is None:
            return
        with contextlib.suppress(Exception):
            self.awareness.set_local_state(None)  # queues our presence's removal
            await self.flush()
            await self._ws.close()
        if self._reader:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(self._reader, 5)
        if self._sender:
            self._sender.cancel()
        self._unobserve()

    def _unobserve(self) -> None:
        if self._doc_sub is not None:
            self.doc.unobserve(self._doc_sub)
            self._doc_sub = None
        if self._aw_sub is not None:
            self.awareness.unobserve(self._aw_sub)
            self._aw_sub = None

    # -- internals ------------------------------------------------------------------------

    def _on_doc_update(self, event) -> None:
        if not self._applying and self._outbox is not None:
            self._spawn_send(sync_update(event.update))

    def _on_awareness(self, topic: str, changes) -> None:
        if topic == "update" and changes[1] == "local":
            self._spawn_send(awareness_message(self.awareness.encode_awareness_update([self.awareness.client_id])))

    def _spawn_send(self, frame: bytes) -> None:
        # Frames must leave in the order edits were made: one queue, one sender task.
        self._outbox.put_nowait(frame)

    async def _send_loop(self) -> None:
        while True:
            frame = await self._outbox.get()
            try:
                await self._ws.send(frame)
            except websockets.ConnectionClosed:
                return

    async def flush(self) -> None:
        """Wait until every queued edit has been handed to the socket."""
        while self._outbox is not None and not self._outbox.empty():
            await asyncio.sleep(0.005)

    async def _send_awareness(self) -> None:
        await self._ws.send(awareness_message(self.awareness.encode_awareness_update([self.awareness.client_id])))

    async def _read(self) -> None:
        try:
            async for frame in self._ws:
                if isinstance(frame, str):
                    continue
                msg = decode_message(frame) if frame[0] != MessageType.AUTH else None
                if msg is None:
                    self.denied.append(decode_auth(frame))
                elif msg.type is MessageType.SYNC:
                    if msg.sync_type is SyncType.STEP1:
                        await self._ws.send(sync_step2(self.doc.get_update(msg.payload)))
                    else:
                        self._apply(msg.payload)
                        self.updates_received += msg.sync_type is SyncType.UPDATE
                        if msg.sync_type is SyncType.STEP2:
                            self._synced.set()
                elif msg.type is MessageType.AWARENESS:
                    self.awareness.apply_awareness_update(msg.payload, "remote")
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code
            self.close_reason = self._ws.close_reason or ""
            self._closed.set()
            self._changed.set()

    def _apply(self, update: bytes) -> None:
        self._applying = True
        try:
            self.doc.apply_update(update)
        finally:
            self._applying = False
