"""The Starlette application: the websocket hub, its REST API, the UI, and what extensions add."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import AsyncIterator, Callable, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from .api import bearer, error_response
from .api import routes as api_routes
from .auth import AuthMode
from .config import Settings
from .exceptions import TinymorphError
from .extensions import Extension, ExtensionContext, hook, load_extensions
from .guard import OpenModeGuard
from .hub import Hub, HubState
from .logs import redact_tokens
from .metrics import CONTENT_TYPE_LATEST
from .review import routes as review_routes
from .sockets import websocket_endpoint

__all__ = ["HubApplication", "create_app"]

log = logging.getLogger("tinymorph.app")

FRONTEND_DIST = Path(__file__).resolve().parent.parent / "frontend" / "dist"


async def _health(request: Request) -> JSONResponse:
    hub: Hub = request.app.state.hub
    quarantined = [{"doc_id": doc_id, "seq": seq, "reason": reason}
                   for (doc_id, seq), reason in hub.store.quarantined.items()]
    body = {"status": hub.state.value, "peers": len(hub.peers),
            "rooms": len(hub.rooms.all()) if hub.rooms else 0, "quarantined": quarantined}
    if hub.cluster is not None:
        body["cluster"] = hub.cluster.stats()
    # Not ready (503) unless running: a load balancer takes a starting or draining hub out of
    # rotation; the body still says what it is doing.
    return JSONResponse(body, status_code=200 if hub.state is HubState.RUNNING else 503)


async def _metrics(request: Request) -> Response:
    """Prometheus metrics (``metrics.py``); in tokens mode for a valid token only."""
    hub: Hub = request.app.state.hub
    if hub.auth.mode is AuthMode.TOKENS:
        await asyncio.to_thread(hub.auth.for_account, bearer(request))  # InvalidToken: 401
    # off the event loop: an extension's collector may read the database
    return Response(await asyncio.to_thread(hub.metrics.render), media_type=CONTENT_TYPE_LATEST)


async def _spa_index(request: Request) -> FileResponse:
    """Document pages (/d/{id}) are routed in the browser: serve the app shell, never cached."""
    return FileResponse(FRONTEND_DIST / "index.html", headers={"cache-control": "no-cache"})


class HubApplication(Starlette):
    """The Starlette app, except that the hub's own websocket route (``/ws/{doc_id}``) is served
    first-hand: matched by its own route object, checked by open mode's guard, and handed to
    the endpoint without the middleware stack and router in between.

    Why: a socket's task resumes through every coroutine between uvicorn and the endpoint each
    time it waits (the accept, every queued frame), and for a websocket those layers do nothing
    the hub needs (Starlette's error and exception middleware only act on HTTP responses). In a
    burst of joins they were most of Starlette's share of the hub's CPU. Every other request,
    websockets of extensions included, takes the ordinary way, middleware and all."""

    def __init__(self, *, socket_route: WebSocketRoute, guard: OpenModeGuard | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.socket_route = socket_route
        #: Open mode's Host/Origin check, the same one the middleware stack runs for the rest.
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            match, child_scope = self.socket_route.matches(scope)
            if match is Match.FULL:
                scope["app"] = self
                if self.guard is None or await self.guard.admit(scope, send):
                    scope.update(child_scope)
                    await websocket_endpoint(WebSocket(scope, receive, send))
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, hub: Hub | None = None,
               extensions: Sequence[Extension] | None = None) -> Starlette:
    """The hub's app, with ``extensions`` (default: every installed one, see ``extensions.py``)."""
    settings = settings or Settings.load()
    hub = hub or Hub(settings)
    redact_tokens()
    extensions = list(load_extensions() if extensions is None else extensions)
    hub.migrations = [ext.migrations for ext in extensions if getattr(ext, "migrations", None)]
    context = ExtensionContext(settings, hub)
    context.state.readable_documents = context.readable_documents

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        started: list[Extension] = []
        unsubscribe: list[Callable[[], None]] = []
        try:
            for ext in extensions:
                if startup := hook(ext, "startup"):
                    await startup(context)
                started.append(ext)
                if subscriptions := hook(ext, "subscriptions"):
                    for topic, handler, *when in subscriptions(context):
                        unsubscribe.append(hub.bus.subscribe(topic, handler, *when))
            log.info("extensions: %s", ", ".join(ext.name for ext in extensions) or "none")
            yield
        finally:
            for undo in unsubscribe:
                undo()
            for ext in reversed(started):
                if shutdown := hook(ext, "shutdown"):
                    await shutdown(context)
            await hub.stop()

    extension_routes: list[BaseRoute] = []
    for ext in extensions:
        if routes := hook(ext, "routes"):
            extension_routes.extend(routes(context))
    socket_route = WebSocketRoute("/ws/{doc_id:str}", websocket_endpoint)
    routes = [
        socket_route,
        Route("/healthz", _health),
        Route("/metrics", _metrics),
        *api_routes,
        *review_routes,
        *extension_routes,
    ]
    if FRONTEND_DIST.is_dir():
        routes.append(Route("/d/{rest:path}", _spa_index))  # the browser app's own routes
        routes.append(Mount("/", app=StaticFiles(directory=FRONTEND_DIST, html=True)))

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)  # type: ignore[arg-type]

    middleware, guard = [], None
    if settings.auth_mode is AuthMode.OPEN:
        names = dict(port=settings.port, bind_host=settings.host,
                     allowed_origins=settings.allowed_origins, allowed_hosts=settings.allowed_hosts)
        middleware.append(Middleware(OpenModeGuard, **names))
        guard = OpenModeGuard(None, **names)  # type: ignore[arg-type] - asked directly, wraps nothing
    app = HubApplication(socket_route=socket_route, guard=guard, routes=routes, lifespan=lifespan,
                         middleware=middleware, exception_handlers={TinymorphError: on_error})
    app.state = context.state  # extensions share objects here (state.inference, state.agents)
    app.state.hub = hub
    app.state.settings = settings
    app.state.extensions = extensions
    return app
