"""The inference extension of the hub (entry point ``tinymorph.extensions: inference``): ``/v1``,
``/api/sae``, its tables' migrations and the ``inference``/``sae``/``eval`` commands.

It implements the hub's extension interface structurally (plain attributes and methods): the
inference layer imports nothing of the hub. What it reads from the context it is given —
``data_dir``, ``database_url``, ``documents``, ``state`` — are plain values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .config import InferenceConfig
from .migrations import MIGRATIONS

__all__ = ["InferenceExtension", "extension", "config_of"]


def config_of(context: Any) -> InferenceConfig:
    """The inference settings a hub context carries."""
    limit = getattr(getattr(context, "settings", None), "max_body_bytes", None)
    return InferenceConfig(data_dir=context.data_dir, database_url=context.database_url,
                           documents=context.documents, **({"max_body_bytes": limit} if limit else {}))


class InferenceExtension:
    name = "inference"
    migrations: Path | None = MIGRATIONS

    def commands(self, subparsers: Any, context: Callable[[], Any]) -> None:
        from .cli import register

        register(subparsers, config=lambda: config_of(context()))

    def routes(self, context: Any) -> list[Any]:
        """One ``Inference`` (it loads models lazily) shared by ``/v1`` and ``/api/sae``."""
        from starlette.routing import Mount

        from .registry import Inference
        from .sae.api import routes as sae_routes
        from .server import create_app

        context.state.inference = inference = Inference(config_of(context))
        # The hub that mounts these decides who may call them (tokens mode: a valid token).
        protect = getattr(context, "protect", lambda app: app)
        protect_routes = getattr(context, "protect_routes", lambda routes: list(routes))
        return [Mount("/v1", app=protect(create_app(inference))), *protect_routes(list(sae_routes))]


extension = InferenceExtension()
