"""Steering vector builds a writer asks for over REST (``vectors.py`` serves them, the worker
task ``tasks.build_vector`` runs them): the request and its validation, the job rows, and what
the API says of a vector, its strength guidance included (``inference.steering.guide_for``).
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable

import sqlalchemy as sa

from collab.models import utcnow

from .exceptions import InvalidVectorRequest, VectorBusy
from .models import VectorJobRow

__all__ = ["JobStatus", "Voice", "VectorRequest", "VectorJobs", "vector_json", "voice_paragraphs", "VECTOR_TASK",
           "VECTOR_OPTIONS", "MAX_PAIRS", "MAX_TEXT_CHARS", "VOICE_MIN_PARAGRAPHS", "rewrite_pairs", "voice_units",
           "voice_pairs"]

VECTOR_TASK = "tinymorph.vectors.build"
#: A build reads every pair through the model once: minutes at most on a CPU for the bundled one.
VECTOR_OPTIONS: dict[str, Any] = dict(bind=True, shared=False, acks_late=True, soft_time_limit=900, time_limit=960)

MAX_PAIRS = 64
MAX_VOICE_DOCS = 20
#: Paragraphs shorter than this say little about a voice; ones mostly by others are not yours.
VOICE_MIN_CHARS, VOICE_MIN_SHARE, VOICE_MIN_PARAGRAPHS = 40, 0.8, 3
MAX_TEXT_CHARS = 2000
MAX_LAYERS = 8
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class JobStatus(StrEnum):
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class Voice:
    """"In my voice": a writer's own paragraphs in these documents, found through the log's
    attribution, their sentences each against the model's rewrite of it (``voice_pairs``)."""

    doc_ids: list[str]
    #: Whose writing; None: the caller's.
    author_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"doc_ids": self.doc_ids, "author_id": self.author_id}


@dataclass(frozen=True)
class VectorRequest:
    name: str
    #: The examples: given, or (``voice``) made by the worker.
    pairs: list[tuple[str, str]]
    #: None: the model's default layer (a third of the way up), chosen by the worker.
    layers: list[int] | None
    voice: Voice | None = None
    #: A PSR vector (``inference.steering.psr``): the instruction whose effect it learns, at one layer.
    instruction: str | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "VectorRequest":
        """Validate a POST body; every problem is an ``InvalidVectorRequest`` (400) saying which."""
        name = body.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidVectorRequest("name: 1-64 letters, digits, '_', '-' or '.'")
        given = [k for k in ("pairs", "voice", "instruction") if k in body]
        if len(given) != 1:
            raise InvalidVectorRequest("give exactly one of pairs (your examples), voice (your writing) or "
                                       "instruction (what the style should do); got " + (" and ".join(given) or "none"))
        voice = _voice(body["voice"]) if "voice" in body else None
        instruction = _instruction(body["instruction"]) if "instruction" in body else None
        pairs = _pairs(body["pairs"]) if "pairs" in body else []
        layers = body.get("layers")
        if layers is not None:
            if (not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS
                    or not all(type(x) is int and x >= 1 for x in layers)):
                raise InvalidVectorRequest(f"layers: a list of 1-{MAX_LAYERS} layer numbers (integers >= 1)")
            layers = sorted(set(layers))
            if instruction is not None and len(layers) != 1:
                raise InvalidVectorRequest("layers: a PSR vector (instruction) is learnt at one layer; give one or none")
        return cls(name, pairs, layers, voice, instruction)


def _instruction(text: Any) -> str:
    """``psr.check_instruction``'s rules, said as this API's 400."""
    from inference.exceptions import InvalidSteering
    from inference.steering.psr import check_instruction

    try:
        return check_instruction(text)
    except InvalidSteering as exc:
        raise InvalidVectorRequest(str(exc)) from None


def _voice(v: Any) -> Voice:
    doc_ids = v.get("doc_ids") if isinstance(v, dict) else None
    if (not isinstance(doc_ids, list) or not 1 <= len(doc_ids) <= MAX_VOICE_DOCS
            or not all(isinstance(d, str) and 0 < len(d) <= 64 for d in doc_ids)):
        raise InvalidVectorRequest(f"voice.doc_ids: a list of 1-{MAX_VOICE_DOCS} document ids")
    author = v.get("author_id")
    if author is not None and (not isinstance(author, str) or not 0 < len(author) <= 200):
        raise InvalidVectorRequest("voice.author_id: a user id")
    return Voice(sorted(set(doc_ids)), author)


def _pairs(pairs: Any) -> list[tuple[str, str]]:
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
    return clean


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
                   "voice": req.voice.to_json() if req.voice else None, "instruction": req.instruction,
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
    from inference.steering.strengths import stored_guide

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
                                                            "voice": job.get("voice"),
                                                            "requested_by": job["requested_by"]} if job else {}),
        # its own measured strength once calibrated (``tasks._calibrate``), else the general guide
        **stored_guide(f"caa:{name}", stored[0].provenance if stored else None).to_json(),
    }
    if job is not None and job.get("error"):
        out["error"] = job["error"]
    return out


