"""Two graph updates of one document that overlap (two workers; a lease handed over between hub
processes) never both write: the one that commits second finds the graph moved on, writes
nothing, and starts again from what the first wrote. A real Store (SQLite, the agents' schema),
a real log of pycrdt updates; a stand-in embedder (the update's logic, not MiniLM, is tested)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pycrdt
from agents_support import migrated_store

from agents.graph import GraphBuilder
from collab import LogEntry
from collab.history import History


class _Embedder:
    """Unit vectors from a text's hash; ``during`` runs inside the first call (the race)."""

    def __init__(self) -> None:
        self.during = None
        self.calls = 0

    def embed(self, texts):
        self.calls += 1
        if self.during is not None:
            during, self.during = self.during, None
            during()
        vecs = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8) for t in texts]
        return [list(v / np.linalg.norm(v)) for v in vecs], 0


def test_overlapping_updates_write_each_paragraph_once(tmp_path):
    store = migrated_store(tmp_path / "graph.db")
    doc_id = store.create_document("pets", "alice")["id"]
    peer = pycrdt.Doc(client_id=7)
    text = peer.get("content", type=pycrdt.Text)
    before = peer.get_state()
    text.insert(0, "Cats purr.\n\nMarkets fall.\n\nDogs fetch.")
    store.append([LogEntry(doc_id, 1, peer.get_update(before), "alice", "Alice", "human", 7,
                           datetime.now(timezone.utc), {})])

    first_embedder, second_embedder = _Embedder(), _Embedder()
    first = GraphBuilder(History(store), first_embedder)
    second = GraphBuilder(History(store), second_embedder)
    # While the first is embedding, the second (another worker) does the whole update.
    first_embedder.during = lambda: second.update(doc_id)
    result = first.update(doc_id)

    assert result["superseded"] == 1  # its first try found the second's write, its second try wrote
    assert result["embedded"] == []  # ... nothing: every paragraph was already there
    nodes = first.reader.load(doc_id, None)
    assert sorted(n.text for n in nodes) == ["Cats purr.", "Dogs fetch.", "Markets fall."]  # once each
    assert second_embedder.calls == 1
    store.close()
