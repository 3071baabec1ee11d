"""Steering vector builds a writer asks for over REST (``vectors.py`` serves them, the worker
task ``tasks.build_vector`` runs them): the request and its validation, the job rows, and what
the API says of a vector, its strength guidance included (``inference.steering.guide_for``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from collab.models import utcnow

from .exceptions import InvalidVectorRequest, VectorBusy
from .models import VectorJobRow

__all__ = ["JobStatus", "VectorRequest", "VectorJobs", "vector_json", "VECTOR_TASK", "VECTOR_OPTIONS", "MAX_PAIRS",
           "MAX_TEXT_CHARS"]

VECTOR_TASK = "tinymorph.vectors.build"
#: A build reads every pair through the model once: minutes at most on a CPU for the bundled one.
VECTOR_OPTIONS: dict[str, Any] = dict(bind=True, shared=False, acks_late=True, soft_time_limit=900, time_limit=960)

MAX_PAIRS = 64
MAX_TEXT_CHARS = 2000
MAX_LAYERS = 8
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class JobStatus(StrEnum):
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class VectorRequest:
    name: str
    pairs: list[tuple[str, str]]
    #: None: the model's default layer (a third of the way up), chosen by the worker.
    layers: list[int] | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "VectorRequest":
        """Validate a POST body; every problem is an ``InvalidVectorRequest`` (400) saying which."""
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidVectorRequest("name: 1-64 letters, digits, '_', '-' or '.'")
        pairs = body.get("pairs")
        if not isinstance(pairs, list) or not pairs:
            raise InvalidVectorRequest("pairs: a non-empty list of [positive, negative] examples")
        if len(pairs) > MAX_PAIRS:
            raise InvalidVectorRequest(f"pairs: at most {MAX_PAIRS} (got {len(pairs)})")
        clean = []
        for i, pair in enumerate(pairs):
            if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(t, str) for t in pair):
                raise InvalidVectorRequest(f"pairs[{i}]: a [positive, negative] pair of strings")
            pos, neg = (t.strip() for t in pair)
            if not pos or not neg:
                raise InvalidVectorRequest(f"pairs[{i}]: both sides need text (a one-sided pair has no direction)")
            if pos == neg:
                raise InvalidVectorRequest(f"pairs[{i}]: the two sides are the same text")
            if max(len(pos), len(neg)) > MAX_TEXT_CHARS:
                raise InvalidVectorRequest(f"pairs[{i}]: each side at most {MAX_TEXT_CHARS} characters")
            clean.append((pos, neg))
        layers = body.get("layers")
        if layers is not None:
            if (not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS
                    or not all(type(x) is int and x >= 1 for x in layers)):
                raise InvalidVectorRequest(f"layers: a list of 1-{MAX_LAYERS} layer numbers (integers >= 1)")
            layers = sorted(set(layers))
        return cls(name, clean, layers)


class VectorJobs:
    """The job rows, in the hub's database (the agents extension's tables)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(self, req: VectorRequest, requested_by: str) -> dict[str, Any]:
        with self.engine.begin() as conn:
            busy = conn.execute(sa.select(VectorJobRow.id).where(
                VectorJobRow.name == req.name, VectorJobRow.status == JobStatus.BUILDING)).first()
            if busy:
                raise VectorBusy(f"vector {req.name!r} is already being built")
            row = {"id": uuid.uuid4().hex, "name": req.name, "status": str(JobStatus.BUILDING), "progress": 0.0,
                   "pairs": [list(p) for p in req.pairs], "layers": req.layers or [], "error": None,
                   "requested_by": requested_by, "created_at": utcnow(), "updated_at": utcnow()}
            conn.execute(sa.insert(VectorJobRow), row)
        return row

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(VectorJobRow).where(VectorJobRow.id == job_id)).mappings().first()
        return dict(row) if row else None

    def latest(self) -> dict[str, dict[str, Any]]:
        """The newest job of each name."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(VectorJobRow).order_by(VectorJobRow.created_at)).mappings().all()
        return {r["name"]: dict(r) for r in rows}

    def update(self, job_id: str, **fields: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(VectorJobRow).where(VectorJobRow.id == job_id).values(**fields, updated_at=utcnow()))

    def delete(self, name: str) -> int:
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(VectorJobRow).where(VectorJobRow.name == name)).rowcount


def vector_json(name: str, job: dict[str, Any] | None, stored: list[Any], shipped: bool) -> dict[str, Any]:
    """What the API says of one vector: its newest job where it has one, else the library's rows."""
    from inference.steering import guide_for

    if job is not None and job["status"] != JobStatus.READY:
        status, progress = job["status"], job["progress"]
    else:
        status, progress = (JobStatus.READY, 1.0) if stored or shipped else (JobStatus.FAILED, 0.0)
    out: dict[str, Any] = {
        "name": name, "status": str(status), "progress": round(float(progress), 3),
        "source": f"caa:{name}", "shipped": shipped,
        "layers": sorted({s.layer for s in stored}) or (job or {}).get("layers") or [],
        "models": sorted({s.model_key for s in stored}),
        "provenance": stored[0].provenance if stored else ({"method": "caa", "pairs": len(job["pairs"]),
                                                            "requested_by": job["requested_by"]} if job else {}),
        **guide_for(f"caa:{name}").to_json(),
    }
    if job is not None and job.get("error"):
        out["error"] = job["error"]
    return out
