"""The Starlette application: websocket hub, REST API, the OpenAI-compatible ``/v1`` and the UI."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from .api import error_response
from .api import routes as api_routes
from .config import Settings
from .exceptions import TinymorphError
from .hub import Hub
from .review import routes as review_routes
from .sockets import websocket_endpoint

__all__ = ["create_app"]

log = logging.getLogger("tinymorph.app")

FRONTEND_DIST = Path(__file__).resolve().parent.parent / "frontend" / "dist"


async def _health(request: Request) -> JSONResponse:
    hub: Hub = request.app.state.hub
    return JSONResponse({"status": hub.state.value, "peers": len(hub.peers), "rooms": len(hub.rooms.all()) if hub.rooms else 0})


async def _spa_index(request: Request) -> FileResponse:
    """Document pages (/d/{id}) are routed in the browser: serve the app shell, never cached."""
    return FileResponse(FRONTEND_DIST / "index.html", headers={"cache-control": "no-cache"})


def _extra_mounts(settings: Settings, state) -> list[BaseRoute]:
    """Optional parts that live in other packages; absent ones are simply not mounted."""
    mounts: list[BaseRoute] = []
    try:
        from inference.registry import Inference
        from inference.sae_api import routes as sae_routes
        from inference.server import create_app as create_inference_app
    except ImportError as exc:  # the inference stack is an install away; the hub works without it
        log.info("/v1 and /api/sae not mounted: %s", exc)
    else:
        # One Inference (it loads models lazily) shared by /v1 and /api/sae: one copy of each model.
        state.inference = Inference(settings)
        mounts.append(Mount("/v1", app=create_inference_app(settings, state.inference)))
        mounts.extend(sae_routes)
    try:
        from agents.api import routes as agent_routes
    except ImportError as exc:  # agents need celery; the hub works without them
        log.info("agents API not mounted: %s", exc)
    else:
        mounts.extend(agent_routes)
    return mounts


def _extra_services(hub: Hub) -> list:
    """Optional services started with the hub (after it) and stopped before it."""
    try:
        from agents.api import AgentService
    except ImportError:
        return []
    return [AgentService(hub)]


def create_app(settings: Settings | None = None, hub: Hub | None = None) -> Starlette:
    settings = settings or Settings.load()
    hub = hub or Hub(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        services = _extra_services(hub)
        for service in services:
            await service.start()
        try:
            yield
        finally:
            for service in reversed(services):
                await service.stop()
            await hub.stop()

    app_state = State()  # becomes app.state: the optional parts put shared objects here
    routes = [
        WebSocketRoute("/ws/{doc_id:str}", websocket_endpoint),
        Route("/healthz", _health),
        *api_routes,
        *review_routes,
        *_extra_mounts(settings, app_state),
    ]
    if FRONTEND_DIST.is_dir():
        routes.append(Route("/d/{rest:path}", _spa_index))  # the browser app's own routes
        routes.append(Mount("/", app=StaticFiles(directory=FRONTEND_DIST, html=True)))

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)  # type: ignore[arg-type]

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={TinymorphError: on_error})
    app.state = app_state
    app.state.hub = hub
    app.state.settings = settings
    return app
