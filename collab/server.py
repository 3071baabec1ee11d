"""Running the app under uvicorn, with a shutdown that drains the hub before closing sockets.

uvicorn's own shutdown closes every websocket at once; anything a client had already put on the
wire but uvicorn had not yet read would be lost. This server first stops listening, lets the hub
read its sockets until they go quiet (``Hub.drain``), and only then lets uvicorn close them;
the app's lifespan then commits the journal and snapshots the rooms.
"""

from __future__ import annotations

import logging

import uvicorn

from ._wsprotocol import HubWebSocketProtocol
from .app import create_app
from .config import Settings
from .hub import Hub

__all__ = ["serve"]


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self.hub = hub

    async def shutdown(self, sockets=None) -> None:
        for server in self.servers:
            server.close()  # no new connections while we drain
        await self.hub.drain()
        await super().shutdown(sockets)


def serve(settings: Settings, log_level: str = "info") -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    hub = Hub(settings)
    app = create_app(settings, hub)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws=HubWebSocketProtocol,  # uvicorn's websockets-sansio, with a fast path for binary frames
        # permessage-deflate roughly doubles server CPU for small Yjs frames; off by default.
        ws_per_message_deflate=False,
        # uvicorn drops anything above this itself; the hub's own, smaller limit answers with a reason.
        ws_max_size=settings.max_message_bytes * 2 + (1 << 20),
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    _DrainingServer(config, hub).run()
