"""REST endpoints for documents and tokens (JSON in, JSON out).

Credentials come as ``Authorization: Bearer <token>`` or ``?token=``. Errors are
``{"error": {"type": ..., "message": ...}}`` with the HTTP status of the exception.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .auth import AuthMode, Identity, Role
from .exceptions import (
    HubShuttingDown,
    InvalidRequest,
    MessageTooLarge,
    PermissionDenied,
    TinymorphError,
    Unavailable,
    UnknownDocument,
)
from .hub import Hub
from .store import as_utc, content_text

__all__ = ["routes", "error_response", "bearer", "document_identity", "read_json"]


def error_response(exc: TinymorphError) -> JSONResponse:
    """The hub's error body. A 5xx says what kind of failure, never its text (which may name
    internals: paths, SQL); the log has the rest."""
    message = str(exc) if exc.http_status < 500 or isinstance(exc, (Unavailable, HubShuttingDown)) \
        else "internal error (see the hub's log)"
    return JSONResponse({"error": {"type": type(exc).__name__, "message": message}}, status_code=exc.http_status)


def _hub(request: Request) -> Hub:
    return request.app.state.hub


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.query_params.get("token")


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; not JSON, or not an object: InvalidRequest (400); over
    the hub's ``max_body_bytes``: MessageTooLarge (413), read no further than the limit."""
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise MessageTooLarge(f"request body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise MessageTooLarge(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise InvalidRequest("body must be JSON") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    return body


def _string(body: dict[str, Any], key: str, default: str | None = None, max_len: int = 500) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or len(value) > max_len:
        raise InvalidRequest(f"{key!r} must be a string of at most {max_len} characters")
    return value


async def document_identity(request: Request, *, write: bool = False, owner: bool = False) -> tuple[Identity, dict]:
    """Authenticate a request about one document and load that document's row (or 404)."""
    hub, doc_id = _hub(request), request.path_params["doc_id"]
    ident = await asyncio.to_thread(hub.auth.for_document, bearer(request), doc_id)
    if owner and ident.role is not Role.OWNER:
        raise PermissionDenied("only the document's owner may do this")
    if write and not ident.role.can_write:
        raise PermissionDenied(f"{ident.role} cannot change this document")
    row = await asyncio.to_thread(hub.store.get_document, doc_id)
    if row is None:
        raise UnknownDocument(f"unknown document {doc_id!r}")
    return ident, row


def _doc_json(row: dict) -> dict[str, Any]:
    return {"id": row["id"], "title": row["title"], "owner_id": row["owner_id"], "created_at": as_utc(row["created_at"]).isoformat()}


async def create_document(request: Request) -> Response:
    hub = _hub(request)
    ident = await asyncio.to_thread(hub.auth.for_account, bearer(request))
    if ident.role not in (Role.USER, Role.OWNER):
        raise PermissionDenied("creating documents needs a user token")
    body = await read_json(request)
    title = _string(body, "title", "Untitled")
    row = await asyncio.to_thread(hub.store.create_document, title, ident.user_id)
    token, token_id = await asyncio.to_thread(
        hub.auth.issue, user_id=ident.user_id, name=ident.name, role=Role.OWNER, doc_id=row["id"]
    )
    return JSONResponse({**_doc_json(row), "owner_token": token, "token_id": token_id}, status_code=201)


async def list_documents(request: Request) -> Response:
    hub = _hub(request)
    ident = await asyncio.to_thread(hub.auth.for_account, bearer(request))
    if hub.auth.mode is AuthMode.OPEN and ident.role is Role.USER:
        rows = await asyncio.to_thread(hub.store.list_documents)
    elif ident.role is Role.USER:
        rows = await asyncio.to_thread(hub.store.list_documents, ident.user_id)
    else:  # a document token sees its own document
        row = await asyncio.to_thread(hub.store.get_document, ident.doc_id)
        rows = [row] if row else []
    return JSONResponse({"documents": [_doc_json(r) for r in rows]})


async def get_document(request: Request) -> Response:
    hub = _hub(request)
    ident, row = await document_identity(request)
    room = hub.rooms.get(row["id"])
    if room is not None:
        text, seq = str(room.text), room.applied_seq
    else:
        loaded = await asyncio.to_thread(hub.store.load, row["id"])
        text, seq = content_text(loaded.state), loaded.seq
    return JSONResponse({**_doc_json(row), "text": text, "seq": seq, "role": str(ident.role),
                         "participants": len(room.peers) if room else 0})


async def rename_document(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request, write=True)
    title = _string(await read_json(request), "title")
    await asyncio.to_thread(hub.store.rename_document, row["id"], title)
    return JSONResponse({**_doc_json(row), "title": title})


async def create_token(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request, owner=True)
    body = await read_json(request)
    try:
        role = Role(_string(body, "role"))
    except ValueError as exc:
        raise InvalidRequest("role must be one of owner, editor, viewer, agent") from exc
    if role is Role.USER:
        raise InvalidRequest("role must be one of owner, editor, viewer, agent")
    name = _string(body, "name", str(role))
    ttl = body.get("ttl_s")
    if ttl is not None and (not isinstance(ttl, int) or not 0 < ttl <= 366 * 24 * 3600):
        raise InvalidRequest("ttl_s must be a positive number of seconds, at most a year")
    meta = body.get("meta") or {}
    if not isinstance(meta, dict):
        raise InvalidRequest("meta must be an object")
    user_id = _string(body, "user_id", hub.auth.new_user_id(), max_len=200)
    token, token_id = await asyncio.to_thread(
        hub.auth.issue, user_id=user_id, name=name, role=role, doc_id=row["id"], ttl_s=ttl, meta=meta
    )
    return JSONResponse({"token": token, "token_id": token_id, "role": str(role), "name": name}, status_code=201)


async def list_tokens(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request, owner=True)
    rows = await asyncio.to_thread(hub.store.list_tokens, row["id"])
    return JSONResponse(
        {
            "tokens": [
                {
                    "token_id": r["id"],
                    "role": r["role"],
                    "name": r["name"],
                    "user_id": r["user_id"],
                    "expires_at": as_utc(r["expires_at"]).isoformat(),
                    "revoked": r["revoked_at"] is not None,
                }
                for r in rows
            ]
        }
    )


async def revoke_token(request: Request) -> Response:
    hub = _hub(request)
    _ident, row = await document_identity(request, owner=True)
    token_id = request.path_params["token_id"]
    token = await asyncio.to_thread(hub.store.get_token, token_id)
    if token is None or token["doc_id"] != row["id"]:
        return error_response(UnknownDocument(f"no token {token_id!r} on this document"))
    await hub.revoke(row["id"], token_id)
    return Response(status_code=204)


routes = [
    Route("/api/docs", create_document, methods=["POST"]),
    Route("/api/docs", list_documents, methods=["GET"]),
    Route("/api/docs/{doc_id}", get_document, methods=["GET"]),
    Route("/api/docs/{doc_id}", rename_document, methods=["PATCH"]),
    Route("/api/docs/{doc_id}/tokens", create_token, methods=["POST"]),
    Route("/api/docs/{doc_id}/tokens", list_tokens, methods=["GET"]),
    Route("/api/docs/{doc_id}/tokens/{token_id}", revoke_token, methods=["DELETE"]),
]
