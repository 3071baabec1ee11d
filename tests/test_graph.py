"""The text-embedding graph: stable paragraph nodes, incremental re-embedding, versions, search,
all computed by worker processes (the hub process never loads the embedding model)."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from agents.graph import split_paragraphs
from collab.client import HubClient
from collab.testing import running_hub

CATS = "Cats are small furry pets — très câlins 🐈 — that purr and nap in the sun."  # non-ASCII on purpose
MARKET = "The stock market fell sharply as bond yields rose and investors sold shares."
DOGS = "Dogs are loyal furry pets that love walks and playing fetch."


def test_split_paragraphs_gives_byte_offsets():
    text = "é one\n\n  two\n \nthree\n\n\n"
    assert split_paragraphs(text) == [(0, "é one"), (10, "two"), (16, "three")]
    assert text.encode()[10:13] == b"two"


@pytest.mark.model  # the worker processes load the embedding model
@pytest.mark.slow
async def test_graph_is_incremental_stable_and_versioned(tmp_path):
    async with running_hub(tmp_path, graph_debounce_s=0.2, graph_enabled=True, worker_embedded=True,
                           worker_concurrency=1) as (hub, ws_url):  # one worker: one copy of the model to load
        http = httpx.AsyncClient(base_url=ws_url.replace("ws://", "http://").removesuffix("/ws"), timeout=60)
        updates: asyncio.Queue = asyncio.Queue()

        async def on_graph(event):
            await updates.put(event.data)

        hub.bus.subscribe("graph.updated", on_graph)
        doc_id = (await http.post("/api/docs", json={"title": "pets"})).json()["id"]
        async with HubClient(ws_url, doc_id) as c:
            await c.synced()
            c.text.insert(0, f"{CATS}\n\n{MARKET}\n\n{DOGS}")
            first = await asyncio.wait_for(updates.get(), 120)
            assert len(first["embedded"]) == 3 and first["nodes"] == 3
            graph = (await http.get(f"/api/docs/{doc_id}/graph")).json()
            ids = [n["id"] for n in graph["nodes"]]
            assert [n["text"] for n in graph["nodes"]] == [CATS, MARKET, DOGS]
            assert {(e["source"], e["target"]) for e in graph["edges"] if e["kind"] == "next"} == {
                (ids[0], ids[1]), (ids[1], ids[2])}
            similar = sorted((e for e in graph["edges"] if e["kind"] == "similar"), key=lambda e: -e["weight"])
            assert {similar[0]["source"], similar[0]["target"]} == {ids[0], ids[2]}  # cats ~ dogs

            # edit the middle paragraph: only it is re-embedded, every node keeps its id
            pos = len(f"{CATS}\n\n".encode()) + len("The stock market")
            c.text.insert(pos, " unexpectedly")
            second = await asyncio.wait_for(updates.get(), 60)
            assert second["embedded"] == [ids[1]] and second["removed"] == []
            # typing at the very start of the last paragraph keeps it the same node
            c.text.insert(len(f"{CATS}\n\n{MARKET} unexpectedly\n\n".encode()), "Big ")
            third = await asyncio.wait_for(updates.get(), 60)
            assert third["embedded"] == [ids[2]]
            graph = (await http.get(f"/api/docs/{doc_id}/graph")).json()
            assert [n["id"] for n in graph["nodes"]] == ids
            assert graph["nodes"][2]["text"] == "Big " + DOGS
            # a new paragraph is a new node; deleting one removes its node
            c.text.insert(len(c.text), "\n\nA closing line about markets and money.")
            fourth = await asyncio.wait_for(updates.get(), 60)
            assert len(fourth["embedded"]) == 1 and fourth["embedded"][0] not in ids
            del c.text[0 : len(f"{CATS}\n\n".encode())]
            fifth = await asyncio.wait_for(updates.get(), 60)
            assert fifth["removed"] == [ids[0]] and fifth["embedded"] == []

            # the graph as it was at the first version
            old = (await http.get(f"/api/docs/{doc_id}/graph", params={"at": first["seq"]})).json()
            assert [n["text"] for n in old["nodes"]] == [CATS, MARKET, DOGS]
            # 3 + 1 + 1 + 1 paragraphs embedded: never the whole document again
            assert sum(len(u["embedded"]) for u in (first, second, third, fourth, fifth)) == 6
            assert os.getpid() not in {u["worker_pid"] for u in (first, second, third, fourth, fifth)}

            results = (await http.get("/api/search", params={"q": "animals people keep at home"})).json()["results"]
            assert "Dogs" in results[0]["text"]
            assert (await http.get("/api/search")).status_code == 400
        await http.aclose()