def voice_paragraphs(history: Any, doc_ids: list[str], author_id: str) -> list[str]:
    """The paragraphs of these documents (as they read now) that ``author_id`` wrote: at least
    ``VOICE_MIN_SHARE`` of their characters are theirs by the log's attribution."""
    found = []
    for doc_id in doc_ids:
        with history.at(doc_id) as replay:
            chars = [(c, span["author_id"]) for span in replay.blame() for c in span["text"]]
        paragraph: list[tuple[str, str]] = []
        for ch, who in [*chars, ("\n", "")]:
            if ch != "\n":
                paragraph.append((ch, who))
                continue
            text = "".join(c for c, _ in paragraph).strip()
            mine = sum(1 for _, w in paragraph if w == author_id)
            if len(text) >= VOICE_MIN_CHARS and mine >= VOICE_MIN_SHARE * len(paragraph):
                found.append(text[:MAX_TEXT_CHARS])
            paragraph = []
    return found[:MAX_PAIRS]


#: How the model is asked for its own version of a writer's text: the "not your voice" side.
REWRITE_PROMPT = "Rewrite this paragraph in your own words. Keep what it says.\n\n"
REWRITE_SENTENCE_PROMPT = "Rewrite this sentence in your own words. Keep what it says.\n\n"
#: A voice pair's sides within this ratio of lengths: a longer or shorter side is a direction of
#: its own (length, list-making), which the vector would learn as "voice".
VOICE_LENGTH_RATIO = (0.6, 1.6)
#: Sentences shorter than this are fragments ("Rain again."): too little to rewrite.
VOICE_MIN_SENTENCE_CHARS = 40
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")


def rewrite_pairs(engine: Any, paragraphs: list[str], progress: Callable[[float], None] | None = None,
                  prompt: str = REWRITE_PROMPT) -> list[tuple[str, str]]:
    """(paragraph, the model's rewrite of it): what differs between the two is the voice, not
    the content, so their mean difference in the residual stream is a direction toward the
    writer. Greedy with a mild repetition penalty: the model's plainest version."""
    from inference import GenerationRequest, SamplingParams

    pairs = []
    for i, paragraph in enumerate(paragraphs):
        out = engine.generate(GenerationRequest(
            messages=[{"role": "user", "content": prompt + paragraph}],
            params=SamplingParams(max_tokens=min(256, len(paragraph) // 3 + 32), repetition_penalty=1.1)))
        rewrite = out.text.strip()
        if rewrite and rewrite != paragraph:
            pairs.append((paragraph, rewrite))
        if progress is not None:
            progress((i + 1) / len(paragraphs))
    return pairs


def voice_units(paragraphs: list[str], limit: int = MAX_PAIRS) -> list[str]:
    """What a voice build rewrites: each paragraph's sentences of ``VOICE_MIN_SENTENCE_CHARS``+
    (a paragraph without one, whole), at most ``limit``, spread over the paragraphs."""
    units = []
    for paragraph in paragraphs:
        sentences = [t.strip() for t in _SENTENCE_END.split(paragraph) if len(t.strip()) >= VOICE_MIN_SENTENCE_CHARS]
        units.append(sentences or [paragraph])
    chosen: list[str] = []
    for k in range(max(map(len, units), default=0)):  # round-robin: every paragraph before any second sentence
        chosen += [u[k] for u in units if k < len(u)]
    return chosen[:limit]


def voice_pairs(engine: Any, paragraphs: list[str], progress: Callable[[float], None] | None = None
                ) -> list[tuple[str, str]]:
    """The "in my voice" pairs: each of the writer's sentences (``voice_units``) against the
    model's rewrite of that sentence, length-matched where the model allows. Sentences rather
    than paragraphs: a paragraph's rewrite drifts (it drops, adds and reorders), so the pair's
    difference carries content and length too; a sentence's rewrite says the same thing, and
    ``tinymorph eval voice`` measured a cleaner direction from them. Pairs outside
    ``VOICE_LENGTH_RATIO`` are left out unless that would leave fewer than
    ``VOICE_MIN_PARAGRAPHS``; then the closest in length are kept."""
    pairs = rewrite_pairs(engine, voice_units(paragraphs), progress, REWRITE_SENTENCE_PROMPT)
    low, high = VOICE_LENGTH_RATIO
    matched = [p for p in pairs if low <= len(p[1]) / len(p[0]) <= high]
    if len(matched) >= VOICE_MIN_PARAGRAPHS:
        return matched
    return sorted(pairs, key=lambda p: abs(math.log(len(p[1]) / len(p[0]))))[:VOICE_MIN_PARAGRAPHS]
