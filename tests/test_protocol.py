"""The Yjs byte layer: lib0 reader/writer bounds, the y-websocket frame codec (round trips, and
every malformed shape is a ProtocolError), the update reader and the scratch-edit helper."""

import pycrdt
import pytest

from collab.exceptions import ProtocolError
from collab.lib0 import MAX_SAFE_INTEGER, Reader, Writer
from collab.protocol import (
    MessageType,
    SyncType,
    awareness_message,
    decode_auth,
    decode_awareness,
    decode_message,
    permission_denied,
    sync_step1,
    sync_step2,
    sync_update,
)
from collab.updates import (
    EMPTY_UPDATE,
    decode_state_vector,
    edit_copy,
    first_client,
    first_item,
    has_structs,
    summarize,
)


# -- lib0 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32, 2**53 - 1])
def test_var_uint_round_trips_through_pycrdt_encoding(value):
    encoded = Writer().var_uint(value).to_bytes()
    assert encoded == pycrdt.write_var_uint(value)
    r = Reader(encoded + b"\x05")
    assert r.var_uint() == value and r.u8() == 5 and r.at_end()


@pytest.mark.parametrize(
    "buf, why",
    [
        (b"", "truncated"),
        (b"\x80", "truncated"),  # continuation bit, then nothing
        (b"\xff\xff\xff", "truncated"),
        (bytes([0x80] * 7 + [0x80, 0x10]), "overflow"),  # 2**53: past JavaScript's safe integers
        (b"\xff" * 7 + b"\x7f", "overflow"),  # 2**56 - 1, in the 8 bytes a 53-bit number may take
        (b"\x80" * 8 + b"\x00", "overflow"),  # 9 bytes, even though the value is 0
        (b"\xff" * 10 + b"\x01", "overflow"),  # over 64 bits
    ],
)
def test_var_uint_refuses_truncation_and_overflow(buf, why):
    with pytest.raises(ProtocolError, match=why):
        Reader(buf).var_uint()


def test_var_uint_reads_the_largest_safe_integer():
    assert Reader(b"\xff" * 7 + b"\x0f").var_uint() == MAX_SAFE_INTEGER


@pytest.mark.parametrize("buf, value", [(b"\x05", 5), (b"\x45", -5), (b"\x80\x01", 64), (b"\xc1\x01", -65),
                                        (b"\xbf\xff\xff\xff\xff\xff\xff\x1f", MAX_SAFE_INTEGER)])
def test_var_int_reads_lib0_signed_integers(buf, value):
    r = Reader(buf)
    assert r.var_int() == value and r.at_end()


@pytest.mark.parametrize("buf", [b"", b"\x80", b"\xff" * 8 + b"\x01", b"\xbf" + b"\xff" * 6 + b"\x80\x01"])
def test_var_int_refuses_truncation_and_overflow(buf):
    with pytest.raises(ProtocolError):
        Reader(buf).var_int()


def test_strings_and_bytes_are_bounds_checked():
    assert Reader(Writer().var_string("héllo 🙂").to_bytes()).var_string() == "héllo 🙂"
    assert Writer().var_string("é").to_bytes() == b"\x02\xc3\xa9"  # a byte length, not characters
    with pytest.raises(ProtocolError, match="truncated"):
        Reader(b"\x05abc").var_string()  # length past the end
    with pytest.raises(ProtocolError, match="truncated"):
        Reader(b"\x05abc").var_bytes()
    with pytest.raises(ProtocolError, match="UTF-8"):
        Reader(b"\x02\xc3\x28").var_string()
    r = Reader(b"\x01")
    r.u8()
    with pytest.raises(ProtocolError, match="truncated"):
        r.u8()
    with pytest.raises(ProtocolError, match="truncated"):
        Reader(b"abc").skip(4)
    with pytest.raises(ProtocolError, match="truncated"):
        Reader(b"abc").take(4)


@pytest.mark.parametrize("value", [-1, 2**53, 2**64])
def test_writer_refuses_integers_no_peer_can_read(value):
    with pytest.raises(ProtocolError):
        Writer().var_uint(value)
    with pytest.raises(ProtocolError):
        Writer().u8(256)


# -- frames ----------------------------------------------------------------------------------------


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


def test_permission_denied_layout():
    assert permission_denied("no") == bytes([2, 0, 2]) + b"no"
    assert decode_auth(permission_denied("nön")) == "nön"


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
        b"\x00\x02" + bytes([0x80] * 7 + [0x10]),  # a length of 2**53: over lib0's integers
    ],
)
def test_malformed_frames_raise(frame):
    with pytest.raises(ProtocolError):
        decode_message(frame)


