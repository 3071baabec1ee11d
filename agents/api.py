"""REST for agents and runs, and the service the hub process runs for them.

    GET  /api/agents                       → {agents: [{id, name, model, steering, prompt, color}]}
    POST /api/agents                       {name, id?, model?, prompt?, steering?, color?}
    PATCH /api/agents/{id}
    POST /api/docs/{id}/runs               {agent, task, mode, anchor?, range?, options?} → {run_id}
    GET  /api/docs/{id}/runs               recent runs
    GET  /api/docs/{id}/runs/{run_id}      {status, error?, ...}
    DELETE /api/docs/{id}/runs/{run_id}    cancel

Errors are the hub's ``{"error": {type, message}}`` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pycrdt import Doc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collab.api import _json, bearer, document_identity
from collab.auth import Identity, Role
from collab.exceptions import InvalidRequest, PermissionDenied, Unavailable

from . import anchors
from .celery_app import create_celery, is_embedded_broker
from .exceptions import InvalidTask
from .personas import PersonaStore, check_known_vectors, normalize_steering
from .prompts import Mode, Task
from .runs import RunStore, new_run_id, run_json
from .tasks import RUN_TASK

__all__ = ["AgentService", "routes"]

log = logging.getLogger("tinymorph.agents.api")

_OPTIONS = {"steering", "max_tokens", "min_tokens", "temperature"}


class AgentService:
    """Everything agents need inside the hub process: personas and runs in the hub's database, the
    Celery producer (and the embedded worker), the ``requests`` map, review stamps, the watcher."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.settings = hub.settings
        self.personas = PersonaStore(hub.store.engine, self.settings.database_url)
        self.runs = RunStore(hub.store.engine)
        self.celery = create_celery(self.settings)
        self.embedded = None
        self._unsubscribe: list = []
        self.requests = None
        self.watcher = None

    async def start(self) -> None:
        from .requests import REQUESTS, RequestMap, human_edit_of_open_room_with
        from .participant import SUGGESTIONS
        from .reviews import ReviewRecorder
        from .worker import EmbeddedWorker

        await asyncio.to_thread(self.personas.ensure_shipped)
        if self.settings.worker_embedded or is_embedded_broker(self.settings):
            self.embedded = EmbeddedWorker(self.celery, self.settings.worker_concurrency)
            await asyncio.to_thread(self.embedded.start)
        self.requests = RequestMap(self)
        bus = self.hub.bus
        self._unsubscribe.append(bus.subscribe("document.updated", self.requests.on_update,
                                               when=human_edit_of_open_room_with(self.hub, REQUESTS)))
        self._unsubscribe.append(bus.subscribe("document.updated", ReviewRecorder(self).on_update,
                                               when=human_edit_of_open_room_with(self.hub, SUGGESTIONS)))
        if self.settings.watcher_enabled:
            from .watcher import Watcher

            self.watcher = Watcher(self, self.settings.watcher_agent, self.settings.watcher_debounce_s)
            self._unsubscribe.append(self.hub.bus.subscribe("document.updated", self.watcher.on_update))
        self.hub.agents = self

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self.requests:
            await self.requests.stop()
        if self.watcher:
            self.watcher.stop()
        if self.embedded:
            await asyncio.to_thread(self.embedded.stop, 5)

    # -- runs -----------------------------------------------------------------------------
    async def _doc(self, doc_id: str) -> Doc:
        state, _seq = await self.hub.document_state(doc_id)
        doc = Doc()
        if state:
            doc.apply_update(state)
        return doc

    async def _doc_with(self, doc_id: str, positions: list, wait_s: float = 1.0) -> Doc:
        """The document, once it holds every item the positions name: a client may ask for a run
        at a character it typed a moment ago, whose update is still on its way to the hub."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            doc = await self._doc(doc_id)
            try:
                for pos in positions:
                    anchors.validate(doc, pos)
                return doc
            except anchors.InvalidAnchor:
                if asyncio.get_running_loop().time() >= deadline:
                    return doc  # validate() below names the culprit
            await asyncio.sleep(0.05)

    async def create_run(self, doc_id: str, body: dict[str, Any], requester: Identity) -> dict[str, Any]:
        """Validate a run request, record it, and queue the Celery task."""
        if not isinstance(body, dict):
            raise InvalidRequest("a run request must be an object")
        agent_id = body.get("agent")
        if not isinstance(agent_id, str) or not agent_id:
            raise InvalidRequest("'agent' must name an agent (see GET /api/agents)")
        persona = await asyncio.to_thread(self.personas.get, agent_id)
        task = Task.parse(body.get("task", "continue"))
        mode = Mode.parse(body.get("mode"))
        anchor, rng = body.get("anchor"), body.get("range")
        if rng is not None and (not isinstance(rng, dict) or "from" not in rng or "to" not in rng):
            raise anchors.InvalidAnchor("range must be {from, to}, each a Yjs relative position")
        doc = await self._doc_with(doc_id, [p for p in (anchor, *(rng.values() if rng else ())) if p is not None])
        if anchor is not None:
            anchor = anchors.validate(doc, anchor, "anchor")
        if rng is not None:
            rng = {"from": anchors.validate(doc, rng["from"], "range.from"),
                   "to": anchors.validate(doc, rng["to"], "range.to")}
            lo, hi = anchors.resolve(doc, rng["from"]), anchors.resolve(doc, rng["to"])
            if task.needs_range and lo == hi:
                raise InvalidTask(f"task {task.value!r} needs a non-empty range")
        elif task.needs_range:
            raise InvalidTask(f"task {task.value!r} needs a range (the selection)")
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise InvalidRequest("'options' must be an object")
        steering = persona.steering
        if options.get("steering"):
            steering = normalize_steering(options["steering"])
            await asyncio.to_thread(check_known_vectors, steering, self.settings.database_url)
        if "max_tokens" in options and not (isinstance(options["max_tokens"], int) and 1 <= options["max_tokens"] <= 512):
            raise InvalidRequest("options.max_tokens must be an integer in 1..512")
        if "min_tokens" in options and not (isinstance(options["min_tokens"], int)
                                            and 0 <= options["min_tokens"] <= options.get("max_tokens", 512)):
            raise InvalidRequest("options.min_tokens must be an integer in 0..max_tokens")
        if "temperature" in options and not (isinstance(options["temperature"], (int, float))
                                             and 0 <= options["temperature"] <= 2):
            raise InvalidRequest("options.temperature must be a number in 0..2")
        params = {"persona": {"id": persona.id, "name": persona.name, "prompt": persona.prompt, "color": persona.color},
                  "model": persona.model, "steering": steering, "anchor": anchor, "range": rng,
                  "options": {k: v for k, v in options.items() if k in _OPTIONS and k != "steering"}}
        run_id = new_run_id()
        row = await asyncio.to_thread(self.runs.create, run_id=run_id, doc_id=doc_id, agent_id=persona.id,
                                      task=task.value, mode=mode.value, params=params,
                                      requested_by=requester.user_id, requested_by_name=requester.name)
        try:
            await asyncio.to_thread(self.celery.send_task, RUN_TASK, args=[run_id], task_id=run_id)
        except Exception as exc:  # noqa: BLE001 - the broker is down: say so, and fail the run
            from .runs import RunStatus

            await asyncio.to_thread(self.runs.finish, run_id, RunStatus.FAILED, error=f"broker unavailable: {exc}")
            raise Unavailable(f"cannot queue the run: the broker is unavailable ({exc})") from None
        return row


def _service(request: Request) -> AgentService:
    service = getattr(request.app.state.hub, "agents", None)
    if service is None:
        raise Unavailable("agents are not running on this hub")
    return service


async def _account(request: Request, *, write: bool = False) -> Identity:
    hub = request.app.state.hub
    ident = await asyncio.to_thread(hub.auth.for_account, bearer(request))
    if write and ident.role in (Role.VIEWER, Role.AGENT):
        raise PermissionDenied(f"a {ident.role} token cannot manage agents")
    return ident


async def list_agents(request: Request) -> Response:
    service = _service(request)
    await _account(request)
    personas = await asyncio.to_thread(service.personas.list)
    return JSONResponse({"agents": [p.to_json() for p in personas]})


async def create_agent(request: Request) -> Response:
    service = _service(request)
    await _account(request, write=True)
    persona = await asyncio.to_thread(service.personas.create, await _json(request))
    return JSONResponse(persona.to_json(), status_code=201)


async def patch_agent(request: Request) -> Response:
    service = _service(request)
    await _account(request, write=True)
    persona = await asyncio.to_thread(service.personas.patch, request.path_params["agent_id"], await _json(request))
    return JSONResponse(persona.to_json())


async def create_run(request: Request) -> Response:
    service = _service(request)
    ident, row = await document_identity(request, write=True)
    if ident.role is Role.AGENT:
        raise PermissionDenied("agents cannot start runs")
    run = await service.create_run(row["id"], await _json(request), ident)
    return JSONResponse({"run_id": run["id"], "status": run["status"]}, status_code=201)


async def list_runs(request: Request) -> Response:
    service = _service(request)
    _ident, row = await document_identity(request)
    runs = await asyncio.to_thread(service.runs.list, row["id"])
    return JSONResponse({"runs": [run_json(r) for r in runs]})


async def get_run(request: Request) -> Response:
    service = _service(request)
    _ident, row = await document_identity(request)
    run = await asyncio.to_thread(service.runs.get, request.path_params["run_id"], row["id"])
    return JSONResponse(run_json(run))


async def cancel_run(request: Request) -> Response:
    service = _service(request)
    _ident, row = await document_identity(request, write=True)
    run = await asyncio.to_thread(service.runs.cancel, request.path_params["run_id"], row["id"])
    return JSONResponse(run_json(run), status_code=202 if run["status"] not in ("cancelled",) else 200)


routes = [
    Route("/api/agents", list_agents, methods=["GET"]),
    Route("/api/agents", create_agent, methods=["POST"]),
    Route("/api/agents/{agent_id}", patch_agent, methods=["PATCH"]),
    Route("/api/docs/{doc_id}/runs", create_run, methods=["POST"]),
    Route("/api/docs/{doc_id}/runs", list_runs, methods=["GET"]),
    Route("/api/docs/{doc_id}/runs/{run_id}", get_run, methods=["GET"]),
    Route("/api/docs/{doc_id}/runs/{run_id}", cancel_run, methods=["DELETE"]),
]
