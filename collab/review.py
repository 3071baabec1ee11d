"""REST endpoints for stakeholders reviewing a session: timeline, versions, diff, blame,
activity, revert and export. Every read endpoint is open to viewers; revert needs an editor.

``at``/``from``/``to`` parameters take a log sequence number or an ISO-8601 timestamp.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

import pycrdt
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .api import _json, bearer, document_identity
from .auth import Identity, Role
from .exceptions import InvalidRequest, Unavailable
from .history import diff_ids, sessions
from .hub import Hub
from .store import as_utc, content_text

__all__ = ["routes"]


def _hub(request: Request) -> Hub:
    return request.app.state.hub


def _position(hub: Hub, doc_id: str, raw: str | None, default: int | None) -> int | None:
    """A seq number or a timestamp → a log position (call from a worker thread)."""
    if raw is None or raw == "":
        return default
    if raw.isdigit():
        return int(raw)
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest(f"{raw!r} is neither a sequence number nor an ISO-8601 time") from exc
    return hub.store.seq_at_time(doc_id, as_utc(at))


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

    return JSONResponse({"entries": await asyncio.to_thread(work)})


async def version(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request)

    def work() -> dict[str, Any]:
        seq = _position(hub, row["id"], request.path_params["at"], None)
        loaded = hub.store.load(row["id"], at_seq=seq)
        return {"seq": loaded.seq, "text": content_text(loaded.state)}

    return JSONResponse(await asyncio.to_thread(work))


async def diff(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request)
    q = request.query_params

    def work() -> list[dict[str, Any]]:
        last = hub.store.last_seq(row["id"])
        lo = _position(hub, row["id"], q.get("from"), 0)
        hi = _position(hub, row["id"], q.get("to"), last)
        with hub.history.at(row["id"], lo) as r:
            a = r.ids[:]
        with hub.history.at(row["id"], hi) as r:
            ops = diff_ids(a, r.ids, r.chars)
            for op in ops:
                author = r.authors.get(op.pop("_seq"))
                if author is not None and op["op"] != "equal":
                    op.update(author.as_dict())
        return ops

    return JSONResponse({"ops": await asyncio.to_thread(work)})


async def blame(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request)

    def work() -> dict[str, Any]:
        at = _position(hub, row["id"], request.query_params.get("at"), None)
        with hub.history.at(row["id"], at) as r:
            return {"seq": r.seq, "spans": r.blame()}

    return JSONResponse(await asyncio.to_thread(work))


def _suggestion_stats(state: bytes | None) -> dict[str, dict[str, int]]:
    """Per agent: how many of its suggestions (the ``suggestions`` Y.Map) were accepted/rejected."""
    doc = pycrdt.Doc()
    if state:
        doc.apply_update(state)
    stats: dict[str, dict[str, int]] = {}
    for value in doc.get("suggestions", type=pycrdt.Map).values():
        item = value.to_py() if hasattr(value, "to_py") else value
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

    return JSONResponse(await asyncio.to_thread(work))


async def revert(request: Request) -> Response:
    """Undo a run's, an author's or a time range's changes as one new, attributed edit."""
    hub = _hub(request)
    ident, row = await document_identity(request, write=True)
    body = await _json(request)
    run_id, author, lo, hi = body.get("run_id"), body.get("author_id"), body.get("from"), body.get("to")
    if not (run_id or author or lo is not None or hi is not None):
        raise InvalidRequest("say what to revert: run_id, author_id, or a from/to range")
    room = await hub.rooms.acquire(row["id"])
    try:
        seq0, state = room.applied_seq, room.doc.get_update()

        def matches(ch) -> bool:
            if run_id and ch.author.run_id != run_id:
                return False
            if author and ch.author.author_id != author:
                return False
            if lo is not None and ch.seq < _position(hub, row["id"], str(lo), 0):
                return False
            if hi is not None and ch.seq > _position(hub, row["id"], str(hi), seq0):
                return False
            return True

        def work() -> tuple[bytes | None, int, int, list[int]]:
            targets = [ch for ch in hub.history.changes(row["id"], upto=seq0) if matches(ch)]
            inserted = {c for ch in targets for c in ch.inserted_ids}
            deleted = [c for ch in targets for c in ch.deleted_ids]
            # Edits in the byte positions of the replay at seq0, which is the room's state.
            edits: list[tuple[int, int, Any]] = []  # (position, 0 delete | 1 insert, bytes | text)
            with hub.history.at(row["id"], seq0) as r:
                alive = set(r.char_ids())
                for pos, c in enumerate(r.ids):
                    if c >= 0 and c in inserted:
                        edits.append((pos, 0, len(r.chars[c].encode())))
                restores: list[list] = []
                for c in deleted:
                    if c in alive or c in inserted:
                        continue
                    pos = r.position_after(r.left_of[c], alive)
                    if restores and restores[-1][0] == pos:
                        restores[-1][2] += r.chars[c]  # a run of deleted text comes back whole
                    else:
                        restores.append([pos, 1, r.chars[c]])
                edits += [tuple(x) for x in restores]
            scratch = pycrdt.Doc()
            scratch.apply_update(state)
            text = scratch.get("content", type=pycrdt.Text)
            updates: list[bytes] = []
            sub = scratch.observe(lambda e: updates.append(e.update))
            with scratch.transaction():
                # right to left, deletions before insertions at the same place: no shifting
                for pos, kind, arg in sorted(edits, key=lambda e: (-e[0], e[1])):
                    if kind == 0:
                        del text[pos : pos + arg]
                    else:
                        text.insert(pos, arg)
            scratch.unobserve(sub)
            n_del = sum(1 for e in edits if e[1] == 0)
            n_res = sum(len(e[2]) for e in edits if e[1] == 1)
            return (updates[0] if updates else None), n_del, n_res, [ch.seq for ch in targets]

        update, n_del, n_res, seqs = await asyncio.to_thread(work)
        if update is None:
            return JSONResponse({"seq": None, "removed": 0, "restored": 0, "reverted": seqs})
        system = Identity(ident.user_id, ident.name, ident.role, row["id"], ident.token_id, {}, system=True)
        seq = room.submit(update, system, meta={"revert": {"run_id": run_id, "author_id": author, "from": lo, "to": hi,
                                                           "entries": len(seqs)}, "requested_by": ident.name})
        await hub.journal.drain()
        return JSONResponse({"seq": seq, "removed": n_del, "restored": n_res, "reverted": seqs})
    finally:
        hub.rooms.release(room)


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

    result = await asyncio.to_thread(work)
    filename = (row["title"] or row["id"]).replace('"', "")
    if fmt == "md":
        return PlainTextResponse(result, media_type="text/markdown",
                                 headers={"content-disposition": f'attachment; filename="{filename}.md"'})
    return Response(json.dumps(result, default=str), media_type="application/json",
                    headers={"content-disposition": f'attachment; filename="{filename}.json"'})


