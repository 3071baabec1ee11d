"""uvicorn's sans-I/O websocket protocol with a fast path for the frames the hub lives on.

Why: a y-websocket room is a stream of small binary messages, each fanned out to every peer.
Through uvicorn's ``websockets-sansio`` protocol each one costs a pass through the websockets
parser (a generator per frame), a ``Frame`` object, and a pause and resume of the socket's
reading (two event-loop registrations); each send builds another ``Frame`` and a list of
writes. Together that was about a third of the hub's CPU per keystroke. Neither uvicorn nor
websockets has a cheaper mode, so this subclass adds one, and leaves everything else to them:

- **Receiving.** From the moment the app accepts the socket this protocol reads frame headers itself. A
  complete, final, masked binary frame within the size limit (what every y-websocket client
  sends) is unmasked with websockets' C ``apply_mask`` and queued for the app as uvicorn
  would. Any other frame (ping, pong, close, text, fragments, reserved bits) is handed to the
  websockets parser whole, so that parser always starts at a frame boundary and applies the
  protocol's rules exactly as before. A frame it cannot hand over whole (an oversized one, an
  unmasked one) switches the connection to the websockets parser for good, which then fails it
  with the right close code.
- **Direct delivery.** An app that registers a receiver through the ``RECEIVE_DIRECT`` extension
  gets those binary messages by a plain call from ``data_received`` whenever it is waiting in
  ``receive`` with nothing queued: no queue, no task wake-up, no ASGI message dict. Whenever
  the app is busy with an earlier message, or has unregistered its receiver, messages queue
  as usual, so their order never changes.
- **Flow control.** Reading pauses when the app has ``PAUSE_AT`` messages waiting and resumes
  when it has drained them to ``RESUME_AT``, instead of pausing after every message. The hub's
  own backpressure (the journal) still stops reading when the database falls behind.
- **Sending.** A binary message on an open connection is framed here (a server frame is a
  2-10 byte header, never masked) and written in one call, through ``send`` or, without a
  coroutine, through the ``SEND_NOWAIT`` extension; everything else goes through uvicorn's
  ``send`` unchanged.

With permessage-deflate negotiated the fast paths are off and the parent class does it all.

None of this is uvicorn's or websockets' public API. ``wsprotocol.PRIVATE_API`` lists every
internal used here (keep it in step) and is checked at import; the server only serves with this
class when all are present (see ``server.choose_protocol``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import apply_mask
from websockets.protocol import State

from .wsprotocol import RECEIVE_DIRECT, SEND_NOWAIT

__all__ = ["HubWebSocketProtocol", "frame_header"]

log = logging.getLogger("tinymorph.wsprotocol")

_FIN_BINARY = 0x82  # FIN bit + opcode 2, no reserved bits
_MASKED = 0x80


def frame_header(length: int) -> bytes:
    """The header of an unmasked, final binary frame of ``length`` bytes (RFC 6455 5.2)."""
    if length < 126:
        return bytes((_FIN_BINARY, length))
    if length < 1 << 16:
        return bytes((_FIN_BINARY, 126)) + length.to_bytes(2, "big")
    return bytes((_FIN_BINARY, 127)) + length.to_bytes(8, "big")


class HubWebSocketProtocol(WebSocketsSansIOProtocol):
    PAUSE_AT = 64
    RESUME_AT = 8

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Set once the handshake is done: we parse frames ourselves (see the module docstring).
        self._fast = False
        #: Bytes of a frame that has not fully arrived yet (fast mode only).
        self._partial = bytearray()
        #: Its full size, once its header has arrived (so a large frame is not re-parsed per read).
        self._need = 0
        self._max_size = self.config.ws_max_size
        #: The app's direct receiver, and whether the app is parked in ``receive`` right now.
        self._receiver: Callable[[bytes], None] | None = None
        self._app_waiting = False

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # absent when the handshake was refused
        if scope is not None:
            scope["extensions"][SEND_NOWAIT] = self.send_nowait
            scope["extensions"][RECEIVE_DIRECT] = self.receive_direct

    def receive_direct(self, receiver: Callable[[bytes], None] | None) -> None:
        self._receiver = receiver

    # -- receiving ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._fast or self.close_sent:
            self._fast = False
            return super().data_received(data)
        if self._partial:
            self._partial += data
            if len(self._partial) < self._need:
                return
            data, self._partial = bytes(self._partial), bytearray()
        pos, end = 0, len(data)
        while pos < end:
            frame_end = self._next_frame(data, pos, end)
            if frame_end is None:  # incomplete: keep it for the next read
                self._partial += data[pos:]
                return
            if frame_end < 0:  # not ours to judge: websockets takes the rest of the stream
                self._fast = False
                return super().data_received(data[pos:])
            pos = frame_end
            if not self._fast:  # a frame handed over changed the state (close, error)
                if pos < end:
                    super().data_received(data[pos:])
                return

    def _next_frame(self, data: bytes, pos: int, end: int) -> int | None:
        """Handle the frame at ``pos``: its end offset, None if it is incomplete, -1 if the rest
        of the stream must go to the websockets parser."""
        self._need = 0
        if end - pos < 2:
            return None
        b0, b1 = data[pos], data[pos + 1]
        length, head = b1 & 0x7F, pos + 2
        if length == 126:
            if end - pos < 4:
                return None
            length, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
        elif length == 127:
            if end - pos < 10:
                return None
            length, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
        if not b1 & _MASKED or length > self._max_size:
            return -1  # websockets fails the connection (1002 unmasked, 1009 too big)
        frame_end = head + 4 + length
        if frame_end > end:
            self._need = frame_end - pos
            return None
        if b0 == _FIN_BINARY and self.conn.current_size is None:
            payload = apply_mask(data[head + 4 : frame_end], data[head : head + 4])
            self._deliver(payload)
        else:  # control, text, fragment, reserved bits: websockets' rules, from a frame boundary
            super().data_received(data[pos:frame_end])
            self._fast = self.conn.state is State.OPEN and self.conn.parser_exc is None and not self.close_sent
        return frame_end

    def _deliver(self, payload: bytes) -> None:
        if self.close_sent:
            return  # as uvicorn: past `websocket.close`, messages are discarded
        if self._receiver is not None and self._app_waiting and not self.queue.qsize():
            try:
                self._receiver(payload)
            except Exception:
                log.exception("direct receiver failed; closing the connection")
                self._receiver = None
                self.conn.fail(1011, "internal error")  # as uvicorn fails a keepalive timeout
                self.queue.put_nowait({"type": "websocket.disconnect", "code": 1011, "reason": "internal error"})
                self.transport.write(b"".join(self.conn.data_to_send()))
                self.close_sent = True
                self.transport.close()
            return
        self.queue.put_nowait({"type": "websocket.receive", "bytes": payload})
        self._throttle()

    def send_receive_event_to_app(self) -> None:
        # The parent pauses reading after every message; keep its delivery, pause by watermark.
        was_paused = self.read_paused
        self.read_paused = True  # tells the parent not to pause
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = was_paused
        self._throttle()

    def _throttle(self) -> None:
        if not self.read_paused and self.queue.qsize() >= self.PAUSE_AT:
            self.read_paused = True
            self.transport.pause_reading()

    async def receive(self) -> Any:
        self._app_waiting = True
        try:
            message = await self.queue.get()
        finally:
            self._app_waiting = False
        if self.read_paused and self.queue.qsize() <= self.RESUME_AT and not self.disconnected:
            self.read_paused = False
            self.transport.resume_reading()
        return message

    # -- sending --------------------------------------------------------------------------

    def send_nowait(self, data: bytes) -> bool:
        """Frame and write a binary message now, if the connection can take it without waiting."""
        if not self._fast_send_ok():
            return False
        if len(data) < 1 << 16:
            self.transport.write(frame_header(len(data)) + data)
        else:  # don't copy a large payload just to put a header in front of it
            self.transport.writelines((frame_header(len(data)), data))
        return True

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.send" and (data := message.get("bytes")) is not None:
            if self.send_nowait(data):
                return
        await super().send(message)
        if message["type"] == "websocket.accept":
            # The handshake is done and the parser waits at a frame boundary with nothing
            # buffered (a client sends no frame before our 101): from here on we read frames.
            self._fast = (
                self.conn.state is State.OPEN and not self.conn.extensions and not self.conn.reader.buffer
            )

    def _fast_send_ok(self) -> bool:
        return (
            self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.initial_response is None
            and self.writable.is_set()
            and self.conn.state is State.OPEN
            and not self.conn.extensions
        )
