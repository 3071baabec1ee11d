"""Shared fixtures: real hub processes, real PostgreSQL and Redis.

With ``CI=true`` a missing service fails the test that needs it; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import uuid

import pytest

from collab.testing import HubProcess

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("TINYMORPH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TINYMORPH_TEST_REDIS", "redis://127.0.0.1:6379/15")


def need_service(name: str, exc: BaseException) -> None:
    msg = f"{name} is not reachable: {exc}"
    if IN_CI:
        pytest.fail(f"{msg} (required when CI=true)")
    pytest.skip(msg)


# The embedding graph loads a model after every hub's first edit; only its own tests want that.
NO_GRAPH = {"TINYMORPH_GRAPH_ENABLED": "false"}


@pytest.fixture
def hub(tmp_path):
    """A hub in open auth mode on SQLite in a temp data dir."""
    proc = HubProcess(tmp_path / "hub", env=NO_GRAPH).start()
    yield proc
    proc.stop()


@pytest.fixture
def hub_tokens(tmp_path):
    """A hub in tokens mode; ``hub_tokens.user_token`` may create documents."""
    proc = HubProcess(tmp_path / "hub", auth_mode="tokens", env=NO_GRAPH)
    proc.start()
    proc.user_token = proc.cli_token("alice", "Alice")
    yield proc
    proc.stop()


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"tm_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no PostgreSQL"
        admin.dispose()
        need_service("PostgreSQL at 127.0.0.1:5432", exc)
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_url():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        need_service("Redis at 127.0.0.1:6379", exc)
    finally:
        client.close()
    return REDIS_URL
