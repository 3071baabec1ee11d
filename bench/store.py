"""Durable updates per second: the hub's group-committing journal vs one transaction per update,
on SQLite (synchronous FULL and NORMAL) and PostgreSQL, with real updates from the B4 trace.

    python -m bench.store [--updates N] [--pg URL]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
import uuid

import pycrdt

from collab.journal import Journal
from collab.store import LogEntry, Store
from collab.testing import apply_patches, load_trace


def trace_updates(n: int) -> list[bytes]:
    """The first n edits of the B4 trace as the Yjs updates a client would send."""
    txns = load_trace("automerge-paper.json.gz")["txns"][:n]
    doc = pycrdt.Doc()
    text = doc.get("content", type=pycrdt.Text)
    out: list[bytes] = []
    doc.observe(lambda e: out.append(e.update))
    for txn in txns:
        with doc.transaction():
            apply_patches(text, txn["patches"])
    return out


def entries(doc_id: str, updates: list[bytes], start: int = 0) -> list[LogEntry]:
    return [LogEntry(doc_id, start + i + 1, u, "bench", "Bench", "human", 1) for i, u in enumerate(updates)]


async def grouped(store: Store, doc_id: str, updates: list[bytes]) -> float:
    """Updates arrive 100 at a time from the event loop, as frames from sockets would, and pause
    while the journal is full, as sockets do (its log lines about that are kept out of the table)."""
    logging.getLogger("tinymorph.journal").setLevel(logging.ERROR)
    journal = Journal(store, on_commit=lambda b: None, on_fail=lambda b, e: None)
    journal.start()
    t0 = time.perf_counter()
    es = entries(doc_id, updates)
    for i in range(0, len(es), 100):
        for e in es[i : i + 100]:
            journal.append(e)
        await asyncio.sleep(0)
        await journal.wait_for_space()
    await journal.stop()
    return len(es) / (time.perf_counter() - t0)


def one_by_one(store: Store, doc_id: str, updates: list[bytes], start: int) -> float:
    t0 = time.perf_counter()
    for e in entries(doc_id, updates, start):
        store.append([e])
    return len(updates) / (time.perf_counter() - t0)


def run(label: str, url: str, updates: list[bytes], single: int, **kw) -> tuple[str, float, float]:
    store = Store(url, **kw)
    store.migrate()
    doc_id = store.create_document("bench", "bench", doc_id=uuid.uuid4().hex)["id"]
    g = asyncio.run(grouped(store, doc_id, updates))
    s = one_by_one(store, doc_id, updates[:single], start=len(updates))
    store.close()
    return label, g, s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=30000)
    ap.add_argument("--single", type=int, default=1000, help="updates for the one-transaction-each baseline")
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    updates = trace_updates(args.updates)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("FULL", "NORMAL"):
            rows.append(run(f"SQLite WAL sync={sync}", f"sqlite:///{tmp}/{sync}.db", updates, args.single, sqlite_synchronous=sync))
    try:
        rows.append(run("PostgreSQL", args.pg, updates, args.single))
    except Exception as exc:  # noqa: BLE001 - a bench reports what it could not measure
        print(f"PostgreSQL skipped: {exc}")
    print(f"\nDurable updates/s ({len(updates)} B4 updates, group commit) vs one transaction per update")
    print(f"{'backend':<24}{'group commit/s':>16}{'per-update/s':>15}{'ratio':>8}   target >= 5,000/s on SQLite")
    for label, g, s in rows:
        print(f"{label:<24}{g:>16,.0f}{s:>15,.0f}{g / s:>7.1f}x")


if __name__ == "__main__":
    main()
