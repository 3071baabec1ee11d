"""The schema's history: Alembic for the hub's tables and for each extension's.

Each package that owns tables has its own script directory and its own version table
(``alembic_version`` for the hub, ``alembic_version_<package>`` for an extension), so a package
migrates without knowing the others' revisions, and the hub without knowing the packages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection

from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.engine import Connection, Engine

__all__ = ["MIGRATIONS", "upgrade", "run_migrations", "run_environment"]

#: The hub's own Alembic script directory (version table ``alembic_version``).
MIGRATIONS = Path(__file__).parent / "migrations"


def upgrade(engine: Engine, *extensions: Path) -> None:
    """The hub's tables, then each extension script directory's, to their newest revisions."""
    with engine.begin() as conn:
        _split_legacy_versions(conn)
    for script_dir in (MIGRATIONS, *extensions):
        run_migrations(engine, script_dir)


def run_migrations(engine: Engine, script_dir: Path) -> None:
    """``alembic upgrade heads`` for one script directory, on ``engine``."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_dir))
    cfg.attributes["engine"] = engine
    command.upgrade(cfg, "heads")


def run_environment(context: Any, metadata: MetaData, tables: Collection[str],
                    version_table: str = "alembic_version") -> None:
    """The body of an ``env.py``: migrate ``tables`` of ``metadata`` on the engine ``upgrade``
    passed in (or ``sqlalchemy.url``). Autogenerate sees only ``tables``, not its neighbours'."""
    config = context.config
    engine = config.attributes.get("engine") or create_engine(config.get_main_option("sqlalchemy.url"))

    def include_name(name: str | None, type_: str, _parents: Any) -> bool:
        return type_ != "table" or name in tables

    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, include_name=include_name,
                          version_table=version_table, render_as_batch=True)
        context.run_migrations()


#: Before extensions owned their tables, one chain in ``alembic_version`` held every package's
#: revisions (0001 hub, 0002 graph, 0003 agents, 0004 inference). A database from then is split
#: into the per-package version tables once, so nothing is created twice. (New hub revisions
#: must not reuse these ids.)
_LEGACY = {"0002": {"alembic_version_agents": "0002"},
           "0003": {"alembic_version_agents": "0003"},
           "0004": {"alembic_version_agents": "0003", "alembic_version_inference": "0004"}}


def _split_legacy_versions(conn: Connection) -> None:
    if not inspect(conn).has_table("alembic_version"):
        return
    version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    if version not in _LEGACY:
        return
    for table, revision in _LEGACY[version].items():
        conn.execute(text(f"CREATE TABLE IF NOT EXISTS {table} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
        conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text(f"INSERT INTO {table} (version_num) VALUES (:v)"), {"v": revision})
    conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
