"""Drive the real Yjs clients in tests/js/ from pytest.

Each JS client is a node process (tests/js/client.mjs) speaking JSON lines: commands go in on
stdin, events come out on stdout. A reader thread folds the events into the client's latest known
state, and `wait_for` blocks on a condition variable until a predicate over that state holds (or
a generous timeout passes) — no sleeps, so a loaded 2-core machine only makes tests slower.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

JS_DIR = Path(__file__).resolve().parent / "js"
CLIENT = JS_DIR / "client.mjs"
# Packages the scripts import; installed by `make test` (npm ci in tests/js).
REQUIRED_PACKAGES = ("yjs", "y-websocket", "ws", "lib0")
DEFAULT_TIMEOUT = 30.0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def node_or_skip() -> str:
    """Path of node, with the npm packages installed; skip when missing (fail when CI=true)."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("the `node` executable")
    for pkg in REQUIRED_PACKAGES:
        if not (JS_DIR / "node_modules" / pkg / "package.json").is_file():
            missing.append(f"npm package {pkg!r} (run `make js-deps`)")
    if missing:
        msg = "JavaScript interop needs " + ", ".join(missing)
        if in_ci():
            pytest.fail(msg + " — required when CI=true")
        pytest.skip(msg)
    return node


def presence_names(states: dict) -> set[str]:
    """Display names in a map of awareness states ({client_id: state}); empty states skipped."""
    names = set()
    for st in states.values():
        if not isinstance(st, dict):
            continue
        user = st.get("user")
        if isinstance(user, dict) and isinstance(user.get("name"), str):
            names.add(user["name"])
        elif isinstance(st.get("name"), str):
            names.add(st["name"])
    return names


class JsClient:
    """One node process running a stock y-websocket WebsocketProvider on the `content` Y.Text."""

    def __init__(self, ws_url: str, doc_id: str, *, token: str | None = None, name: str | None = None,
                 trace: bool = False) -> None:
        node = node_or_skip()
        cmd = [node, str(CLIENT), "--url", ws_url, "--doc", doc_id]
        if token:
            cmd += ["--token", token]
        if name:
            cmd += ["--name", name]
        if trace:
            cmd += ["--trace"]
        self.name = name
        self.events: list[dict] = []
        self.text: str | None = None  # None until the first text/synced event
        self.states: dict = {}
        self.synced = False
        self.client_id: int | None = None
        self._cond = threading.Condition()
        self._stderr: list[str] = []
        self.proc = subprocess.Popen(
            cmd, cwd=JS_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    # -- plumbing ------------------------------------------------------------------------------
    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"ev": "garbage", "line": line}
            with self._cond:
                self.events.append(ev)
                kind = ev.get("ev")
                if kind == "hello":
                    self.client_id = ev["clientID"]
                elif kind in ("text", "snapshot"):
                    self.text = ev["text"]
                elif kind == "synced":
                    self.synced = True
                    self.text = ev["text"]
                elif kind == "awareness":
                    self.states = ev["states"]
                elif kind == "status" and ev["status"] == "disconnected":
                    self.synced = False
                if kind == "snapshot":
                    self.states = ev["states"]
                self._cond.notify_all()
        with self._cond:
            self.events.append({"ev": "exit"})
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self._stderr.append(line)

    def send(self, **cmd) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait_for(self, predicate, what: str, timeout: float = DEFAULT_TIMEOUT):
        """Block until predicate(self) is truthy; fail with `what` and recent events otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(self)
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = self.events[-15:]
                    raise AssertionError(
                        f"JS client {self.name!r}: timed out after {timeout:.0f}s waiting for {what}; "
                        f"text={self.text!r} states={self.states!r} last events={tail!r} "
                        f"stderr={''.join(self._stderr)[-2000:]!r}")
                self._cond.wait(min(left, 0.5))

    def event(self, kind: str) -> dict | None:
        with self._cond:
            return next((e for e in self.events if e.get("ev") == kind), None)

    # -- actions -------------------------------------------------------------------------------
    def wait_synced(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.wait_for(lambda c: c.synced, "initial sync", timeout)

    def insert(self, index: int, text: str) -> None:
        self.send(cmd="insert", index=index, text=text)

    def set_presence(self, state: dict | None) -> None:
        self.send(cmd="presence", state=state)

    def quit(self, timeout: float = 10.0) -> None:
        """Leave politely (provider.destroy()) and wait for the process to end."""
        if self.proc.poll() is None:
            try:
                self.send(cmd="quit")
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """Vanish without a goodbye (SIGKILL): only the server can clear our presence."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


class JsClients:
    """Start JS clients and make sure every one of them is gone when the test ends."""

    def __init__(self) -> None:
        self.clients: list[JsClient] = []

    def __call__(self, *args, **kwargs) -> JsClient:
        c = JsClient(*args, **kwargs)
        self.clients.append(c)
        return c

    def close_all(self) -> None:
        for c in self.clients:
            c.close()
