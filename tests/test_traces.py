"""Replaying a real typing history (the B4 automerge-paper trace) through the hub."""

from __future__ import annotations

import asyncio
import time

import pytest

from collab.client import HubClient
from collab.testing import apply_patches, load_trace

pytestmark = pytest.mark.slow  # a real editing trace

# The first 50,000 of B4's 259,778 transactions: a prefix shows all this test promises (each
# transaction one durable log entry, in order; a fresh peer syncs the very text that was typed)
# in a fifth of the time. The whole trace is the benchmark's: `python -m bench.hub` replays it
# through the hub against raw pycrdt.
B4_PREFIX = 50_000


async def test_automerge_paper_trace_through_the_hub(hub):
    txns = load_trace("automerge-paper.json.gz")["txns"][:B4_PREFIX]
    doc_id, _ = hub.create_doc("B4")
    async with HubClient(hub.ws_url, doc_id) as writer:
        await writer.synced()
        text = writer.text
        for i, txn in enumerate(txns):
            with writer.doc.transaction():
                apply_patches(text, txn["patches"])
            if i % 2000 == 0:
                await writer.flush()  # let the socket breathe; keeps memory flat
        await writer.flush()
        typed = str(text)
        assert len(typed) > 10_000
        # every transaction becomes one durable log entry
        deadline = time.monotonic() + 120
        while (seq := (await asyncio.to_thread(hub.request, "GET", f"/api/docs/{doc_id}"))[1]["seq"]) < len(txns):
            assert time.monotonic() < deadline, f"hub committed {seq} of {len(txns)}"
            await asyncio.sleep(0.2)
        assert seq == len(txns)
    # a fresh peer, syncing from the hub, gets the same text
    async with HubClient(hub.ws_url, doc_id) as reader:
        await reader.synced(timeout=60)
        assert str(reader.text) == typed
    status, body = hub.request("GET", f"/api/docs/{doc_id}")
    assert status == 200 and body["text"] == typed