def _graph_builder(hub: Hub):
    if hub.graph is None:
        raise Unavailable("the text-embedding graph needs the inference extra (embeddings)")
    return hub.graph.builder


async def graph(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request)
    builder = _graph_builder(hub)

    def work() -> dict[str, Any]:
        at = _position(hub, row["id"], request.query_params.get("at"), None)
        return builder.graph(row["id"], at) | {"at": at}

    return JSONResponse(await asyncio.to_thread(work))


async def search(request: Request) -> Response:
    """Similar paragraphs across every document the caller may read."""
    hub = _hub(request)
    query = request.query_params.get("q", "").strip()
    if not query:
        raise InvalidRequest("q is required")
    builder = _graph_builder(hub)
    ident = await asyncio.to_thread(hub.auth.for_account, bearer(request))
    if ident.role is Role.USER and hub.auth.mode.value == "open":
        doc_ids = None
    elif ident.role is Role.USER:
        doc_ids = [d["id"] for d in await asyncio.to_thread(hub.store.list_documents, ident.user_id)]
    else:
        doc_ids = [ident.doc_id]
    results = await asyncio.to_thread(builder.search, query, doc_ids)
    return JSONResponse({"results": results})


routes = [
    Route("/api/docs/{doc_id}/graph", graph, methods=["GET"]),
    Route("/api/search", search, methods=["GET"]),
    Route("/api/docs/{doc_id}/history", history, methods=["GET"]),
    Route("/api/docs/{doc_id}/versions/{at}", version, methods=["GET"]),
    Route("/api/docs/{doc_id}/diff", diff, methods=["GET"]),
    Route("/api/docs/{doc_id}/blame", blame, methods=["GET"]),
    Route("/api/docs/{doc_id}/sessions", activity, methods=["GET"]),
    Route("/api/docs/{doc_id}/revert", revert, methods=["POST"]),
    Route("/api/docs/{doc_id}/export", export, methods=["GET"]),
]
