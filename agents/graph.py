"""The text-embedding graph of a document: paragraphs as nodes, similarity and reading order as edges.

Kept current from ``document.updated`` events (debounced per document). A paragraph keeps its node
id across edits because each node is anchored to the character just before its first one (the
line break; the start of the text for the first paragraph), by that character's identity in the
history replay (``history.py``) — like a Yjs relative position with ``assoc = -1``, so typing at
the paragraph's start stays inside it. (pycrdt 0.14's ``StickyIndex`` mixes byte and UTF-16
offsets after non-ASCII text, hence not that.) A node whose text is unchanged keeps its
embedding, so an edit re-embeds only the paragraphs it touched. Every
version of a node is stored with the log position it was computed at, which gives the graph as it
was at any version. Embeddings come from the bundled all-MiniLM-L6-v2 (``inference.embeddings``).

Where it runs: the embedding model lives in the worker processes (the ``rebuild_graph`` and
``search`` Celery tasks build a ``GraphBuilder``); the hub process runs only ``GraphScheduler``,
which debounces ``document.updated`` per document and sends at most one rebuild per document at
a time, and reads stored graphs for ``GET /graph``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any, Awaitable, Callable, Protocol, Sequence

import numpy as np
from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Engine

from collab.events import Event, EventBus
from collab.history import START, History, char_at
from collab.models import Document

from .models import GraphEdge, GraphNode

__all__ = ["GraphBuilder", "GraphReader", "GraphScheduler", "split_paragraphs"]

log = logging.getLogger("tinymorph.agents.graph")

PARAGRAPH_BREAK = re.compile(rb"\n[ \t]*\n")


class Embeds(Protocol):
    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]: ...


def split_paragraphs(text: str) -> list[tuple[int, str]]:
    """``[(utf8_byte_start, paragraph)]``: paragraphs are separated by blank lines.
    Byte offsets because that is how pycrdt indexes text."""
    raw = text.encode()
    out, start = [], 0
    for m in [*PARAGRAPH_BREAK.finditer(raw), None]:
        end = m.start() if m else len(raw)
        chunk = raw[start:end]
        stripped = chunk.lstrip()
        if stripped.strip():
            out.append((start + len(chunk) - len(stripped), stripped.rstrip().decode()))
        if m:
            start = m.end()
    return out


@dataclass
class Node:
    node_id: str
    anchor: bytes
    text: str
    text_hash: str
    embedding: np.ndarray
    position: int


def _anchor_bytes(char_id: int) -> bytes:
    return char_id.to_bytes(8, "little", signed=True)


def _anchor_id(anchor: bytes) -> int:
    return int.from_bytes(anchor, "little", signed=True)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def edges_for(nodes: list[Node], k: int = 3, min_similarity: float = 0.3) -> list[dict[str, Any]]:
    """Reading-order edges between neighbours, and each node's k most similar others."""
    ordered = sorted(nodes, key=lambda n: n.position)
    edges = [
        {"source": a.node_id, "target": b.node_id, "kind": "next", "weight": 1.0} for a, b in zip(ordered, ordered[1:])
    ]
    if len(ordered) > 1:
        m = np.stack([n.embedding for n in ordered])
        sims = m @ m.T
        np.fill_diagonal(sims, -1.0)
        seen = set()
        for i, row in enumerate(sims):
            for j in np.argsort(-row)[:k]:
                if row[j] < min_similarity:
                    break
                key = (min(i, j), max(i, j))
                if key not in seen:
                    seen.add(key)
                    edges.append({"source": ordered[key[0]].node_id, "target": ordered[key[1]].node_id,
                                  "kind": "similar", "weight": round(float(row[j]), 4)})
    return edges


