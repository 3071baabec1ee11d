"""Run a real hub in a child process, and replay editing traces: for tests and benchmarks.

A real process (not an in-process TestClient) because the things worth testing here — SIGTERM,
restarts, several clients over real sockets — only exist with one. A hub that logged a traceback,
exited non-zero or had to be killed is a failed test even when every assertion held:
``HubProcess.assert_clean()`` says so (the fixtures in ``tests/conftest.py`` call it), and
``running_hub`` does the same for a hub served inside the test's own event loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["HUB_ONLY", "TRACES_DIR", "HAProxy", "HubProcess", "apply_patches", "free_port", "load_trace", "running_hub"]

#: The hub alone: no Celery worker processes beside it (each costs a warm shutdown of ~3 s when
#: the hub stops) and no embedding graph. For every test that exercises neither.
HUB_ONLY = {"TINYMORPH_WORKER_EMBEDDED": "false", "TINYMORPH_GRAPH_ENABLED": "false"}

#: What in a hub's log means it failed, whatever the test saw.
TRACEBACK = "Traceback (most recent call last)"

#: Real typing histories (the B4 trace and friends), ``../shared/data/editing-traces`` beside
#: the repository unless ``TINYMORPH_TRACES`` says otherwise.
TRACES_DIR = Path(os.environ.get("TINYMORPH_TRACES")
                  or Path(__file__).resolve().parents[2] / "shared" / "data" / "editing-traces")


def load_trace(name: str) -> dict:
    """A trace: ``{"txns": [{"patches": [[pos, n_deleted, inserted], ...], ...}], "endContent"}``."""
    path = TRACES_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"editing trace missing: {path} (../shared must sit beside the "
                                "repository, or set TINYMORPH_TRACES)")
    with gzip.open(path) as f:
        return json.load(f)


def apply_patches(text: Any, patches: list, attrs: dict[str, Any] | None = None) -> None:
    """One trace transaction's patches on a pycrdt ``Text`` (call it inside a transaction). The
    traces are ASCII, so their code-point positions equal pycrdt's UTF-8 ones."""
    for pos, n_del, ins in patches:
        if n_del:
            del text[pos : pos + n_del]
        if ins:
            text.insert(pos, ins, attrs)


def _body(raw: bytes) -> Any:
    """JSON, or the text of a non-JSON answer (Starlette's plain 404), or None when empty."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _die_with_parent_hook() -> Any:
    """A pre-exec hook that makes the hub's process get SIGTERM when the test process dies, even
    by SIGKILL (a killed test run leaves no hub behind; Linux prctl PR_SET_PDEATHSIG), or None
    where there is no such thing (then ``stop()`` alone ends it). libc is loaded here, in the
    parent: the child, forked from a process with threads, only makes the call."""
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Listening:
    """Something serving the hub's routes on 127.0.0.1:``port``."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


