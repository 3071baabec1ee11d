"""REST of the agents extension: personas, runs, the embedding graph and search.

    GET  /api/agents                       → {agents: [{id, name, model, steering, prompt, color}]}
    POST /api/agents                       {name, id?, model?, prompt?, steering?, color?}
    PATCH /api/agents/{id}
    POST /api/docs/{id}/runs               {agent, task, mode, anchor?, range?, options?} → {run_id}
    GET  /api/docs/{id}/runs               recent runs
    GET  /api/docs/{id}/runs/{run_id}      {status, error?, ...}
    DELETE /api/docs/{id}/runs/{run_id}    cancel
    GET  /api/docs/{id}/graph?at=          the text-embedding graph (as stored by the workers)
    GET  /api/search?q=                    similar paragraphs across the documents you may read

Handlers parse, check authorization and call ``AgentService``; errors are the hub's
``{"error": {type, message}}`` with a 4xx status.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collab.api import bearer, document_identity, read_json
from collab.auth import AuthMode, Identity, Role
from collab.exceptions import InvalidRequest, PermissionDenied, Unavailable

from .personas import stored_guides
from .runs import run_json
from .service import AgentService

__all__ = ["routes"]


def service_of(request: Request) -> AgentService:
    service = getattr(request.app.state, "agents", None)  # set by the extension's startup
    if service is None:
        raise Unavailable("agents are not running on this hub")
    return service


async def account(request: Request, *, write: bool = False) -> Identity:
    hub = request.app.state.hub
    ident = await asyncio.to_thread(hub.auth.for_account, bearer(request))
    if write and ident.role in (Role.VIEWER, Role.AGENT):
        raise PermissionDenied(f"a {ident.role} token cannot manage agents")
    return ident


async def list_agents(request: Request) -> Response:
    service = service_of(request)
    await account(request)
    personas = await asyncio.to_thread(service.personas.list)
    guides = await _guides(service, personas)
    return JSONResponse({"agents": [p.to_json(guides) for p in personas]})


async def create_agent(request: Request) -> Response:
    service = service_of(request)
    ident = await account(request, write=True)
    persona = await asyncio.to_thread(service.personas.create, await read_json(request), _owner(request, ident))
    return JSONResponse(persona.to_json(await _guides(service, [persona])), status_code=201)


async def patch_agent(request: Request) -> Response:
    service = service_of(request)
    ident = await account(request, write=True)
    persona = await asyncio.to_thread(service.personas.patch, request.path_params["agent_id"],
                                      await read_json(request), _owner(request, ident))
    return JSONResponse(persona.to_json(await _guides(service, [persona])))


async def _guides(service: Any, personas: list[Any]) -> dict[str, Any]:
    """The built vectors' own strength guides for these personas' steering (``stored_guides``)."""
    return await asyncio.to_thread(stored_guides, [p.steering for p in personas], service.hub.store.engine)


def _owner(request: Request, ident: Identity) -> str | None:
    """Whom a persona belongs to or is changed by: the caller's user id in tokens mode; None
    (the operator) on an open hub, whose one local user owns everything."""
    return None if request.app.state.hub.auth.mode is AuthMode.OPEN else ident.user_id


async def create_run(request: Request) -> Response:
    service = service_of(request)
    ident, row = await document_identity(request, write=True)
    if ident.role is Role.AGENT:
        raise PermissionDenied("agents cannot start runs")
    run = await service.create_run(row["id"], await read_json(request), ident)
    return JSONResponse({"run_id": run["id"], "status": run["status"]}, status_code=201)


async def list_runs(request: Request) -> Response:
    service = service_of(request)
    _ident, row = await document_identity(request)
    runs = await asyncio.to_thread(service.runs.list, row["id"])
    return JSONResponse({"runs": [run_json(r) for r in runs]})


async def get_run(request: Request) -> Response:
    service = service_of(request)
    _ident, row = await document_identity(request)
    run = await asyncio.to_thread(service.runs.get, request.path_params["run_id"], row["id"])
    return JSONResponse(run_json(run))


async def cancel_run(request: Request) -> Response:
    service = service_of(request)
    _ident, row = await document_identity(request, write=True)
    run = await asyncio.to_thread(service.runs.cancel, request.path_params["run_id"], row["id"])
    return JSONResponse(run_json(run), status_code=202 if run["status"] not in ("cancelled",) else 200)


async def graph(request: Request) -> Response:
    service = service_of(request)
    _ident, row = await document_identity(request)
    at = request.query_params.get("at")
    return JSONResponse(await service.graph(row["id"], at))


async def search(request: Request) -> Response:
    """Similar paragraphs across every document the caller may read."""
    service = service_of(request)
    query = request.query_params.get("q", "").strip()
    if not query:
        raise InvalidRequest("q is required")
    hub = request.app.state.hub
    ident = await asyncio.to_thread(hub.auth.for_account, bearer(request))
    if ident.role is Role.USER and hub.auth.mode is AuthMode.OPEN:
        doc_ids = None
    elif ident.role is Role.USER:
        doc_ids = [d["id"] for d in await asyncio.to_thread(hub.store.list_documents, ident.user_id)]
    else:
        doc_ids = [ident.doc_id]
    return JSONResponse({"results": await service.search(query, doc_ids)})


routes = [
    Route("/api/agents", list_agents, methods=["GET"]),
    Route("/api/agents", create_agent, methods=["POST"]),
    Route("/api/agents/{agent_id}", patch_agent, methods=["PATCH"]),
    Route("/api/docs/{doc_id}/runs", create_run, methods=["POST"]),
    Route("/api/docs/{doc_id}/runs", list_runs, methods=["GET"]),
    Route("/api/docs/{doc_id}/runs/{run_id}", get_run, methods=["GET"]),
    Route("/api/docs/{doc_id}/runs/{run_id}", cancel_run, methods=["DELETE"]),
    Route("/api/docs/{doc_id}/graph", graph, methods=["GET"]),
    Route("/api/search", search, methods=["GET"]),
]
