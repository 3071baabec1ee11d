"""The run state machine and its table.

    queued ──► running ──► streaming ──► done
       │          │  ▲          │
       │          │  └──────────┘  (a redelivered attempt starts over: running again)
       └──────────┴──────────────────► failed | cancelled

A worker *claims* a run before it touches the document: the claim is a compare-and-swap on the
attempt counter, and the claimant keeps a heartbeat. A redelivered message whose run has a fresh
heartbeat from another attempt does not start a second writer (``ClaimOutcome.LEASED``): only a
stale lease (its worker died) can be taken over. That plus the idempotent writes in
``participant.py`` is what makes a SIGKILLed worker's run complete exactly once.

A run asked for in the document's ``requests`` map is *created* once too, whichever hub process
sees the request, and however often (a lease handed over between processes, a process killed
between creating the run and writing its id back): its id is derived from the request
(``request_run_id``), and ``create_once`` finds the row an earlier creator made instead of
making a second one. The database's primary key is the arbiter, no lease timing involved.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from collab.models import utcnow
from collab.store import as_utc

from .exceptions import RunNotCancellable, UnknownRun
from .models import RunRow

__all__ = ["RunStatus", "ClaimOutcome", "RunStore", "TERMINAL", "new_run_id", "request_run_id"]


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    STREAMING = "streaming"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED})

_ALLOWED: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset({RunStatus.RUNNING, RunStatus.STREAMING, RunStatus.DONE, RunStatus.FAILED,
                                  RunStatus.CANCELLED}),
    RunStatus.STREAMING: frozenset({RunStatus.RUNNING, RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.DONE: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"
    LEASED = "leased"  # another live attempt holds it
    FINISHED = "finished"  # already terminal: nothing to do
    CANCELLED = "cancelled"  # cancelled before this attempt began
    MISSING = "missing"


def new_run_id() -> str:
    return uuid.uuid4().hex


_REQUESTS_NS = uuid.UUID("5f0e4d1c-7a43-4b8e-9a52-2d6c1f3b8e01")


def request_run_id(doc_id: str, key: str, entry: Any) -> str:
    """The run id of the ``requests`` map entry ``key`` holding ``entry``: the same on every
    process that sees it; a new key, or the same key asking for something else, a new run."""
    canonical = json.dumps([doc_id, key, entry], sort_keys=True, separators=(",", ":"), default=str)
    return uuid.uuid5(_REQUESTS_NS, canonical).hex


def _json(row: Any) -> dict[str, Any]:
    d = dict(row._mapping)
    for k in ("created_at", "started_at", "finished_at", "heartbeat_at"):
        if d.get(k) is not None:
            d[k] = as_utc(d[k])
    return d


class RunStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, *, doc_id: str, agent_id: str, task: str, mode: str, params: dict,
               requested_by: str, requested_by_name: str, run_id: str | None = None) -> dict[str, Any]:
        row = {"id": run_id or new_run_id(), "doc_id": doc_id, "agent_id": agent_id, "task": task, "mode": mode,
               "status": RunStatus.QUEUED.value, "error": None, "params": params, "requested_by": requested_by,
               "requested_by_name": requested_by_name, "attempts": 0, "lease_owner": None, "heartbeat_at": None,
               "cancel_requested": False, "result": {}, "created_at": utcnow(), "started_at": None,
               "finished_at": None}
        with self.engine.begin() as conn:
            conn.execute(sa.insert(RunRow), row)
        return row

    def create_once(self, *, run_id: str, **fields: Any) -> tuple[dict[str, Any], bool]:
        """``create`` with a given id, unless a run with that id exists: (the row, True when this
        call made it). Two callers racing: the primary key lets one insert; the other reads it."""
        try:
            return self.create(run_id=run_id, **fields), True
        except sa.exc.IntegrityError:
            return self.get(run_id), False

    def get(self, run_id: str, doc_id: str | None = None) -> dict[str, Any]:
        q = sa.select(RunRow.__table__).where(RunRow.id == run_id)
        if doc_id is not None:
            q = q.where(RunRow.doc_id == doc_id)
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            raise UnknownRun(f"unknown run {run_id!r}")
        return _json(row)

    def list(self, doc_id: str, limit: int = 50) -> list[dict[str, Any]]:
        q = (sa.select(RunRow.__table__).where(RunRow.doc_id == doc_id)
             .order_by(RunRow.created_at.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [_json(r) for r in conn.execute(q)]

    def claim(self, run_id: str, owner: str, lease_s: float) -> tuple[ClaimOutcome, dict[str, Any] | None]:
        """Take the run for ``owner`` unless it is finished or another attempt's lease is fresh."""
        try:
            row = self.get(run_id)
        except UnknownRun:
            return ClaimOutcome.MISSING, None
        status = RunStatus(row["status"])
        if status.terminal:
            return ClaimOutcome.FINISHED, row
        if row["cancel_requested"]:
            self.finish(run_id, RunStatus.CANCELLED, error="cancelled")
            return ClaimOutcome.CANCELLED, row
        hb = row["heartbeat_at"]
        if row["lease_owner"] not in (None, owner) and hb is not None \
                and datetime.now(timezone.utc) - hb < timedelta(seconds=lease_s):
            return ClaimOutcome.LEASED, row
        now = utcnow()
        with self.engine.begin() as conn:
            # Compare-and-swap on what was read: the attempt count (another claim) and the status
            # (the previous holder finishing meanwhile must not be turned back into a running run).
            res = conn.execute(sa.update(RunRow).where(RunRow.id == run_id, RunRow.attempts == row["attempts"],
                                                       RunRow.status == row["status"])
                               .values(lease_owner=owner, heartbeat_at=now, attempts=row["attempts"] + 1,
                                       status=RunStatus.RUNNING.value, started_at=row["started_at"] or now))
        if not res.rowcount:  # claimed or finished by somebody else between our read and write
            again = self.get(run_id)
            return (ClaimOutcome.FINISHED if RunStatus(again["status"]).terminal else ClaimOutcome.LEASED), again
        return ClaimOutcome.CLAIMED, self.get(run_id)

    def heartbeat(self, run_id: str, owner: str) -> tuple[bool, bool]:
        """Renew the lease; returns (still ours, cancel requested)."""
        with self.engine.begin() as conn:
            res = conn.execute(sa.update(RunRow).where(RunRow.id == run_id, RunRow.lease_owner == owner)
                               .values(heartbeat_at=utcnow()))
            cancel = conn.execute(sa.select(RunRow.cancel_requested).where(RunRow.id == run_id)).scalar()
        return bool(res.rowcount), bool(cancel)

    def transition(self, run_id: str, status: RunStatus, *, owner: str | None = None, error: str | None = None,
                   result: dict | None = None) -> bool:
        """Move to ``status`` if the state machine allows it (and ``owner`` still holds the lease)."""
        row = self.get(run_id)
        current = RunStatus(row["status"])
        if status not in _ALLOWED[current]:
            return False
        values: dict[str, Any] = {"status": status.value}
        if error is not None:
            values["error"] = error[:2000]
        if result is not None:
            values["result"] = {**(row["result"] or {}), **result}
        if status.terminal:
            values["finished_at"] = utcnow()
            values["lease_owner"] = None
        q = sa.update(RunRow).where(RunRow.id == run_id, RunRow.status == current.value)
        if owner is not None:
            q = q.where(RunRow.lease_owner == owner)
        with self.engine.begin() as conn:
            return bool(conn.execute(q.values(**values)).rowcount)

    def finish(self, run_id: str, status: RunStatus, *, owner: str | None = None, error: str | None = None,
               result: dict | None = None) -> bool:
        assert status.terminal
        return self.transition(run_id, status, owner=owner, error=error, result=result)

    def update_params(self, run_id: str, **changes: Any) -> None:
        row = self.get(run_id)
        with self.engine.begin() as conn:
            conn.execute(sa.update(RunRow).where(RunRow.id == run_id)
                         .values(params={**(row["params"] or {}), **changes}))

    def cancel(self, run_id: str, doc_id: str) -> dict[str, Any]:
        """Ask a run to stop. A queued one is cancelled at once; a working one within a heartbeat."""
        row = self.get(run_id, doc_id)
        if RunStatus(row["status"]).terminal:
            raise RunNotCancellable(f"run {run_id} is already {row['status']}")
        with self.engine.begin() as conn:
            conn.execute(sa.update(RunRow).where(RunRow.id == run_id).values(cancel_requested=True))
        if row["status"] == RunStatus.QUEUED:
            self.finish(run_id, RunStatus.CANCELLED, error="cancelled")
        return self.get(run_id)


def run_json(row: dict[str, Any]) -> dict[str, Any]:
    """What ``GET /api/docs/{id}/runs/{run_id}`` answers."""
    params = row.get("params") or {}
    out = {"id": row["id"], "run_id": row["id"], "doc_id": row["doc_id"], "agent": row["agent_id"],
           "task": row["task"], "mode": row["mode"], "status": row["status"], "attempts": row["attempts"],
           "requested_by": row["requested_by"], "model": params.get("model", ""),
           "steering": params.get("steering", []), "result": row.get("result") or {},
           "created_at": row["created_at"].isoformat() if row["created_at"] else None,
           "started_at": row["started_at"].isoformat() if row["started_at"] else None,
           "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None}
    if row.get("error"):
        out["error"] = row["error"]
    return out


__all__ += ["run_json"]
