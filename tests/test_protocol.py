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


def _updates_of(doc: pycrdt.Doc) -> list[bytes]:
    out: list[bytes] = []
    doc.observe(lambda event: out.append(event.update))
    return out


def test_update_summary_follows_random_typing_in_any_script():
    """What each update inserts and deletes, read from its bytes, against a mirror of the text."""
    import random

    from collab._yupdate import summarize

    rng = random.Random(7)
    doc = pycrdt.Doc()
    text = doc.get("content", type=pycrdt.Text)
    updates = _updates_of(doc)
    mirror = ""
    alphabet = "abc xyz\né日本🙂"
    for _ in range(400):
        if mirror and rng.random() < 0.35:
            start = rng.randrange(len(mirror))
            end = min(len(mirror), start + rng.randint(1, 5))
            b0, b1 = len(mirror[:start].encode()), len(mirror[:end].encode())  # pycrdt indexes UTF-8 bytes
            del text[b0:b1]
            gone, mirror = mirror[start:end], mirror[:start] + mirror[end:]
            got = summarize(updates[-1])
            assert got.inserted == "" and got.deleted == len(gone.encode("utf-16-le")) // 2
        else:
            at = rng.randrange(len(mirror) + 1)
            s = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
            text.insert(len(mirror[:at].encode()), s)
            mirror = mirror[:at] + s + mirror[at:]
            got = summarize(updates[-1])
            assert got.inserted == s and got.deleted == 0
    assert str(text) == mirror


def test_update_summary_reads_every_kind_of_content():
    """Maps, arrays, nested and formatted text, embeds, XML and subdocuments: only text strings
    count as inserted; replaced and deleted entries count as deleted."""
    from collab._yupdate import summarize

    doc = pycrdt.Doc()
    updates = _updates_of(doc)
    m = doc.get("m", type=pycrdt.Map)
    for key, value in {"none": None, "yes": True, "small": 5, "neg": -70000, "big": 2**40, "float": 1.5,
                       "str": "not typing", "bytes": b"\x00\x01", "list": [1, "two", {"three": [3.0, None]}]}.items():
        m[key] = value
    m["nested"] = pycrdt.Map({"k": "v"})
    m["note"] = pycrdt.Text("a note")
    a = doc.get("a", type=pycrdt.Array)
    a.extend([1, "x", pycrdt.Array([2])])
    t = doc.get("t", type=pycrdt.Text)
    t.insert(0, "bold", {"bold": True})
    t.insert_embed(4, {"image": "a.png"})
    xml = doc.get("x", type=pycrdt.XmlFragment)
    xml.children.append(pycrdt.XmlElement("p", {"class": "c"}, [pycrdt.XmlText("hi")]))
    m["sub"] = pycrdt.Doc()
    first = len(updates)
    m["small"] = 6  # replaces one entry
    del t[0:2]
    summaries = [summarize(u) for u in updates]
    assert "".join(s.inserted for s in summaries[:first]) == "a notebold" + "hi"
    assert [(s.inserted, s.deleted) for s in summaries[first:]] == [("", 1), ("", 2)]
    with pytest.raises(ProtocolError):
        summarize(updates[0][:-3])
