"""Bring a database's inference tables to their newest revision (``alembic upgrade heads`` on
``inference/migrations``), for the vector library and the SAE catalog, which each open one."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .migrations import MIGRATIONS

__all__ = ["migrate"]


def migrate(db: Engine | str) -> None:
    """Idempotent; ``db`` is an engine or a SQLAlchemy URL (a SQLite file's folder is created)."""
    from alembic import command
    from alembic.config import Config

    engine = db if isinstance(db, Engine) else sa.create_engine(db)
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    try:
        command.upgrade(cfg, "heads")
    finally:
        if engine is not db:
            engine.dispose()
