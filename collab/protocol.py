"""The y-websocket wire protocol: decode a frame into a typed message, encode the replies.

pycrdt ships encoders for these messages but its decoder trusts its input (a truncated frame
raises IndexError or reads garbage), so decoding is written here with bounds checks: every
malformed frame becomes a :class:`ProtocolError` that closes only the offending socket.

Frame layout (lib0 encoding): ``varuint message_type`` then, by type,
- SYNC (0): ``varuint sync_type`` + ``varbytes payload`` (a state vector or a Yjs update);
- AWARENESS (1): ``varbytes awareness_update``;
- AUTH (2): ``varuint 0`` + ``varstring reason`` (server → client: permission denied);
- QUERY_AWARENESS (3): nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum

from .exceptions import ProtocolError

__all__ = [
    "MessageType",
    "SyncType",
    "Message",
    "decode_message",
    "decode_awareness",
    "decode_auth",
    "sync_step1",
    "sync_step2",
    "sync_update",
    "awareness_message",
    "permission_denied",
    "decode_state_vector",
    "update_first_client",
    "has_structs",
    "EMPTY_UPDATE",
]

#: An update with no structs and an empty delete set: what a client with nothing new sends.
EMPTY_UPDATE = b"\x00\x00"


class MessageType(IntEnum):
    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3


class SyncType(IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    sync_type: SyncType | None = None
    payload: bytes = b""


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def varuint(self) -> int:
        pos = self.pos
        if pos < len(self.buf) and (byte := self.buf[pos]) < 0x80:  # one byte: most of them
            self.pos = pos + 1
            return byte
        value = shift = 0
        while True:
            if self.pos >= len(self.buf):
                raise ProtocolError("truncated frame: varuint runs past the end")
            byte = self.buf[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ProtocolError("malformed frame: varuint longer than 64 bits")

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise ProtocolError("truncated frame: a byte runs past the end")
        self.pos += 1
        return self.buf[self.pos - 1]

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise ProtocolError(f"truncated frame: payload says {n} bytes, {len(self.buf) - self.pos} left")
        self.pos += n

    def varbytes(self) -> bytes:
        n = self.varuint()
        start = self.pos
        self.skip(n)
        return self.buf[start : self.pos]

    def done(self) -> bool:
        return self.pos == len(self.buf)


def decode_message(frame: bytes) -> Message:
    """Parse one websocket binary message; raise ProtocolError for anything not well formed."""
    if not frame:
        raise ProtocolError("empty frame")
    # A keystroke: sync update (0, 2) with a one-byte length that spans the rest of the frame.
    if 3 < len(frame) < 131 and frame[0] == 0 and frame[1] == 2 and frame[2] == len(frame) - 3:
        return Message(MessageType.SYNC, SyncType.UPDATE, frame[3:])
    r = _Reader(frame)
    kind = r.varuint()
    if kind == MessageType.SYNC:
        sub = r.varuint()
        if sub not in (0, 1, 2):
            raise ProtocolError(f"unknown sync message type {sub}")
        payload = r.varbytes()
        msg = Message(MessageType.SYNC, SyncType(sub), payload)
    elif kind == MessageType.AWARENESS:
        msg = Message(MessageType.AWARENESS, None, r.varbytes())
    elif kind == MessageType.QUERY_AWARENESS:
        msg = Message(MessageType.QUERY_AWARENESS)
    elif kind == MessageType.AUTH:
        raise ProtocolError("auth messages only travel from server to client")
    else:
        raise ProtocolError(f"unknown message type {kind}")
    if not r.done():
        raise ProtocolError(f"malformed frame: {len(frame) - r.pos} trailing bytes")
    return msg


def decode_auth(frame: bytes) -> str:
    """The reason of a server's auth (permission denied) message; clients use this."""
    r = _Reader(frame)
    if r.varuint() != MessageType.AUTH:
        raise ProtocolError("not an auth message")
    r.varuint()  # 0: permission denied, the only auth message y-websocket defines
    return r.varbytes().decode(errors="replace")


def decode_awareness(update: bytes) -> list[tuple[int, int, dict | None]]:
    """Validate an awareness update: ``[(client_id, clock, state or None)]``.

    Checked before pycrdt's Awareness sees it, because that would fail half way through.
    """
    r = _Reader(update)
    out = []
    for _ in range(r.varuint()):
        client_id, clock = r.varuint(), r.varuint()
        raw = r.varbytes()
        try:
            state = json.loads(raw) if raw else None
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError(f"awareness state of client {client_id} is not JSON") from exc
        if state is not None and not isinstance(state, dict):
            raise ProtocolError(f"awareness state of client {client_id} is not an object")
        out.append((client_id, clock, state))
    if not r.done():
        raise ProtocolError("malformed awareness update: trailing bytes")
    return out


def decode_state_vector(state_vector: bytes) -> list[tuple[int, int]]:
    """``[(client_id, clock)]`` of an encoded state vector (e.g. ``pycrdt.get_state(update)``)."""
    r = _Reader(state_vector)
    return [(r.varuint(), r.varuint()) for _ in range(r.varuint())]


def update_first_client(update: bytes) -> int | None:
    """The Yjs client id of the first struct group of a (v1) update, or None if it has none.

    ``pycrdt.get_state(update)`` cannot tell: it only counts structs that start at clock 0.
    """
    r = _Reader(update)
    if r.varuint() == 0:
        return None
    r.varuint()  # number of structs of this client
    return r.varuint()


def has_structs(update: bytes) -> bool:
    """Whether a (v1) update carries any new items (as opposed to only a delete set)."""
    return bool(update) and update[0] != 0


def _varuint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def _sync(sub: SyncType, payload: bytes) -> bytes:
    return bytes((MessageType.SYNC, sub)) + _varuint(len(payload)) + payload


def sync_step1(state_vector: bytes) -> bytes:
    return _sync(SyncType.STEP1, state_vector)


def sync_step2(update: bytes) -> bytes:
    return _sync(SyncType.STEP2, update)


def sync_update(update: bytes) -> bytes:
    return _sync(SyncType.UPDATE, update)


def awareness_message(update: bytes) -> bytes:
    return bytes((MessageType.AWARENESS,)) + _varuint(len(update)) + update


def permission_denied(reason: str) -> bytes:
    """y-websocket's auth message; the stock client logs it and stays read-only."""
    text = reason.encode()
    return bytes((MessageType.AUTH, 0)) + _varuint(len(text)) + text
