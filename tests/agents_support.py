"""Helpers for the agents tests: runs over the REST API, waits on conditions, log reads."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from collab.testing import HubProcess

TERMINAL = {"done", "failed", "cancelled"}
#: A real steering term that needs no torch conversion: an inline direction for SmolLM2-135M.
INLINE_STEERING = [{"source": "inline", "vector": [((i * 37) % 11 - 5) / 5 for i in range(576)],
                    "layers": [8], "strength": 0.2}]


def migrated_store(path: Path):
    """A Store on a new SQLite file with the schema a hub with the agents extension has."""
    from agents.extension import extension
    from collab.store import Store

    store = Store(f"sqlite:///{path}")
    store.migrate(extension.migrations)
    return store


def wait(predicate: Callable[[], Any], what: str, timeout: float = 120, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


async def await_until(predicate: Callable[[], Any], what: str, timeout: float = 120, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


def start_run(hub: HubProcess, doc_id: str, body: dict, token: str | None = None) -> str:
    status, out = hub.request("POST", f"/api/docs/{doc_id}/runs", body, token or hub.owner_tokens[doc_id])
    assert status == 201, (status, out)
    return out["run_id"]


def get_run(hub: HubProcess, doc_id: str, run_id: str) -> dict:
    status, out = hub.request("GET", f"/api/docs/{doc_id}/runs/{run_id}", None, hub.owner_tokens[doc_id])
    assert status == 200, (status, out)
    return out


async def run_finished(hub: HubProcess, doc_id: str, run_id: str, timeout: float = 180) -> dict:
    def check():
        r = get_run(hub, doc_id, run_id)
        return r if r["status"] in TERMINAL else None
    return await await_until(lambda: check(), f"run {run_id} to finish", timeout, every=0.2)


def log_entries(data_dir: Path, doc_id: str) -> list[dict]:
    """The hub's attributed update log, read straight from its SQLite database."""
    conn = sqlite3.connect(str(Path(data_dir) / "tinymorph.db"), timeout=30)
    try:
        rows = conn.execute("SELECT seq, author_id, author_name, author_kind, meta FROM updates WHERE doc_id=? "
                            "ORDER BY seq", (doc_id,)).fetchall()
    finally:
        conn.close()
    return [{"seq": r[0], "author_id": r[1], "author_name": r[2], "author_kind": r[3], "meta": json.loads(r[4] or "{}")}
            for r in rows]


def run_row(data_dir: Path, run_id: str) -> dict:
    """A run's row as the hub's database holds it (lease, heartbeat, params with the options),
    more than ``GET .../runs/{id}`` shows."""
    import sqlalchemy as sa

    from agents.runs import RunStore

    engine = sa.create_engine(f"sqlite:///{Path(data_dir) / 'tinymorph.db'}")
    try:
        return RunStore(engine).get(run_id)
    finally:
        engine.dispose()


def agent_presences(states: dict) -> list[dict]:
    return [s for s in states.values() if isinstance(s, dict) and isinstance(s.get("user"), dict)
            and s["user"].get("kind") == "agent"]
