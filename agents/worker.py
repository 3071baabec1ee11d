"""Workers: the embedded ones (threads inside ``tinymorph serve``) and ``tinymorph worker``."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from celery import Celery

__all__ = ["EmbeddedWorker", "run_worker"]

log = logging.getLogger("tinymorph.agents.worker")


class EmbeddedWorker:
    """``concurrency`` Celery ``WorkController``s with the ``solo`` pool, each on its own thread.

    Why threads and not ``celery worker``: the embedded default must need nothing but the server,
    and the in-memory broker only exists inside one process. Why several solo controllers rather
    than one on Celery's ``threads`` pool: that pool never ran a task embedded this way.
    """

    def __init__(self, app: Celery, concurrency: int = 2) -> None:
        self.app = app
        self.concurrency = max(1, concurrency)
        self._threads: list[threading.Thread] = []

    def start(self, timeout: float = 30) -> None:
        from celery.worker import WorkController

        for i in range(self.concurrency):
            ready = threading.Event()

            class _Controller(WorkController):
                def on_consumer_ready(self, consumer: Any, _ready: threading.Event = ready) -> None:
                    _ready.set()

            worker = _Controller(app=self.app, concurrency=1, pool="solo",
                                 hostname=f"embedded{i}@{socket.gethostname()}", loglevel="WARNING",
                                 without_heartbeat=True, without_mingle=True, without_gossip=True)

            def run(worker: Any = worker) -> None:
                self.app.set_current()  # Celery's current app is per thread
                worker.start()

            thread = threading.Thread(target=run, daemon=True, name=f"celery-embedded-{i}")
            thread.start()
            self._threads.append(thread)
            if not ready.wait(timeout):
                raise RuntimeError("the embedded Celery worker did not start")
        log.info("embedded Celery workers running: %d", self.concurrency)

    def stop(self, timeout: float = 15) -> None:
        if not self._threads:
            return
        from celery.worker import state

        state.should_terminate = 0  # a warm shutdown: running tasks finish
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("an embedded worker is still busy after %.0fs; leaving it (a daemon thread)", timeout)
        state.should_terminate = None
        self._threads = []


def run_worker(app: Celery, argv: list[str]) -> int:
    """``celery worker`` with tinymorph's app (and its queue)."""
    app.worker_main(["worker", *argv])
    return 0