class GraphReader:
    """The stored graph: any version of it, and similarity search. No model: the hub reads it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def version(self, doc_id: str, conn: Any = None) -> int | None:
        """The log position of the newest stored change to the graph (None: no graph yet)."""
        q = select(func.max(GraphNode.seq)).where(GraphNode.doc_id == doc_id)
        if conn is not None:
            return conn.execute(q).scalar()
        with self.engine.connect() as c:
            return c.execute(q).scalar()

    def load(self, doc_id: str, at: int | None) -> list[Node]:
        """The nodes as they were at log position ``at`` (None: the newest)."""
        latest = select(GraphNode.node_id, func.max(GraphNode.seq).label("seq")).where(GraphNode.doc_id == doc_id)
        if at is not None:
            latest = latest.where(GraphNode.seq <= at)
        latest = latest.group_by(GraphNode.node_id).subquery()
        q = select(GraphNode).join(
            latest, (GraphNode.node_id == latest.c.node_id) & (GraphNode.seq == latest.c.seq)
        ).where(GraphNode.doc_id == doc_id, GraphNode.removed.is_(False))
        from sqlalchemy.orm import Session

        with Session(self.engine) as s:
            return [
                Node(r.node_id, r.anchor, r.text, r.text_hash, np.frombuffer(r.embedding, dtype="<f4"), r.position)
                for r in s.scalars(q)
            ]

    def graph(self, doc_id: str, at: int | None = None) -> dict[str, Any]:
        nodes = self.load(doc_id, at)
        nodes.sort(key=lambda n: n.position)
        return {
            "nodes": [{"id": n.node_id, "index": n.position, "text": n.text} for n in nodes],
            "edges": edges_for(nodes),
        }

    def nearest(self, query: Sequence[float], doc_ids: list[str] | None, limit: int = 10) -> list[dict[str, Any]]:
        """Paragraphs most similar to the embedded query across the given documents (None: all)."""
        q = np.asarray(query, dtype="<f4")
        latest = select(GraphNode.doc_id, GraphNode.node_id, func.max(GraphNode.seq).label("seq"))
        if doc_ids is not None:
            latest = latest.where(GraphNode.doc_id.in_(doc_ids))
        latest = latest.group_by(GraphNode.doc_id, GraphNode.node_id).subquery()
        stmt = select(GraphNode.doc_id, GraphNode.node_id, GraphNode.text, GraphNode.embedding).join(
            latest,
            (GraphNode.doc_id == latest.c.doc_id) & (GraphNode.node_id == latest.c.node_id) & (GraphNode.seq == latest.c.seq),
        ).where(GraphNode.removed.is_(False))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        scored = sorted(
            ({"doc_id": r.doc_id, "node_id": r.node_id, "text": r.text,
              "score": round(float(np.frombuffer(r.embedding, "<f4") @ q), 4)} for r in rows),
            key=lambda r: -r["score"],
        )
        return scored[:limit]


class GraphBuilder:
    """Brings a document's stored graph up to the end of its log, embedding only the paragraphs
    that changed. Synchronous, in a worker process; the scheduler runs one per document at a
    time, and each update starts from the database, so any worker process may take the next."""

    def __init__(self, history: History, embedder: Embeds) -> None:
        self.history = history
        self.embedder = embedder
        self.reader = GraphReader(history.store.engine)

    #: Tries of an update that found the graph changed under it before it gives up (the next
    #: edit's update starts again from the database).
    TRIES = 3

    def update(self, doc_id: str) -> dict[str, Any]:
        """Bring the graph up to the end of the document's log. Two updates of one document that
        overlap (two workers, a lease handed over between hub processes) never both write: the
        second to commit finds the graph moved on since it read it, writes nothing, and starts
        again from what the first wrote (``superseded`` counts those tries)."""
        for attempt in range(self.TRIES):
            result = self._update_once(doc_id)
            if result is not None:
                return {**result, "superseded": attempt}
        log.warning("graph update of %s: superseded %d times; the next edit's update catches up", doc_id, self.TRIES)
        return {"seq": None, "superseded": self.TRIES, "embedded": [], "removed": [], "nodes": None, "edges": None}

    def _update_once(self, doc_id: str) -> dict[str, Any] | None:
        """One try of ``update``: None when another update committed since this one read the graph."""
        base = self.reader.version(doc_id)
        with self.history.at(doc_id) as replay:
            seq = replay.seq
            paragraphs = split_paragraphs(str(replay.text))
            starts = {start: i for i, (start, _p) in enumerate(paragraphs)}
            byte_of = {c: i for i, c in enumerate(replay.ids) if c >= 0}  # alive characters
            current = {n.node_id: n for n in self.reader.load(doc_id, None)}

            def resolve(anchor: int) -> int:
                """Byte position right after the anchor (or its nearest surviving left origin)."""
                while anchor != START and anchor not in byte_of:
                    anchor = replay.left_of[anchor]
                return 0 if anchor == START else byte_of[anchor] + len(replay.chars[anchor].encode())

            # Each node claims the paragraph starting where its anchor now points. Deleting a
            # paragraph's text can leave its anchor on the next paragraph's start as well; then
            # the node whose old text resembles the paragraph most keeps it, the other is removed.
            candidates: dict[int, list[Node]] = {}
            removed: list[Node] = []
            for node in current.values():
                i = starts.get(resolve(_anchor_id(node.anchor)))
                if i is None:
                    removed.append(node)
                else:
                    candidates.setdefault(i, []).append(node)
            claimed: dict[int, Node] = {}
            for i, nodes in candidates.items():
                para = paragraphs[i][1]
                nodes.sort(key=lambda n: (n.text != para, -SequenceMatcher(None, n.text, para).quick_ratio()))
                claimed[i] = nodes[0]
                removed.extend(nodes[1:])
            rows, to_embed = [], []
            for i, (start, para) in enumerate(paragraphs):
                node = claimed.get(i)
                h = _hash(para)
                if node is None:
                    left = START if start == 0 else char_at(replay.ids, start - 1)
                    node = Node(uuid.uuid4().hex[:16], _anchor_bytes(left), para, h, np.zeros(0, "<f4"), i)
                    current[node.node_id] = node
                    to_embed.append(node)
                elif node.text_hash != h:
                    node.text, node.text_hash = para, h
                    to_embed.append(node)
                elif node.position == i:
                    continue  # unchanged: no new version
                node.position = i
                rows.append(node)
            if to_embed:
                vectors, _ = self.embedder.embed([n.text for n in to_embed])
                for node, vec in zip(to_embed, vectors):
                    node.embedding = np.asarray(vec, dtype="<f4")
            for node in removed:
                del current[node.node_id]
            edges = edges_for(list(current.values()))
            if not self._persist(doc_id, seq, base, rows, removed, edges):
                return None
            return {
                "seq": seq,
                "embedded": [n.node_id for n in to_embed],
                "removed": [n.node_id for n in removed],
                "nodes": len(current),
                "edges": len(edges),
            }

    def _persist(self, doc_id: str, seq: int, base: int | None, rows: list[Node], removed: list[Node],
                 edges: list[dict]) -> bool:
        """Write one update, unless the graph is no longer at ``base`` (another update of the
        document committed since this one read it): False then, nothing written. The document's
        row is locked first (PostgreSQL ``FOR UPDATE``; SQLite has one writer anyway), so two
        updates' check-and-write never interleave."""
        def row(n: Node, gone: bool) -> dict[str, Any]:
            return {"doc_id": doc_id, "node_id": n.node_id, "seq": seq, "position": n.position, "anchor": n.anchor,
                    "text": n.text, "text_hash": n.text_hash, "embedding": n.embedding.tobytes(), "removed": gone}

        with self.reader.engine.begin() as conn:
            conn.execute(select(Document.id).where(Document.id == doc_id).with_for_update())
            if self.reader.version(doc_id, conn) != base:
                log.info("graph update of %s at seq %d superseded by another (the graph moved on from %s)",
                         doc_id, seq, base)
                return False
            out = [row(n, False) for n in rows] + [row(n, True) for n in removed]
            if out:
                # a second update at the same seq (a retry) replaces the first
                conn.execute(delete(GraphNode).where(GraphNode.doc_id == doc_id, GraphNode.seq == seq,
                                                     GraphNode.node_id.in_([r["node_id"] for r in out])))
                conn.execute(insert(GraphNode), out)
            conn.execute(delete(GraphEdge).where(GraphEdge.doc_id == doc_id))
            if edges:
                conn.execute(insert(GraphEdge), [{"doc_id": doc_id, **e} for e in edges])
        return True


