"""The extension interface: how packages add to the hub without the hub importing them.

The hub (``collab``) is a leaf: it knows nothing of agents or inference. They are found through the
``tinymorph.extensions`` entry-point group (``pyproject.toml``) and each one is an object with a
few optional hooks, in the spirit of Hocuspocus' extensions:

    name         a short name ("agents"), used in logs and by the ``extensions`` setting
    migrations   an Alembic script directory for the tables it owns (its env.py keeps its own
                 version table, so each package migrates on its own schedule)
    commands(subparsers, context)   adds ``tinymorph <command>`` sub-commands; ``context()``
                                    gives an ExtensionContext from the settings, when one runs
    routes(context)                 Starlette routes mounted in ``tinymorph serve``
    await startup(context)          after the hub started
    subscriptions(context)          then: ``(topic, async handler[, filter])`` on the hub's bus,
                                    unsubscribed again before shutdown
    await shutdown(context)         before the hub stops, in reverse order

The interface is a Protocol, not a base class, so a package that must not import ``collab``
(``inference``) can implement it with plain attributes. A missing hook is a no-op.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Iterator, Protocol, Sequence

from starlette.datastructures import State

from .auth import AuthMode
from .config import Settings
from .exceptions import TinymorphError

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from .events import Event
    from .hub import Hub

__all__ = ["Extension", "ExtensionContext", "load_extensions", "ENTRY_POINT_GROUP"]

log = logging.getLogger("tinymorph.extensions")

ENTRY_POINT_GROUP = "tinymorph.extensions"

Handler = Callable[["Event"], Awaitable[None]]
#: ``(topic, handler)`` or ``(topic, handler, when)``: see ``EventBus.subscribe``.
Subscription = tuple[Any, ...]


class Extension(Protocol):
    name: str
    migrations: Path | None

    def commands(self, subparsers: Any, context: Callable[[], "ExtensionContext"]) -> None: ...

    def routes(self, context: "ExtensionContext") -> Sequence["BaseRoute"]: ...

    def subscriptions(self, context: "ExtensionContext") -> Iterable[Subscription]: ...

    async def startup(self, context: "ExtensionContext") -> None: ...

    async def shutdown(self, context: "ExtensionContext") -> None: ...


@dataclass
class ExtensionContext:
    """What an extension is given: plain values it can read without importing ``collab``.

    ``state`` is the Starlette app's state, where extensions share objects (``state.inference``);
    ``hub`` is None outside ``tinymorph serve`` (commands, workers).
    """

    settings: Settings
    hub: "Hub | None" = None
    state: State = field(default_factory=State)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    def protect(self, app: Any) -> Any:
        """``app`` (an ASGI app an extension mounts) behind the hub's authentication: in tokens
        mode a request needs a valid token (``Authorization: Bearer`` or ``?token=``) or gets the
        hub's 401/403 JSON error; in open mode it passes. Extensions that cannot import the hub
        (inference) get authorization this way, from the hub that mounts them."""
        hub = self.hub
        if hub is None:
            return app

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and hub.auth.mode is AuthMode.TOKENS:
                from starlette.requests import Request

                from .api import bearer, error_response

                try:
                    await asyncio.to_thread(hub.auth.for_account, bearer(Request(scope)))
                except TinymorphError as exc:
                    return await error_response(exc)(scope, receive, send)
            await app(scope, receive, send)

        return guarded

    def protect_routes(self, routes: Sequence["BaseRoute"]) -> list["BaseRoute"]:
        """Copies of the routes with each one's app behind :meth:`protect` (paths and names
        unchanged; the originals, module-level in their package, stay as they are)."""
        out = []
        for route in routes:
            guarded = copy.copy(route)
            guarded.app = self.protect(route.app)
            out.append(guarded)
        return out

    async def readable_documents(self, request: Any) -> set[str] | None:
        """The documents the caller of ``request`` may read (None: all, on an open hub): what an
        extension filters shared data by, e.g. SAE feature examples taken from documents."""
        hub = self.hub
        if hub is None or hub.auth.mode is AuthMode.OPEN:
            return None
        from .api import bearer
        from .auth import Role

        ident = await asyncio.to_thread(hub.auth.for_account, bearer(request))
        if ident.role is not Role.USER:
            return {ident.doc_id} if ident.doc_id else set()
        docs = await asyncio.to_thread(hub.store.list_documents, ident.user_id)
        return {d["id"] for d in docs}

    def documents(self) -> Iterator[tuple[str, str]]:
        """``(doc_id, text)`` of every document: the workspace an SAE is trained on. A database
        no hub has served yet (no tables: ``tinymorph eval`` on a fresh machine) has none."""
        import sqlalchemy as sa

        from .models import Document
        from .store import Store, content_text

        store = Store(self.database_url)
        try:
            if not sa.inspect(store.engine).has_table(Document.__tablename__):
                return
            for doc in store.list_documents():
                yield doc["id"], content_text(store.load(doc["id"]).state)
        finally:
            store.close()


def _entry_points() -> Iterable[Any]:
    from importlib.metadata import entry_points

    return entry_points(group=ENTRY_POINT_GROUP)


def load_extensions(enabled: Sequence[str] | None = None) -> list[Extension]:
    """The installed extensions, in entry-point name order; ``enabled`` (None: all) filters them.

    An extension whose package or dependencies are missing is skipped with a log line: the hub
    serves documents without any of them.
    """
    selected = enabled if enabled is not None else _enabled_from_env()
    out = []
    for ep in sorted(_entry_points(), key=lambda ep: ep.name):
        if selected is not None and ep.name not in selected:
            continue
        try:
            ext = ep.load()
        except ImportError as exc:
            log.info("extension %s not loaded: %s", ep.name, exc)
            continue
        out.append(ext() if isinstance(ext, type) else ext)
    return out


def _enabled_from_env() -> list[str] | None:
    raw = os.environ.get("TINYMORPH_EXTENSIONS")
    return None if raw is None else [n.strip() for n in raw.split(",") if n.strip()]


def hook(ext: Extension, name: str) -> Callable[..., Any] | None:
    """An extension's hook, or None when it does not define one (every hook is optional)."""
    return getattr(ext, name, None)
