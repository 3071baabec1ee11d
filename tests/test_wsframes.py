"""The hub's websocket frame fast path (collab/_wsprotocol.py) against hand-made frames.

A raw TCP client that frames its own messages: split frames, several frames in one write,
pings between updates, fragmented messages, text frames, oversized and unmasked frames. What
the fast path does not handle itself must reach the websockets parser at a frame boundary and
get the same treatment as before. The tests share one hub (each uses its own document), except
the one that watches the protocol's work from inside: it serves a hub in its own event loop.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time

import pycrdt
import pytest

from collab.exceptions import ProtocolError
from collab.protocol import sync_update
from collab.store import content_text
from collab.testing import running_hub


@pytest.fixture
def hub(shared_hub):
    """Here ``hub`` is the module's shared hub: every test works on its own document."""
    return shared_hub


def _frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    head = bytes(((0x80 if fin else 0) | opcode,))
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes((mbit | n,))
    elif n < 1 << 16:
        head += bytes((mbit | 126,)) + struct.pack("!H", n)
    else:
        head += bytes((mbit | 127,)) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawClient:
    def __init__(self, port: int, doc_id: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws/{doc_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:  # each recv waits 10 s at most (the socket's timeout)
            chunk = self.sock.recv(4096)
            assert chunk, f"the hub closed the connection during the handshake: {self.buf!r}"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frames(self, until_opcode: int, timeout: float = 10) -> list[tuple[int, bytes]]:
        """Server frames up to and including the first with ``until_opcode``."""
        out: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                off = 2
                if n == 126:
                    n, off = struct.unpack("!H", self.buf[2:4])[0], 4
                elif n == 127:
                    n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
                if len(self.buf) < off + n:
                    break
                opcode, payload = self.buf[0] & 0x0F, self.buf[off : off + n]
                self.buf = self.buf[off + n :]
                out.append((opcode, payload))
                if opcode == until_opcode:
                    return out
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        raise AssertionError(f"no frame with opcode {until_opcode}; got {[o for o, _ in out]}")

    def close_code(self) -> int:
        """The code of the server's close frame (reading up to it)."""
        return struct.unpack("!H", self.frames(until_opcode=8)[-1][1][:2])[0]

    def close(self) -> None:
        self.sock.close()


def _typing(*words: str) -> list[bytes]:
    """One sync-update message per word typed at the end of ``content``."""
    doc = pycrdt.Doc()
    text = doc.get("content", type=pycrdt.Text)
    msgs: list[bytes] = []
    doc.observe(lambda ev: msgs.append(sync_update(ev.update)))
    for w in words:
        text += w
    return msgs


def _wait_text(hub, doc_id: str, expected: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = hub.request("GET", f"/api/docs/{doc_id}")
        if status == 200 and body["text"] == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"document text is {body.get('text')!r}, expected {expected!r}")


def test_split_batched_and_pinged_frames_all_arrive(hub):
    doc_id, _ = hub.create_doc("frames")
    c = RawClient(hub.port, doc_id)
    try:
        m1, m2, m3, m4 = _typing("one ", "two ", "three ", "four")
        f1 = _frame(2, m1)
        for i in range(len(f1)):  # byte by byte: every header and payload split point
            c.send(f1[i : i + 1])
            time.sleep(0.002)
        c.send(_frame(2, m2) + _frame(9, b"are you there") + _frame(2, m3))  # one write, a ping inside
        pong = c.frames(until_opcode=10)[-1]
        assert pong == (10, b"are you there")
        # a fragmented message goes through the websockets parser and still counts
        c.send(_frame(2, m4[:3], fin=False) + _frame(0, m4[3:]))
        _wait_text(hub, doc_id, "one two three four")
        c.send(_frame(8, struct.pack("!H", 1000)))
        assert c.close_code() == 1000
    finally:
        c.close()


def test_queued_and_direct_frames_keep_their_order(hub):
    """A fragmented message is queued for the endpoint; the whole frames right behind it in the
    same read must not overtake it through direct delivery (the log keeps arrival order)."""
    doc_id, _ = hub.create_doc("order")
    c = RawClient(hub.port, doc_id)
    try:
        m1, m2, m3 = _typing("one ", "two ", "three ")
        c.send(_frame(2, m1[:3], fin=False) + _frame(0, m1[3:]) + _frame(2, m2) + _frame(2, m3))
        _wait_text(hub, doc_id, "one two three ")
        status, body = hub.request("GET", f"/api/docs/{doc_id}/history")
        assert status == 200
        assert [e["inserted"] for e in body["entries"]] == ["one ", "two ", "three "]
        assert [e["seq"] for e in body["entries"]] == sorted(e["seq"] for e in body["entries"])
    finally:
        c.close()


def test_text_frame_closes_with_the_protocol_error_code(hub):
    doc_id, _ = hub.create_doc("text")
    c = RawClient(hub.port, doc_id)
    try:
        (m1,) = _typing("kept")
        c.send(_frame(2, m1) + _frame(1, b"hello"))
        assert c.close_code() == ProtocolError.close_code
        _wait_text(hub, doc_id, "kept")  # what came before the bad frame is applied
    finally:
        c.close()


def test_unmasked_and_oversized_frames_are_refused_by_websockets(hub):
    doc_id, _ = hub.create_doc("bad")
    c = RawClient(hub.port, doc_id)
    try:
        (m1,) = _typing("x")
        c.send(_frame(2, m1, mask=False))
        assert c.close_code() == 1002
    finally:
        c.close()
    c = RawClient(hub.port, doc_id)
    try:
        c.send(bytes((0x82, 0x80 | 127)) + struct.pack("!Q", 1 << 40) + os.urandom(4))
        assert c.close_code() == 1009
    finally:
        c.close()
    status, _ = hub.request("GET", f"/api/docs/{doc_id}")
    assert status == 200  # the hub carries on


async def test_a_large_frame_over_many_reads_is_buffered_not_reparsed_per_read(tmp_path, monkeypatch):
    """A 300 kB frame sent in 1 kB pieces arrives in many reads; the fast path reads its header
    once, then only collects bytes until the whole frame is there. Counted inside the protocol:
    its frame parser runs a constant number of times for the frame (not once per read) and looks
    at about the frame's bytes once in all (not the growing buffer again on every read, which is
    quadratic), and the text arrives."""
    from collab._wsprotocol import HubWebSocketProtocol

    reads: list[int] = []  # bytes per data_received, once the app has accepted the socket
    parses: list[int] = []  # bytes the frame parser was given to look at, per call
    data_received, next_frame = HubWebSocketProtocol.data_received, HubWebSocketProtocol._next_frame

    def count_reads(self, data):
        if self._fast:
            reads.append(len(data))
        return data_received(self, data)

    def count_parses(self, data, pos, end):
        parses.append(end - pos)
        return next_frame(self, data, pos, end)

    monkeypatch.setattr(HubWebSocketProtocol, "data_received", count_reads)
    monkeypatch.setattr(HubWebSocketProtocol, "_next_frame", count_parses)
    async with running_hub(tmp_path, ws=HubWebSocketProtocol) as (hub, ws_url):
        port = int(ws_url.rsplit(":", 1)[1].split("/")[0])
        doc_id = (await asyncio.to_thread(hub.store.create_document, "large", "me"))["id"]
        c = await asyncio.to_thread(RawClient, port, doc_id)
        try:
            (m1,) = _typing("y" * 300_000)
            f = _frame(2, m1)

            def send_in_pieces() -> None:
                for i in range(0, len(f), 1000):
                    c.send(f[i : i + 1000])
                    time.sleep(0.002)  # let the hub read the pieces as they come

            await asyncio.to_thread(send_in_pieces)
            def stored() -> str:
                return content_text(hub.store.load(doc_id).state)

            deadline = time.monotonic() + 30
            while (text := await asyncio.to_thread(stored)) != "y" * 300_000:
                assert time.monotonic() < deadline, f"document text is {len(text)} chars, not the 300000 sent"
                await asyncio.sleep(0.05)
        finally:
            c.close()
    assert len(reads) >= 8, f"the frame came in only {len(reads)} reads: this proves nothing"
    assert len(parses) <= 3, f"{len(parses)} parser calls for one frame in {len(reads)} reads"
    assert sum(parses) <= 2 * len(f), f"the parser looked at {sum(parses)} bytes of a {len(f)}-byte frame"
