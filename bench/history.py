"""History on the B4 document (automerge-paper, 259,778 updates): version at a log position or a
time, blame (cold and after one more edit), and the embedding graph's latency after an edit.

    python -m bench.history [--samples N]

The log is written the way the hub writes it (one entry per transaction, a snapshot every 500).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone

import pycrdt

from bench.store import trace_updates
from collab.history import History
from collab.store import LogEntry, Store, content_text

SNAPSHOT_EVERY = 500


def build_log(store: Store, updates: list[bytes]) -> tuple[str, datetime]:
    doc_id = store.create_document("B4", "bench")["id"]
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    doc = pycrdt.Doc()
    batch: list[LogEntry] = []
    for i, u in enumerate(updates, 1):
        batch.append(LogEntry(doc_id, i, u, "typist", "Typist", "human", 1, created_at=t0 + timedelta(seconds=i)))
        doc.apply_update(u)
        if i % SNAPSHOT_EVERY == 0:
            store.append(batch)
            batch = []
            store.save_snapshot(doc_id, i, doc.get_update())
    store.append(batch)
    return doc_id, t0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def row(label: str, ms: list[float], note: str = "") -> None:
    print(f"{label:<44}{statistics.median(ms):>9.1f}{pct(ms, 95):>9.1f}{len(ms):>6}   {note}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--updates", type=int, default=0, help="limit the trace (0: all of B4)")
    args, _ = ap.parse_known_args()
    t = time.perf_counter()
    updates = trace_updates(args.updates or 10**9)
    n = len(updates)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/history.db", sqlite_synchronous="NORMAL")
        store.migrate()
        doc_id, t0 = build_log(store, updates)
        print(f"built the B4 log: {n} entries, {n // SNAPSHOT_EVERY} snapshots in {time.perf_counter() - t:.0f} s")
        rng = random.Random(7)

        def version(seq: int) -> str:
            return content_text(store.load(doc_id, at_seq=seq).state)

        by_seq, by_time = [], []
        for _ in range(args.samples):
            seq = rng.randint(1, n)
            s = time.perf_counter()
            version(seq)
            by_seq.append((time.perf_counter() - s) * 1000)
            at = t0 + timedelta(seconds=rng.uniform(0, n))
            s = time.perf_counter()
            version(store.seq_at_time(doc_id, at))
            by_time.append((time.perf_counter() - s) * 1000)

        history = History(store)
        s = time.perf_counter()
        with history.at(doc_id) as r:
            spans = r.blame()
        cold = (time.perf_counter() - s) * 1000
        # one more edit, then blame again: the cached replay only applies the new entry
        extra = pycrdt.Doc()
        extra.apply_update(store.load(doc_id).state)
        got: list[bytes] = []
        extra.observe(lambda e: got.append(e.update))
        extra.get("content", type=pycrdt.Text).insert(0, "% reviewed\n")
        store.append([LogEntry(doc_id, n + 1, got[0], "rev", "Reviewer", "human", 2)])
        s = time.perf_counter()
        with history.at(doc_id) as r:
            spans = r.blame()
        warm = (time.perf_counter() - s) * 1000

        graph_rows = graph_latency(store, doc_id, n + 1)

        print(f"\nHistory on B4 ({n} updates; target: version-at-time p95 <= 50 ms)")
        print(f"{'operation':<44}{'p50 ms':>9}{'p95 ms':>9}{'n':>6}")
        row("version at a log position", by_seq)
        row("version at a timestamp", by_time, "PASS" if pct(by_time, 95) <= 50 else "MISS target")
        row("blame, cold (replay of the whole log)", [cold], f"{len(spans)} spans")
        row("blame after one more edit (cached replay)", [warm], f"{cold / warm:.0f}x faster than cold")
        for label, ms, note in graph_rows:
            row(label, ms, note)
        store.close()


def graph_latency(store: Store, doc_id: str, seq: int) -> list[tuple[str, list[float], str]]:
    try:
        from collab.graph import GraphBuilder
        from inference.embeddings import Embedder
    except ImportError as exc:
        print(f"graph rows skipped: {exc}")
        return []
    builder = GraphBuilder(store, Embedder(), History(store))
    s = time.perf_counter()
    first = builder.update(doc_id)
    cold = (time.perf_counter() - s) * 1000
    doc = pycrdt.Doc()
    doc.apply_update(store.load(doc_id).state)
    text = doc.get("content", type=pycrdt.Text)
    got: list[bytes] = []
    doc.observe(lambda e: got.append(e.update))
    times = []
    for i in range(5):
        # edit the middle of some paragraph, log it, then bring the graph up to date
        text.insert(len(str(text).encode()) // 2 + i * 997, " edited")
        store.append([LogEntry(doc_id, seq + 1 + i, got[-1], "rev", "Reviewer", "human", 2)])
        s = time.perf_counter()
        res = builder.update(doc_id)
        times.append((time.perf_counter() - s) * 1000)
    return [
        ("graph: first build (embeds every paragraph)", [cold], f"{first['nodes']} nodes, {first['edges']} edges"),
        ("graph: update after a one-paragraph edit", times, f"re-embedded {len(res['embedded'])} paragraph(s)"),
    ]


if __name__ == "__main__":
    main()
