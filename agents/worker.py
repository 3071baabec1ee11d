"""Workers: the local ones ``tinymorph serve`` starts as child processes, and ``tinymorph worker``.

Why processes and not threads in the server: the model work (agent runs, embeddings) must not
share the hub's interpreter — a model load holds the GIL for seconds, and every keystroke in every
room waits behind it. A child process competes only for a core, which the OS schedules.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from enum import Enum
from pathlib import Path

from celery import Celery

from collab.config import Settings

__all__ = ["WorkerProcesses", "WorkerState", "run_worker", "prune_processed"]

log = logging.getLogger("tinymorph.agents.worker")

#: A message the local broker handed out is kept this long in ``processed/``, then deleted.
PROCESSED_KEEP_S = 3600.0


class WorkerState(Enum):
    STOPPED = "stopped"
    RUNNING = "running"
    STOPPING = "stopping"


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the hub dies, even by SIGKILL (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the hub's stop() still ends them
        pass


def _child_setup(nice: int) -> None:
    """In the child, before exec: die with the hub, and yield the CPU to it (``worker_nice``)."""
    _die_with_parent()
    if nice:
        os.nice(nice)


class WorkerProcesses:
    """``concurrency`` ``tinymorph worker --pool solo`` processes on the hub's settings, started
    and stopped with the hub, at a lower CPU priority (``Settings.worker_nice``). ``check()`` restarts one that died (a crash, the OOM killer; its
    run's lease expires and the run is taken again), at most ``MAX_RESTARTS`` times in all, so a
    worker that cannot start at all is reported instead of restarted forever."""

    MAX_RESTARTS = 5

    def __init__(self, settings: Settings, concurrency: int = 2) -> None:
        self.settings = settings
        self.concurrency = max(1, concurrency)
        self.state = WorkerState.STOPPED
        self.restarts = 0
        self._procs: list[subprocess.Popen] = []

    def _spawn(self, i: int) -> subprocess.Popen:
        env = {**os.environ, **self.settings.environment()}
        cmd = [sys.executable, "-m", "collab", "worker", "--pool", "solo", "--loglevel", "warning",
               "--hostname", f"local{i}-{os.getpid()}@%h", "--", "--without-gossip", "--without-mingle",
               "--without-heartbeat"]
        nice = max(0, min(19, self.settings.worker_nice))
        return subprocess.Popen(cmd, env=env, preexec_fn=lambda: _child_setup(nice))

    def start(self) -> None:
        self._procs = [self._spawn(i) for i in range(self.concurrency)]
        self.state = WorkerState.RUNNING
        log.info("worker processes started: %s", ", ".join(str(p.pid) for p in self._procs))

    def check(self) -> None:
        """Restart the workers that exited while the hub runs (called periodically)."""
        if self.state is not WorkerState.RUNNING:
            return
        for i, proc in enumerate(self._procs):
            code = proc.poll()
            if code is None:
                continue
            if self.restarts >= self.MAX_RESTARTS:
                log.error("worker %d exited with %s; not restarted (%d restarts already): agent runs and "
                          "graph updates wait for a `tinymorph worker`", proc.pid, code, self.restarts)
                self._procs[i] = proc = _Exited(code)
                continue
            self.restarts += 1
            self._procs[i] = self._spawn(i)
            log.warning("worker %d exited with %s; restarted as %d", proc.pid, code, self._procs[i].pid)

    def stop(self, timeout: float = 15) -> None:
        """Warm shutdown (SIGTERM: a running task finishes), then SIGKILL after ``timeout``."""
        if self.state is not WorkerState.RUNNING:
            return
        self.state = WorkerState.STOPPING
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop within %.0fs; killed (a run it held is taken again "
                            "when its lease expires)", proc.pid, timeout)
                proc.kill()
                proc.wait()
        self._procs = []
        self.state = WorkerState.STOPPED

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.poll() is None]


class _Exited:
    """A worker slot given up on: looks like a finished process to ``check`` and ``stop``."""

    pid = 0

    def __init__(self, code: int) -> None:
        self.returncode = code

    def poll(self) -> int:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode


def prune_processed(folder: Path, keep_s: float = PROCESSED_KEEP_S) -> int:
    """Delete the local broker's handed-out messages older than ``keep_s``; how many went."""
    cutoff, removed = time.time() - keep_s, 0
    for path in folder.glob("*.msg") if folder.is_dir() else ():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def run_worker(app: Celery, argv: list[str]) -> int:
    """``celery worker`` with tinymorph's app (and its queue)."""
    app.worker_main(["worker", *argv])
    return 0