class HubProcess(_Listening):
    """``tinymorph serve`` in a child process, on a free port, its output in ``data_dir/hub.log``.

    ``stop()`` returns the exit code; ``assert_clean()`` raises, with the log, when the hub logged
    a traceback, exited non-zero by itself or on SIGTERM, or had to be killed. ``allow_in_log``:
    log text a test provokes on purpose (a traceback it expects) that does not count against it.
    """

    #: Every started hub not yet stopped: whatever outlives its test is reaped at session end.
    live: ClassVar[set[HubProcess]] = set()

    def __init__(self, data_dir: Path, *, db: str | None = None, auth_mode: str = "open",
                 env: dict[str, str] | None = None, log_level: str = "warning",
                 launcher: list[str] | None = None, allow_in_log: Iterable[str] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.db = db
        self.auth_mode = auth_mode
        self.extra_env = env or {}
        self.log_level = log_level
        #: What runs ``tinymorph``'s CLI: ``python -m collab`` unless a test wraps it.
        self.launcher = launcher or [sys.executable, "-m", "collab"]
        self.allow_in_log = tuple(allow_in_log)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / "hub.log"
        self.owner_tokens: dict[str, str] = {}
        #: Exit codes of every stop so far (a hub may be restarted), and what was wrong.
        self.exit_codes: list[int] = []
        self._problems: list[str] = []


    def start(self, timeout: float = 30) -> "HubProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TINYMORPH_DATA_DIR": str(self.data_dir), **self.extra_env}
        cmd = [*self.launcher, "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--auth-mode", self.auth_mode, "--log-level", self.log_level]
        if self.db:
            cmd += ["--db", self.db]
        self._log = open(self.log_path, "ab")
        # PR_SET_PDEATHSIG fires when the thread that forked ends: only tie it to the main thread.
        die = _die_with_parent_hook() if threading.current_thread() is threading.main_thread() else None
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=die)  # noqa: PLW1509 - one prctl call, libc already loaded
        HubProcess.live.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self._reap()
                self._problems.append(f"exited with {code} while starting")
                raise RuntimeError(f"hub exited with {code}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if json.load(r)["status"] == "running":
                        return self
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.05)
        self.proc.kill()
        self._reap()
        self._problems.append(f"did not start in {timeout}s")
        raise RuntimeError(f"hub did not start in {timeout}s (killed):\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Stop the hub with ``sig`` (SIGTERM: a graceful, draining shutdown) and return its exit
        code; 0 when it was not running. Anything but a clean exit is remembered for
        ``assert_clean``: a hub that exited by itself with an error, a non-zero exit after
        SIGTERM or SIGINT, a hub that had to be killed after ``timeout``. (A signal the test
        sends on purpose, e.g. SIGKILL, is not held against it.)"""
        if self.proc is None:
            return self.exit_codes[-1] if self.exit_codes else 0
        if (early := self.proc.poll()) is not None:
            if early != 0:
                self._problems.append(f"exited by itself with {early} before it was stopped")
        else:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self._reap()
            self._problems.append(f"did not exit within {timeout}s of {signal.Signals(sig).name}: killed")
            return self.exit_codes[-1]
        self._reap()
        if early is None and code != 0 and (sig in (signal.SIGTERM, signal.SIGINT) or code != -sig):
            self._problems.append(f"exited with {code} after {signal.Signals(sig).name}")
        return code

    def _reap(self) -> int:
        code = self.proc.wait()
        self.exit_codes.append(code)
        self.proc = None
        self._log.close()
        HubProcess.live.discard(self)
        return code

    def problems(self) -> list[str]:
        """What is wrong with this hub so far (see ``stop``), and a traceback in its log."""
        found = list(self._problems)
        log = self.log()
        for allowed in self.allow_in_log:
            log = log.replace(allowed, "")
        if TRACEBACK in log:
            found.append(f"its log holds {log.count(TRACEBACK)} traceback(s)")
        return found

    def assert_clean(self) -> None:
        """Raise AssertionError, with the log's first traceback and its tail, if ``problems()``."""
        found = self.problems()
        if not found:
            return
        log = self.log()
        at = log.find(TRACEBACK)
        first = f"\n--- first traceback ---\n{log[at : at + 4000]}" if at >= 0 else ""
        raise AssertionError(f"hub on port {self.port} ({self.data_dir}): {'; '.join(found)}{first}"
                             f"\n--- log tail ---\n{log[-3000:]}")

    def check(self) -> "HubProcess":
        """``assert_clean`` while it runs, e.g. after a step that may have crashed something."""
        if self.proc is not None and self.proc.poll() is not None:
            self._problems.append(f"exited by itself with {self.proc.returncode}")
            self._reap()
        self.assert_clean()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        if token:
            req.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, _body(r.read())
        except urllib.error.HTTPError as e:
            return e.code, _body(e.read())

    def create_doc(self, title: str = "test", token: str | None = None) -> tuple[str, str]:
        status, body = self.request("POST", "/api/docs", {"title": title}, token)
        if status != 201:
            raise RuntimeError(f"create_doc: {status} {body}")
        self.owner_tokens[body["id"]] = body["owner_token"]
        return body["id"], body["owner_token"]

    def token(self, doc_id: str, role: str, name: str, owner_token: str | None = None, **extra: Any) -> str:
        """A share token; the owner token defaults to the one ``create_doc`` got."""
        owner_token = owner_token or self.owner_tokens[doc_id]
        status, body = self.request("POST", f"/api/docs/{doc_id}/tokens", {"role": role, "name": name, **extra}, owner_token)
        if status != 201:
            raise RuntimeError(f"token: {status} {body}")
        return body["token"]

    def cli_token(self, user: str, name: str, role: str = "user", doc: str | None = None) -> str:
        """Issue a token with the ``tinymorph token`` command against this hub's database."""
        env = {**os.environ, "TINYMORPH_DATA_DIR": str(self.data_dir), **self.extra_env}
        cmd = [sys.executable, "-m", "collab", "token", "--user", user, "--name", name, "--role", role]
        cmd += ["--auth-mode", self.auth_mode] + (["--doc", doc] if doc else []) + (["--db", self.db] if self.db else [])
        return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout.strip()

    def issue_token(self, user: str, name: str, role: str = "user", doc: str | None = None) -> str:
        """What ``cli_token`` gets from ``tinymorph token``, issued in this process (no interpreter
        to start): the same settings as the hub (its data dir, database and environment)."""
        from unittest import mock

        from .auth import Authenticator, Role
        from .config import Settings
        from .store import Store

        with mock.patch.dict(os.environ, {"TINYMORPH_DATA_DIR": str(self.data_dir), **self.extra_env}):
            settings = Settings.load(db=self.db, auth_mode=self.auth_mode)
        store = Store(settings.database_url)
        try:
            store.migrate()
            auth = Authenticator(store, settings.signing_secret(), settings.auth_mode, settings.token_ttl_s)
            token, _token_id = auth.issue(user_id=user, name=name, role=Role(role), doc_id=doc)
        finally:
            store.close()
        return token

    def cpu_seconds(self) -> float:
        """utime + stime of the server process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> "HubProcess":
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop()
        if exc_type is None:
            self.assert_clean()


@contextlib.asynccontextmanager
async def running_hub(data_dir: Path, *, ws: Any = None, start_timeout: float = 30,
                      **settings: Any) -> AsyncIterator[tuple[Any, str]]:
    """A hub served by uvicorn inside the caller's event loop (so a test can subscribe to its
    bus, look at its rooms, or spy on its protocol): yields ``(hub, ws_url)``. Hub only unless
    ``settings`` say otherwise (``worker_embedded``, ``graph_enabled``); ``ws``: uvicorn's
    websocket protocol (default: uvicorn's). An error logged with a traceback while it ran (an
    exception in the app, a failed lifespan) fails the test on the way out."""
    import asyncio

    import uvicorn

    from .app import create_app
    from .config import Settings
    from .hub import Hub

    cfg = Settings(**{"data_dir": data_dir, "port": free_port(), "room_grace_s": 0.2,
                      "worker_embedded": False, "graph_enabled": False, **settings})
    hub = Hub(cfg)
    config = uvicorn.Config(create_app(cfg, hub), port=cfg.port, log_level="warning", ws_per_message_deflate=False,
                            **({"ws": ws} if ws is not None else {}))
    server = uvicorn.Server(config)
    errors = _ErrorRecords()
    logging.getLogger().addHandler(errors)
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("the in-loop hub exited while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the in-loop hub did not start in {start_timeout}s")
            await asyncio.sleep(0.01)
        yield hub, f"ws://127.0.0.1:{cfg.port}/ws"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 30)
        finally:
            logging.getLogger().removeHandler(errors)
    if errors.records:
        raise AssertionError("the in-loop hub logged errors:\n" + "\n".join(errors.records))


class _ErrorRecords(logging.Handler):
    """Collects log records at ERROR and above that carry a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(logging.Formatter().format(record))


