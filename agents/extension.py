"""The agents extension (entry point ``tinymorph.extensions: agents``): its routes, its tables'
migrations, ``tinymorph worker``, and the ``AgentService`` the hub process runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from starlette.routing import BaseRoute

from collab.extensions import ExtensionContext, Subscription

__all__ = ["AgentsExtension", "extension"]


class AgentsExtension:
    name = "agents"
    migrations: Path | None = Path(__file__).parent / "migrations"

    def commands(self, subparsers: Any, context: Callable[[], ExtensionContext]) -> None:
        from .cli import register
        from .voice_eval import register as register_voice
        from .writing_eval import register as register_eval

        register(subparsers)
        register_eval(subparsers)
        register_voice(subparsers)

    def routes(self, context: ExtensionContext) -> Sequence[BaseRoute]:
        from .routes import routes
        from .vectors import routes as vector_routes

        return [*routes, *vector_routes]

    async def startup(self, context: ExtensionContext) -> None:
        from .service import AgentService

        context.state.agents = service = AgentService(context.hub)
        await service.start()

    def subscriptions(self, context: ExtensionContext) -> Iterable[Subscription]:
        return context.state.agents.subscriptions()

    async def shutdown(self, context: ExtensionContext) -> None:
        service = getattr(context.state, "agents", None)
        if service is not None:
            await service.stop()


extension = AgentsExtension()
