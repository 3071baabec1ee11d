"""Helpers for the README-promise tests (test_promises_*.py, test_cli.py): a PostgreSQL database
that outlives one test, bounded waits, a ``tinymorph worker`` subprocess, and the CLI.

Everything here drives real parts: real hub processes, the real PostgreSQL and Redis, real
``python -m collab`` commands. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agents_support import await_until, wait

from collab.testing import HUB_ONLY, HubProcess  # noqa: F401 - HUB_ONLY re-exported for the promise tests

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("TINYMORPH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TINYMORPH_TEST_REDIS", "redis://127.0.0.1:6379/15")



def missing_service(name: str, exc: BaseException) -> None:
    """Fail with ``CI=true`` (a required service is down), else skip with the reason."""
    msg = f"{name} is not reachable: {exc}"
    if IN_CI:
        pytest.fail(f"{msg} (required when CI=true)")
    pytest.skip(msg)


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (its SQLAlchemy URL), dropped afterwards; the one
    place tests make one (``conftest.pg_url`` is this as a per-test fixture)."""
    import sqlalchemy as sa

    name = f"tm_promise_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no PostgreSQL"
        admin.dispose()
        missing_service("PostgreSQL at 127.0.0.1:5432", exc)
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def redis_or_skip() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        missing_service("Redis at 127.0.0.1:6379", exc)
    finally:
        client.close()
    return REDIS_URL


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 30, every: float = 0.05) -> Any:
    return wait(predicate, what, timeout, every)


async def until(predicate: Callable[[], Any], what: str, timeout: float = 30, every: float = 0.05) -> Any:
    """``wait_until`` for async tests: the event loop keeps running (clients keep reading)."""
    return await await_until(predicate, what, timeout, every)


async def committed(hub: HubProcess, doc_id: str, seq: int, token: str | None = None, timeout: float = 30) -> dict:
    """Wait until the document's log reaches ``seq`` (``GET /api/docs/{id}``), return the body."""
    def check():
        status, body = hub.request("GET", f"/api/docs/{doc_id}", None, token)
        return body if status == 200 and body["seq"] >= seq else None
    return await until(check, f"{doc_id} to reach seq {seq}", timeout, every=0.02)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``tinymorph ARGS`` (as ``python -m collab``), its output captured."""
    return subprocess.run([sys.executable, "-m", "collab", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


class Worker:
    """A ``tinymorph worker`` subprocess (its own process group, so stopping it takes all of it)."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str = "promise") -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - the worker writes to it until stop()
        cmd = [sys.executable, "-m", "collab", "worker", "--pool", "solo", "--loglevel", "info",
               "--hostname", f"{name}@%h", "--", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def pause(self) -> None:
        """SIGSTOP: it takes nothing from the queue until :meth:`resume`."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.resume()  # a paused worker would not act on SIGTERM
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