HAPROXY_CONFIG = """\
global
    maxconn {maxconn}
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout check 1s
    option redispatch
    retries 3
frontend hubs
    bind {host}:{port}
    default_backend hubs
backend hubs
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr host {host}:{port}
    http-check expect status 200
    default-server check inter {inter_ms}ms fall 2 rise 1
{servers}
"""


class HAProxy(_Listening):
    """Debian's HAProxy in front of hub processes, round-robin, websockets through, each server
    health-checked on ``/healthz`` (a draining or dead hub leaves the rotation). The config is
    written to ``data_dir/haproxy.cfg`` (the same shape as ``deploy/haproxy.cfg``)."""

    BINARY = os.environ.get("TINYMORPH_HAPROXY", "/usr/sbin/haproxy")

    def __init__(self, data_dir: Path, backends: Iterable[int], *, port: int | None = None,
                 inter_ms: int = 300, maxconn: int = 4000) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.backends = list(backends)
        self.inter_ms = inter_ms
        self.maxconn = maxconn
        self.proc: subprocess.Popen | None = None
        self.config_path = self.data_dir / "haproxy.cfg"
        self.log_path = self.data_dir / "haproxy.log"


    def config(self) -> str:
        servers = "\n".join(f"    server hub{i} 127.0.0.1:{p}" for i, p in enumerate(self.backends))
        return HAPROXY_CONFIG.format(host="127.0.0.1", port=self.port, inter_ms=self.inter_ms,
                                     maxconn=self.maxconn, servers=servers)

    def start(self, timeout: float = 15) -> "HAProxy":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        check = subprocess.run([self.BINARY, "-c", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its config:\n{check.stdout}{check.stderr}")
        self._log = open(self.log_path, "ab")
        die = _die_with_parent_hook() if threading.current_thread() is threading.main_thread() else None
        self.proc = subprocess.Popen([self.BINARY, "-db", "-f", str(self.config_path)], stdout=self._log,
                                     stderr=subprocess.STDOUT, preexec_fn=die)  # noqa: PLW1509
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"haproxy did not pass a request in {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> "HAProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