def _state(raw: bytes) -> bytes:
    """An awareness update of one client (id 5, clock 0) whose state is ``raw``."""
    return bytes((1, 5, 0, len(raw))) + raw


@pytest.mark.parametrize("payload", [
    b"\x01\x05\x00\x03{x}", b"\x01\x05\x00\x03[1]", b"\x02\x01",
    _state(b'{"x": NaN}'),                        # browsers' JSON.parse refuses NaN
    _state(b'{"x": "\xff"}'),                     # not UTF-8
    _state('{"x": 1}'.encode("utf-16-le")),       # JSON, but not the UTF-8 yjs reads
    _state(b"\xef\xbb\xbf{}"),                    # a byte-order mark before the object
])
def test_malformed_awareness_raises(payload):
    with pytest.raises(ProtocolError):
        decode_awareness(payload)


# -- updates ---------------------------------------------------------------------------------------

def test_state_vector_decoding():
    doc = pycrdt.Doc()
    doc.get("content", type=pycrdt.Text).insert(0, "abc")
    assert decode_state_vector(doc.get_state()) == {doc.client_id: 3}
    assert decode_state_vector(pycrdt.Doc().get_state()) == {}
    with pytest.raises(ProtocolError):
        decode_state_vector(doc.get_state()[:-1])  # truncated
    with pytest.raises(ProtocolError):
        decode_state_vector(doc.get_state() + b"\x00")  # trailing bytes


def test_update_headers():
    doc = pycrdt.Doc(client_id=7)
    text = doc.get("content", type=pycrdt.Text)
    updates = _updates_of(doc)
    text.insert(0, "ab")
    del text[0:1]
    insert, delete = updates
    assert first_client(insert) == 7 and has_structs(insert)
    assert first_client(delete) is None and not has_structs(delete)
    assert first_client(EMPTY_UPDATE) is None and not has_structs(EMPTY_UPDATE)
    with pytest.raises(ProtocolError):
        first_client(b"\x01\x01")  # a struct group cut before its client id


def test_first_item_names_the_neighbours_of_an_insertion():
    doc = pycrdt.Doc(client_id=7)
    text = doc.get("content", type=pycrdt.Text)
    updates = _updates_of(doc)
    text.insert(0, "ac")
    text.insert(1, "b")  # between a (7, 0) and c (7, 1)
    item = first_item(updates[-1])
    assert (item.client, item.kind, item.origin, item.right_origin, item.text) == (7, 4, (7, 0), (7, 1), "b")
    assert first_item(EMPTY_UPDATE) is None


def test_edit_copy_returns_the_update_of_the_edit_and_leaves_the_document_alone():
    doc = pycrdt.Doc()
    text = doc.get("content", type=pycrdt.Text)
    text.insert(0, "hello")
    state = doc.get_update()

    def edit(scratch: pycrdt.Doc) -> None:
        t = scratch.get("content", type=pycrdt.Text)
        t.insert(5, " world")
        del t[0:1]
        scratch.get("m", type=pycrdt.Map)["k"] = "v"

    update = edit_copy(state, edit)
    assert str(text) == "hello" and doc.get_update() == state  # untouched
    assert summarize(update).inserted == " world" and summarize(update).deleted == 1
    assert first_client(update) != doc.client_id  # a scratch client of its own
    doc.apply_update(update)
    assert str(text) == "ello world" and doc.get("m", type=pycrdt.Map)["k"] == "v"
    # an edit that changes nothing has no update; an empty state is an empty document
    assert edit_copy(state, lambda scratch: scratch.get("content", type=pycrdt.Text)) is None
    fresh = edit_copy(b"", lambda scratch: scratch.get("content", type=pycrdt.Text).insert(0, "x"))
    assert summarize(fresh).inserted == "x"
    with pytest.raises(ZeroDivisionError):  # the edit's own errors reach the caller
        edit_copy(state, lambda scratch: 1 / 0)


def _updates_of(doc: pycrdt.Doc) -> list[bytes]:
    out: list[bytes] = []
    doc.observe(lambda event: out.append(event.update))
    return out


def test_update_summary_follows_random_typing_in_any_script():
    """What each update inserts and deletes, read from its bytes, against a mirror of the text."""
    import random

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