class GraphScheduler:
    """In the hub process: debounces ``document.updated`` per document and hands the rebuild to a
    worker (``rebuild``: sends the Celery task and waits for its result), at most one rebuild per
    document at a time; an edit during a rebuild schedules one more after it. Publishes
    ``graph.updated`` with the rebuild's summary."""

    def __init__(self, rebuild: Callable[[str], Awaitable[dict[str, Any]]], bus: EventBus,
                 debounce_s: float = 2.0) -> None:
        self.rebuild = rebuild
        self.bus = bus
        self.debounce_s = debounce_s
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._running: dict[str, asyncio.Task] = {}
        self._again: set[str] = set()

    async def on_update(self, event: Event) -> None:
        timer = self._timers.pop(event.doc_id, None)
        if timer:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[event.doc_id] = loop.call_later(self.debounce_s, self._fire, event.doc_id)

    def _fire(self, doc_id: str) -> None:
        self._timers.pop(doc_id, None)
        if doc_id in self._running:
            self._again.add(doc_id)  # one rebuild at a time per document; run again after
            return
        task = asyncio.ensure_future(self.refresh(doc_id))
        self._running[doc_id] = task
        task.add_done_callback(lambda _t: self._done(doc_id))

    def _done(self, doc_id: str) -> None:
        self._running.pop(doc_id, None)
        if doc_id in self._again:
            self._again.discard(doc_id)
            self._fire(doc_id)

    async def refresh(self, doc_id: str) -> dict[str, Any] | None:
        try:
            result = await self.rebuild(doc_id)
        except Exception as exc:  # noqa: BLE001 - a failed rebuild is logged; the next edit retries
            log.warning("graph update of %s failed: %s", doc_id, exc)
            return None
        self.bus.publish(Event("graph.updated", doc_id, result))
        return result

    async def stop(self) -> None:
        """Send the rebuilds still waiting on their debounce, then wait for all of them."""
        for doc_id, timer in list(self._timers.items()):
            timer.cancel()
            self._fire(doc_id)
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=30)
        for task in list(self._running.values()):
            task.cancel()  # a worker that never answered does not hold up the hub's shutdown
