"""The y-websocket frame codec: round trips, and every malformed shape is a ProtocolError."""

import pycrdt
import pytest

from collab.exceptions import ProtocolError
from collab.protocol import (
    MessageType,
    SyncType,
    awareness_message,
    decode_awareness,
    decode_message,
    decode_state_vector,
    permission_denied,
    sync_step1,
    sync_step2,
    sync_update,
)


def test_round_trip_matches_pycrdt_encoders():
    doc = pycrdt.Doc()
    doc.get("content", type=pycrdt.Text).insert(0, "hi")
    update = doc.get_update()
    assert sync_update(update) == pycrdt.create_update_message(update)
    assert sync_step1(doc.get_state()) == pycrdt.create_sync_message(doc)
    for encode, kind in ((sync_step1, SyncType.STEP1), (sync_step2, SyncType.STEP2), (sync_update, SyncType.UPDATE)):
        msg = decode_message(encode(update))
        assert (msg.type, msg.sync_type, msg.payload) == (MessageType.SYNC, kind, update)


def test_awareness_decoding():
    aw = pycrdt.Awareness(pycrdt.Doc())
    aw.set_local_state({"user": {"name": "ada"}})
    payload = aw.encode_awareness_update([aw.client_id])
    msg = decode_message(awareness_message(payload))
    assert msg.type is MessageType.AWARENESS
    assert decode_awareness(msg.payload) == [(aw.client_id, 1, {"user": {"name": "ada"}})]  # clock 0 was the empty initial state


def test_state_vector_decoding():
    doc = pycrdt.Doc()
    doc.get("content", type=pycrdt.Text).insert(0, "abc")
    assert decode_state_vector(doc.get_state()) == [(doc.client_id, 3)]


def test_permission_denied_layout():
    assert permission_denied("no") == bytes([2, 0, 2]) + b"no"


@pytest.mark.parametrize(
    "frame",
    [
        b"",  # empty
        b"\x00",  # sync without a sub-type
        b"\x00\x07\x00",  # unknown sync sub-type
        b"\x00\x02\x05ab",  # payload shorter than its length
        b"\x00\x02\x80",  # varuint cut in the middle
        b"\x09",  # unknown message type
        b"\x02\x00\x00",  # auth messages never come from clients
        b"\x01\x01\x00\xff",  # trailing bytes
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # varuint over 64 bits
    ],
)
def test_malformed_frames_raise(frame):
    with pytest.raises(ProtocolError):
        decode_message(frame)


@pytest.mark.parametrize("payload", [b"\x01\x05\x00\x03{x}", b"\x01\x05\x00\x03[1]", b"\x02\x01"])
def test_malformed_awareness_raises(payload):
    with pytest.raises(ProtocolError):
        decode_awareness(payload)
