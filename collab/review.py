"""REST endpoints for stakeholders reviewing a session: timeline, versions, diff, blame,
activity, revert and export. Every read endpoint is open to viewers; revert needs an editor.

``at``/``from``/``to`` parameters take a log sequence number or an ISO-8601 timestamp.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import pycrdt
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .api import document_identity, read_json
from .exceptions import InvalidRequest, LimitExceeded
from .history import RevertScope, sessions
from .hub import Hub
from .limits import to_py_within
from .store import as_utc, content_text

__all__ = ["routes"]


def _hub(request: Request) -> Hub:
    return request.app.state.hub


def _position(hub: Hub, doc_id: str, raw: str | None, default: int | None) -> int | None:
    return hub.history.position(doc_id, raw, default)


async def history(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request)
    q = request.query_params
    try:
        limit = min(int(q.get("limit", "1000")), 10000)
    except ValueError as exc:
        raise InvalidRequest("limit must be a number") from exc

    def work() -> list[dict[str, Any]]:
        lo = _position(hub, row["id"], q.get("from"), 1)
        hi = _position(hub, row["id"], q.get("to"), None)
        out = []
        for ch in hub.history.changes(row["id"], after=max(lo - 1, 0), upto=hi):
            if q.get("author") and ch.author.author_id != q["author"] and ch.author.author_name != q["author"]:
                continue
            if q.get("kind") and ch.author.kind != q["kind"]:
                continue
            out.append(ch.as_dict())
            if len(out) >= limit:
                break
        return out

    return JSONResponse({"entries": await _hub(request).replay(work)})


async def version(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request)

    def work() -> dict[str, Any]:
        seq = _position(hub, row["id"], request.path_params["at"], None)
        loaded = hub.store.load(row["id"], at_seq=seq)
        return {"seq": loaded.seq, "text": content_text(loaded.state)}

    return JSONResponse(await _hub(request).replay(work))


async def diff(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request)
    q = request.query_params

    def work() -> list[dict[str, Any]]:
        last = hub.store.last_seq(row["id"])
        return hub.history.diff(row["id"], _position(hub, row["id"], q.get("from"), 0),
                                _position(hub, row["id"], q.get("to"), last))

    return JSONResponse({"ops": await _hub(request).replay(work)})


async def blame(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request)

    def work() -> dict[str, Any]:
        at = _position(hub, row["id"], request.query_params.get("at"), None)
        with hub.history.at(row["id"], at) as r:
            return {"seq": r.seq, "spans": r.blame()}

    return JSONResponse(await _hub(request).replay(work))


def _suggestion_stats(state: bytes | None) -> dict[str, dict[str, int]]:
    """Per agent: how many of its suggestions (the ``suggestions`` Y.Map) were accepted/rejected."""
    doc = pycrdt.Doc()
    if state:
        doc.apply_update(state)
    stats: dict[str, dict[str, int]] = {}
    for value in doc.get("suggestions", type=pycrdt.Map).values():
        try:
            item = to_py_within(value)
        except LimitExceeded:
            continue  # a hostile entry (shared types nested deeper than any editor makes): not counted
        if not isinstance(item, dict):
            continue
        s = stats.setdefault(str(item.get("agent", "?")), {"accepted": 0, "rejected": 0, "pending": 0})
        status = item.get("status", "pending")
        if status in s:
            s[status] += 1
    return stats


async def activity(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request)
    try:
        gap = float(request.query_params.get("gap", "1800"))
    except ValueError as exc:
        raise InvalidRequest("gap must be seconds") from exc

    def work() -> dict[str, Any]:
        changes = hub.history.changes(row["id"])
        with hub.history.at(row["id"]) as r:
            kept = set(r.ids)
        out = sessions(changes, gap, kept)
        suggestions = _suggestion_stats(hub.store.load(row["id"]).state)
        for s in out:
            for a in s["authors"]:
                sug = suggestions.get(a["author_id"]) or suggestions.get(a["author_name"]) or {}
                a["suggestions_accepted"] = sug.get("accepted", 0)
                a["suggestions_rejected"] = sug.get("rejected", 0)
        return {"sessions": out, "suggestions": suggestions}

    return JSONResponse(await _hub(request).replay(work))


async def revert(request: Request) -> Response:
    """Undo a run's, an author's or a time range's changes as one new, attributed edit."""
    hub = _hub(request)
    ident, row = await document_identity(request, write=True)
    body = await read_json(request)
    run_id, author, lo, hi = body.get("run_id"), body.get("author_id"), body.get("from"), body.get("to")
    if not (run_id or author or lo is not None or hi is not None):
        raise InvalidRequest("say what to revert: run_id, author_id, or a from/to range")

    def scope() -> RevertScope:  # timestamps are looked up in the log, hence a thread
        # ``from`` as a time starts with the first entry written at or after it, so an edit made
        # before the window is never undone with it.
        first = None if lo is None else hub.history.position(row["id"], str(lo), None, start=True)
        return RevertScope(run_id, author, first,
                           None if hi is None else _position(hub, row["id"], str(hi), None))

    done = await hub.history.revert(hub.rooms, row["id"], await asyncio.to_thread(scope), ident,
                                    {"run_id": run_id, "author_id": author, "from": lo, "to": hi})
    return JSONResponse(done.as_dict())


async def export(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request)
    fmt = request.query_params.get("format", "md")
    if fmt not in ("md", "json"):
        raise InvalidRequest("format must be md or json")

    def work() -> Any:
        if fmt == "md":
            return content_text(hub.store.load(row["id"]).state)
        changes = hub.history.changes(row["id"])
        with hub.history.at(row["id"]) as r:
            return {
                "document": {"id": row["id"], "title": row["title"], "created_at": as_utc(row["created_at"]).isoformat()},
                "exported_at": datetime.now(timezone.utc).isoformat(),
                "text": str(r.text),
                "seq": r.seq,
                "entries": [ch.as_dict() | {"meta": ch.meta} for ch in changes],
                "blame": r.blame(),
            }

    result = await _hub(request).replay(work)
    name = row["title"] or row["id"]
    if fmt == "md":
        return PlainTextResponse(result, media_type="text/markdown",
                                 headers={"content-disposition": attachment(f"{name}.md")})
    return Response(json.dumps(result, default=str), media_type="application/json",
                    headers={"content-disposition": attachment(f"{name}.json")})


def attachment(filename: str) -> str:
    """A Content-Disposition for any title (RFC 6266): an ASCII fallback, and the real name
    percent-encoded as UTF-8 (a title with "—" or a quote once made this header fail with 500)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


routes = [
    Route("/api/docs/{doc_id}/history", history, methods=["GET"]),
    Route("/api/docs/{doc_id}/versions/{at}", version, methods=["GET"]),
    Route("/api/docs/{doc_id}/diff", diff, methods=["GET"]),
    Route("/api/docs/{doc_id}/blame", blame, methods=["GET"]),
    Route("/api/docs/{doc_id}/sessions", activity, methods=["GET"]),
    Route("/api/docs/{doc_id}/revert", revert, methods=["POST"]),
    Route("/api/docs/{doc_id}/export", export, methods=["GET"]),
]
