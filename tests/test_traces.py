"""Replaying a real typing history (the B4 automerge-paper trace) through the hub."""

from __future__ import annotations

import asyncio
import time

from collab.client import HubClient
from collab.testing import apply_patches, load_trace


async def test_automerge_paper_trace_through_the_hub(hub):
    trace = load_trace("automerge-paper.json.gz")
    doc_id, _ = hub.create_doc("B4")
    async with HubClient(hub.ws_url, doc_id) as writer:
        await writer.synced()
        text = writer.text
        for i, txn in enumerate(trace["txns"]):
            with writer.doc.transaction():
                apply_patches(text, txn["patches"])
            if i % 2000 == 0:
                await writer.flush()  # let the socket breathe; keeps memory flat
        await writer.flush()
        assert str(text) == trace["endContent"]
        # every transaction becomes one durable log entry
        deadline = time.monotonic() + 300
        while (seq := hub.request("GET", f"/api/docs/{doc_id}")[1]["seq"]) < len(trace["txns"]):
            assert time.monotonic() < deadline, f"hub committed {seq} of {len(trace['txns'])}"
            await asyncio.sleep(0.2)
        assert seq == len(trace["txns"])
    # a fresh peer, syncing from the hub, gets the same text
    async with HubClient(hub.ws_url, doc_id) as reader:
        await reader.synced(timeout=60)
        assert str(reader.text) == trace["endContent"]
