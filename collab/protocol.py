"""The y-websocket wire protocol: decode a frame into a typed message, encode the replies.

pycrdt ships encoders for these messages but its decoder trusts its input (a truncated frame
raises IndexError or reads garbage), so frames are decoded with :class:`collab.lib0.Reader`,
which checks every bound: a malformed frame becomes a :class:`ProtocolError` that closes only the
offending socket. What a sync payload (an update, a state vector) holds is ``updates.py``'s job.

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
from .lib0 import Reader, Writer, write_var_uint
from .limits import check_json, refuse_constant

__all__ = [
    "MessageType",
    "SyncType",
    "Message",
    "decode_message",
    "decode_awareness",
    "encode_awareness",
    "decode_auth",
    "sync_step1",
    "sync_step2",
    "sync_update",
    "awareness_message",
    "permission_denied",
]


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


def decode_message(frame: bytes) -> Message:
    """Parse one websocket binary message; raise ProtocolError for anything not well formed."""
    if not frame:
        raise ProtocolError("empty frame")
    # A keystroke: sync update (0, 2) with a one-byte length that spans the rest of the frame.
    if 3 < len(frame) < 131 and frame[0] == 0 and frame[1] == 2 and frame[2] == len(frame) - 3:
        return Message(MessageType.SYNC, SyncType.UPDATE, frame[3:])
    r = Reader(frame)
    kind = r.var_uint()
    if kind == MessageType.SYNC:
        sub = r.var_uint()
        if sub not in (0, 1, 2):
            raise ProtocolError(f"unknown sync message type {sub}")
        payload = r.var_bytes()
        msg = Message(MessageType.SYNC, SyncType(sub), payload)
    elif kind == MessageType.AWARENESS:
        msg = Message(MessageType.AWARENESS, None, r.var_bytes())
    elif kind == MessageType.QUERY_AWARENESS:
        msg = Message(MessageType.QUERY_AWARENESS)
    elif kind == MessageType.AUTH:
        raise ProtocolError("auth messages only travel from server to client")
    else:
        raise ProtocolError(f"unknown message type {kind}")
    if not r.at_end():
        raise ProtocolError(f"malformed frame: {len(frame) - r.pos} trailing bytes")
    return msg


def decode_auth(frame: bytes) -> str:
    """The reason of a server's auth (permission denied) message; clients use this."""
    r = Reader(frame)
    if r.var_uint() != MessageType.AUTH:
        raise ProtocolError("not an auth message")
    r.var_uint()  # 0: permission denied, the only auth message y-websocket defines
    return r.var_bytes().decode(errors="replace")


def encode_awareness(entries: list[tuple[int, int, dict | None]]) -> bytes:
    """The awareness update ``decode_awareness`` reads (a state of None is JSON ``null``)."""
    w = Writer().var_uint(len(entries))
    for client_id, clock, state in entries:
        w.var_uint(client_id).var_uint(clock).var_string(json.dumps(state, separators=(",", ":")))
    return w.to_bytes()


#: One decoder for every presence message: ``json.loads`` with an option builds a new one per
#: call. States are read as UTF-8 text, as yjs writes and reads them.
_STATE_DECODER = json.JSONDecoder(parse_constant=refuse_constant)


def decode_awareness(update: bytes, max_depth: int = 64) -> list[tuple[int, int, dict | None]]:
    """Validate an awareness update: ``[(client_id, clock, state or None)]``.

    Checked before pycrdt's Awareness sees it, because that would fail half way through; states
    nested deeper than ``max_depth`` (LimitExceeded) or holding NaN/Infinity, which every
    browser peer would fail to parse, are refused.
    """
    r = Reader(update)
    out = []
    for _ in range(r.var_uint()):
        client_id, clock = r.var_uint(), r.var_uint()
        raw = r.var_bytes()
        check_json(raw, max_depth)
        try:
            state = _STATE_DECODER.decode(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError(f"awareness state of client {client_id} is not JSON") from exc
        if state is not None and not isinstance(state, dict):
            raise ProtocolError(f"awareness state of client {client_id} is not an object")
        out.append((client_id, clock, state))
    if not r.at_end():
        raise ProtocolError("malformed awareness update: trailing bytes")
    return out


# Encoders: pycrdt's ``write_var_uint`` behind constant headers. pycrdt's ``create_update_message``
# builds its two header bytes from enums on every call: 1.3 us a message against 0.5 us here
# (timeit, a keystroke update), and every committed run is relayed through ``sync_update``.
_STEP1, _STEP2, _UPDATE = bytes((0, 0)), bytes((0, 1)), bytes((0, 2))
_AWARENESS = bytes((MessageType.AWARENESS,))


def sync_step1(state_vector: bytes) -> bytes:
    return _STEP1 + write_var_uint(len(state_vector)) + state_vector


def sync_step2(update: bytes) -> bytes:
    return _STEP2 + write_var_uint(len(update)) + update


def sync_update(update: bytes) -> bytes:
    return _UPDATE + write_var_uint(len(update)) + update


def awareness_message(update: bytes) -> bytes:
    return _AWARENESS + write_var_uint(len(update)) + update


def permission_denied(reason: str) -> bytes:
    """y-websocket's auth message; the stock client logs it and stays read-only."""
    return Writer().u8(MessageType.AUTH).var_uint(0).var_string(reason).to_bytes()
