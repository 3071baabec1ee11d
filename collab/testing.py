"""Run a real hub in a child process, and replay editing traces: for tests and benchmarks.

A real process (not an in-process TestClient) because the things worth testing here — SIGTERM,
restarts, several clients over real sockets — only exist with one.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["HubProcess", "free_port", "load_trace", "apply_patches", "TRACES_DIR"]

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HubProcess:
    def __init__(self, data_dir: Path, *, db: str | None = None, auth_mode: str = "open",
                 env: dict[str, str] | None = None, log_level: str = "warning",
                 launcher: list[str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.db = db
        self.auth_mode = auth_mode
        self.extra_env = env or {}
        self.log_level = log_level
        #: What runs ``tinymorph``'s CLI: ``python -m collab`` unless a test wraps it.
        self.launcher = launcher or [sys.executable, "-m", "collab"]
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / "hub.log"
        self.owner_tokens: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 30) -> "HubProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TINYMORPH_DATA_DIR": str(self.data_dir), **self.extra_env}
        cmd = [*self.launcher, "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--auth-mode", self.auth_mode, "--log-level", self.log_level]
        if self.db:
            cmd += ["--db", self.db]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if json.load(r)["status"] == "running":
                        return self
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"hub did not start in {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        self._log.close()
        return code

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

    def cpu_seconds(self) -> float:
        """utime + stime of the server process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> "HubProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
