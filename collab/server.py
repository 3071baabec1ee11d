"""Running the app under uvicorn, with a shutdown that drains the hub before closing sockets.

uvicorn's own shutdown closes every websocket at once; anything a client had already put on the
wire but uvicorn had not yet read would be lost. This server first stops listening, lets the hub
read its sockets until they go quiet (``Hub.drain``), and only then lets uvicorn close them;
the app's lifespan then commits the journal and snapshots the rooms.

Websockets are served by the hub's fast protocol, or by uvicorn's stock one when this install of
uvicorn/websockets lacks an internal the fast one needs, or when ``TINYMORPH_WS_PROTOCOL=stock``
asks for it (see ``wsprotocol.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Iterable, Iterator

import uvicorn

from .app import create_app
from .config import Settings
from .exceptions import ConfigError
from .hub import Hub
from .wsprotocol import MISSING, STOCK_PROTOCOL

__all__ = ["serve", "choose_protocol"]

log = logging.getLogger("tinymorph.server")


def choose_protocol(mode: str = "fast", missing: Iterable[str] = MISSING) -> type[asyncio.Protocol] | str:
    """uvicorn's ``ws`` argument. ``mode``: ``fast`` (the hub's protocol, unless ``missing``
    names an internal it needs: then a warning naming each, and uvicorn's stock protocol) or
    ``stock`` (uvicorn's own, e.g. to rule the fast path out); anything else: ConfigError."""
    if mode not in ("fast", "stock"):
        raise ConfigError(f"websocket protocol must be 'fast' or 'stock', not {mode!r}")
    missing = list(missing)
    if mode == "stock":
        log.warning("serving websockets with uvicorn's %s protocol, as asked (the fast path is off)",
                    STOCK_PROTOCOL)
        return STOCK_PROTOCOL
    if missing:
        log.warning("websocket fast path off, serving with uvicorn's %s protocol: this uvicorn/websockets "
                    "lacks %s", STOCK_PROTOCOL, ", ".join(missing))
        return STOCK_PROTOCOL
    from ._wsprotocol import HubWebSocketProtocol  # imports those internals: only once they are known present

    return HubWebSocketProtocol


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self.hub = hub
        self.drained = False

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        tune_gc()

    async def shutdown(self, sockets=None) -> None:
        for server in self.servers:
            server.close()  # no new connections while we drain
        await self.hub.drain()
        self.drained = True
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn re-raises the SIGTERM/SIGINT it caught once it has shut down, so the process
        would end "killed by SIGTERM" (-15) even after a complete, graceful stop. A stop that
        drained the hub and ran the app's shutdown without error is a success: exit 0. Anything
        else (no drain, a forced exit, a failed lifespan shutdown) keeps uvicorn's behaviour."""
        with super().capture_signals():
            yield
            lifespan = getattr(self, "lifespan", None)
            failed = lifespan is None or lifespan.shutdown_failed or lifespan.error_occurred
            if self.drained and not self.force_exit and not failed:
                self._captured_signals.clear()


#: Collection thresholds while serving (CPython's default is 700, 10, 10). A join or a frame
#: allocates many short-lived objects; with the defaults, collections ran every few joins and
#: took a fifth of a burst of joins' CPU. Garbage cycles wait longer (tens of thousands of
#: objects at most): memory, not correctness.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Make garbage collection cheap for a long-running hub: everything allocated at start-up
    (modules, the app, SQLAlchemy's and pycrdt's tables) is frozen out of the collector, which
    otherwise walked all of it on every full collection during a burst of joins, and collections
    run less often. Cycles made while serving are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(settings: Settings, log_level: str = "info") -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # fast (the default) or stock; anything else: ConfigError, before anything starts
    ws = choose_protocol(os.environ.get("TINYMORPH_WS_PROTOCOL", "fast"))
    hub = Hub(settings)
    app = create_app(settings, hub)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws=ws,  # uvicorn's websockets-sansio, with a fast path for binary frames unless it cannot run
        # permessage-deflate roughly doubles server CPU for small Yjs frames; off by default.
        ws_per_message_deflate=False,
        # uvicorn drops anything above this itself; the hub's own, smaller limit answers with a reason.
        ws_max_size=settings.max_message_bytes * 2 + (1 << 20),
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    _DrainingServer(config, hub).run()
