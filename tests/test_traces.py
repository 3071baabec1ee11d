"""Replaying a real typing history (the B4 automerge-paper trace) through the hub."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path

import pytest

from collab.client import HubClient

TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "editing-traces"


def load_trace(name: str) -> dict:
    path = TRACES / name
    if not path.exists():
        pytest.fail(f"editing trace missing: {path} (shared/ must sit beside the repo)")
    with gzip.open(path) as f:
        return json.load(f)


async def test_automerge_paper_trace_through_the_hub(hub):
    trace = load_trace("automerge-paper.json.gz")
    doc_id, _ = hub.create_doc("B4")
    async with HubClient(hub.ws_url, doc_id) as writer:
        await writer.synced()
        text = writer.text
        for i, txn in enumerate(trace["txns"]):
            with writer.doc.transaction():
                for pos, n_del, ins in txn["patches"]:
                    if n_del:
                        del text[pos : pos + n_del]
                    if ins:
                        text.insert(pos, ins)
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
