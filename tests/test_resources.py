"""Every per-peer resource is bounded: sync-step-1 floods from a client that never reads, presence
spoofing and floods, request rates, connections, REST bodies."""

from __future__ import annotations

import asyncio
import os
import urllib.request
from pathlib import Path

import pycrdt
import pytest
from websockets.asyncio.client import connect

from collab.client import HubClient
from collab.lib0 import Writer
from collab.protocol import awareness_message, sync_step1
from collab.testing import HubProcess

BASE = {"TINYMORPH_GRAPH_ENABLED": "false", "TINYMORPH_WORKER_EMBEDDED": "false"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    proc = HubProcess(tmp_path_factory.mktemp("resources") / "hub",
                      env={**BASE, "TINYMORPH_MAX_CONNECTIONS": "12"}).start()
    yield proc
    assert proc.stop() == 0
    proc.assert_clean()


def _big_doc(hub: HubProcess, size: int) -> str:
    doc_id, _owner = hub.create_doc("big")

    async def write() -> None:
        async with HubClient(hub.ws_url, doc_id) as c:
            await c.synced()
            chunk = "All work and no play makes a dull document. " * 100
            for _ in range(size // len(chunk)):
                c.text.insert(len(c.text), chunk)
            await c.flush()
            await asyncio.sleep(0.5)

    asyncio.run(write())
    return doc_id


def test_a_step1_flood_from_a_client_that_never_reads_costs_bounded_memory(tmp_path):
    """2,000 three-byte requests, each worth a 1 MB reply: at most one reply is queued per peer,
    and a peer whose backlog passes the limit is closed (4507), so the hub stays small."""
    env = {**BASE, "TINYMORPH_CONTROL_MESSAGES_PER_S": "1000000", "TINYMORPH_CONTROL_MESSAGES_BURST": "1000000",
           "TINYMORPH_MAX_PEER_QUEUE_BYTES": str(8 * 1024 * 1024)}
    hub = HubProcess(tmp_path / "hub", env=env).start()
    try:
        doc_id = _big_doc(hub, 1_000_000)
        before = rss_mb(hub.proc.pid)

        async def flood() -> int | None:
            # max_queue=1: the client stops reading its socket after one message, as an attacker would
            async with connect(f"{hub.ws_url}/{doc_id}", max_queue=1, max_size=None, compression=None) as ws:
                request = sync_step1(pycrdt.Doc().get_state())
                for _ in range(2000):
                    await ws.send(request)
                await asyncio.sleep(2)
                return ws.close_code

        asyncio.run(flood())
        grown = rss_mb(hub.proc.pid) - before
        assert grown < 150, f"the hub grew by {grown:.0f} MB (unbounded: ~2 GB)"
        assert hub.request("GET", "/healthz")[1]["status"] == "running"
    finally:
        assert hub.stop() == 0
        hub.assert_clean()


def test_presence_requests_over_the_rate_close_the_socket_with_4429(hub):
    doc_id, _owner = hub.create_doc("rate")

    async def go() -> int | None:
        async with HubClient(hub.ws_url, doc_id) as c:
            await c.synced()
            request = sync_step1(c.doc.get_state())
            for _ in range(2000):
                await c.send_raw(request)
            await c.wait_closed(20)
            return c.close_code

    assert asyncio.run(go()) == 4429


def awareness_update(client_id: int, name: str, clock: int = 1) -> bytes:
    state = '{"user":{"name":"%s"}}' % name
    return Writer().var_uint(1).var_uint(client_id).var_uint(clock).var_string(state).to_bytes()


def test_a_socket_speaks_only_for_its_own_presence_and_a_few_of_it(hub):
    doc_id, _owner = hub.create_doc("presence")

    async def go() -> None:
        async with HubClient(hub.ws_url, doc_id) as alice, HubClient(hub.ws_url, doc_id) as mallory, \
                HubClient(hub.ws_url, doc_id) as observer:
            for c in (alice, mallory, observer):
                await c.synced()
            alice.set_presence({"user": {"name": "Alice"}})
            await observer.wait_for(lambda: any(p.get("user", {}).get("name") == "Alice"
                                                for p in observer.peers.values()), 10)
            # Mallory rewrites Alice's presence (a newer clock): dropped, not relayed
            await mallory.send_raw(awareness_message(awareness_update(alice.doc.client_id, "Mallory", 99)))
            await asyncio.sleep(1.0)
            assert observer.peers[alice.doc.client_id]["user"]["name"] == "Alice"
            # and may announce at most 8 client ids of its own
            for client_id in range(1000, 1009):
                await mallory.send_raw(awareness_message(awareness_update(client_id, f"sock{client_id}")))
            await mallory.wait_closed(10)
            assert mallory.close_code == 4413

    asyncio.run(go())


def test_connections_over_the_limit_are_refused_with_1013(hub):
    doc_id, _owner = hub.create_doc("crowd")

    async def go() -> list[int | None]:
        clients = [HubClient(hub.ws_url, doc_id) for _ in range(14)]
        codes = []
        try:
            for c in clients:
                await c.connect()
            # the refused ones are closed as soon as they are accepted: wait (bounded) for two
            for _ in range(300):
                if sum(c.close_code == 1013 for c in clients) >= 2:
                    break
                await asyncio.sleep(0.05)
            codes = [c.close_code for c in clients]
        finally:
            for c in clients:
                await c.close()
        return codes

    codes = asyncio.run(go())
    assert codes.count(1013) >= 2 and codes.count(None) <= 12, codes


def test_a_rest_body_over_the_limit_is_refused_with_413(hub):
    big = b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    req = urllib.request.Request(hub.url + "/api/docs", data=big, method="POST",
                                 headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 413
    assert b"limit" in err.value.read()
    assert os.environ.get("TINYMORPH_MAX_BODY_BYTES") is None  # the default limit did this
