"""Open mode's guard: refuse requests from other sites and under other host names.

An open hub trusts whoever reaches it, which is meant to be its local user. A web page that user
visits can also reach it — by a cross-site request or websocket (the browser sends the page's
``Origin``), or by DNS rebinding (the page's own host name resolving to 127.0.0.1: the browser
then sends the attacker's ``Host``). So in open mode a request whose ``Host`` is not one of the
hub's names, or whose ``Origin`` is a site other than the hub itself, is refused: 403 for HTTP,
a refused handshake for a websocket. Clients that are not browsers send no ``Origin``.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["OpenModeGuard"]

log = logging.getLogger("tinymorph.guard")

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


class OpenModeGuard:
    """ASGI middleware; ``hosts``: the ``host:port`` names the hub answers to."""

    def __init__(self, app: ASGIApp, port: int, bind_host: str, allowed_origins: str, allowed_hosts: str) -> None:
        self.app = app
        names = {*LOOPBACK, bind_host, *(h.strip() for h in allowed_hosts.split(",") if h.strip())}
        self.hosts = {f"{n}:{port}" for n in names} | {n for n in names if ":" in n and not n.startswith("[")}
        self.origins = {o.strip().rstrip("/") for o in allowed_origins.split(",") if o.strip()}

    def allowed(self, scope: Scope) -> str | None:
        """None when the request may pass, else why not."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        host = headers.get("host", "")
        if host not in self.hosts:
            return f"host {host!r} is not this hub's"
        origin = headers.get("origin")
        if origin is None or origin.rstrip("/") in self.origins:
            return None
        if urlsplit(origin).netloc == host:
            return None  # the hub's own pages
        return f"origin {origin!r} is another site"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or await self.admit(scope, send):
            await self.app(scope, receive, send)

    async def admit(self, scope: Scope, send: Send) -> bool:
        """Whether the request may pass; if not, it has been answered (403, or a refused
        handshake). The hub's websocket route asks this itself (see ``app.HubApplication``)."""
        why = self.allowed(scope)
        if why is None:
            return True
        log.warning("refused %s %s: %s (open mode)", scope["type"], scope.get("path"), why)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4403, "reason": "forbidden"})
            return False
        body = b'{"error": {"type": "PermissionDenied", "message": "' + why.replace('"', "'").encode() + b'"}}'
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return False
