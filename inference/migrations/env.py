"""Alembic environment of the inference tables: runs on the engine passed in
``config.attributes["engine"]`` (or ``sqlalchemy.url``), records its revision in its own version
table, and lets autogenerate see only its own tables, not the hub's next to them."""

from typing import Any

from alembic import context
from sqlalchemy import create_engine

from inference.migrations import VERSION_TABLE
from inference.models import metadata

config = context.config


def include_name(name: str | None, type_: str, _parents: Any) -> bool:
    return type_ != "table" or name in metadata.tables


def run() -> None:
    engine = config.attributes.get("engine") or create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, include_name=include_name,
                          version_table=VERSION_TABLE, render_as_batch=True)
        context.run_migrations()


run()
