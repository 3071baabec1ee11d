"""Group commit for the update log: commit first, broadcast after, many updates per transaction.

Rooms hand log entries to :meth:`Journal.append` and carry on reading their sockets; one writer
task takes everything queued, commits it in a single transaction, then calls ``on_commit`` with
the batch in order. While one batch is committing the next one accumulates, so under load each
commit covers hundreds of updates. ``interval_s`` spaces commits out: an update that arrives
after a quiet spell is committed at once, one that arrives sooner than ``interval_s`` after the
last commit began waits for the rest of it, sharing a transaction with whatever else comes (a
lively room's keystrokes: a commit per keystroke is a third of the hub's CPU per update, and
the wait is never more than the interval). Small batches on SQLite without fsync commit on the
event loop, which costs less than the hop to a worker thread; the rest go to a thread. With no
interval and the writer task idle, that inline commit runs from a callback at the end of the
loop turn that appended (everything appended in that turn shares it), not after waking the
task: one scheduling step less per keystroke. Neither SQLAlchemy nor the drivers offer this,
hence this module.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from .store import LogEntry, Store

__all__ = ["Journal"]

log = logging.getLogger("tinymorph.journal")

Callback = Callable[[list[LogEntry]], None]
FailCallback = Callable[[list[LogEntry], BaseException], None]


class Journal:
    RETRY_DELAYS = (0.05, 0.25, 1.0)
    #: Batches up to this size are committed on the event loop when the store allows it.
    INLINE_MAX = 32

    def __init__(
        self,
        store: Store,
        on_commit: Callback,
        on_fail: FailCallback,
        *,
        interval_s: float = 0.0,
        max_batch: int = 2000,
        max_pending: int = 20000,
    ) -> None:
        self.store = store
        self.on_commit = on_commit
        self.on_fail = on_fail
        self.interval_s = interval_s
        self._last_commit = float("-inf")
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._queue: list[LogEntry] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._space = asyncio.Event()
        self._space.set()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: A `_commit_soon` callback is scheduled; the writer task is between wake-up and idle.
        self._soon = False
        self._busy = False
        self.committed = 0
        self.batches = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="journal")

    def append(self, entry: LogEntry) -> None:
        self._queue.append(entry)
        self._idle.clear()
        if len(self._queue) >= self.max_pending:
            self._space.clear()
        if not self._soon:
            self._soon = True
            self._loop.call_soon(self._commit_soon)

    @property
    def has_space(self) -> bool:
        return self._space.is_set()

    def _commit_soon(self) -> None:
        """End of the loop turn that appended: commit it all here if that is cheap, else wake the
        writer task (it is busy, batches are spaced, the batch is large or the store is remote)."""
        self._soon = False
        queue = self._queue
        if self._busy or self.interval_s or not self._can_inline(queue):
            if queue:
                self._wakeup.set()
            return
        self._queue = []
        self._space.set()
        if not self._append_inline(queue):  # the writer task takes it, still first in line
            self._queue[:0] = queue
            if len(self._queue) >= self.max_pending:
                self._space.clear()
            self._wakeup.set()
            return
        if not self._queue:
            self._idle.set()

    async def wait_for_space(self) -> None:
        """Backpressure: a reader pauses here while the database is far behind."""
        await self._space.wait()

    async def drain(self) -> None:
        """Return once everything appended so far is committed (or has failed)."""
        await self._idle.wait()

    async def stop(self) -> None:
        await self.drain()
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            self._busy = False
            await self._wakeup.wait()
            self._busy = True
            if self.interval_s and len(self._queue) < self.max_batch:
                wait = self._last_commit + self.interval_s - asyncio.get_running_loop().time()
                if wait > 0:
                    await asyncio.sleep(wait)
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            if not self._queue:
                self._wakeup.clear()
            if len(self._queue) < self.max_pending:
                self._space.set()
            if batch:
                self._last_commit = asyncio.get_running_loop().time()
                await self._commit(batch)
            if not self._queue:
                self._idle.set()

    def _can_inline(self, batch: list[LogEntry]) -> bool:
        return 0 < len(batch) <= self.INLINE_MAX and self.store.can_append_inline

    def _append_inline(self, batch: list[LogEntry]) -> bool:
        """Commit a small batch on the event loop, where the store allows it; False if not done."""
        if not self._can_inline(batch):
            return False
        try:
            self.store.append(batch, inline=True)
        except Exception as exc:  # locked or failing: the threaded path retries
            log.debug("inline commit of %d updates fell back to a thread: %s", len(batch), exc)
            return False
        self._committed(batch)
        return True

    async def _commit(self, batch: list[LogEntry]) -> None:
        if self._append_inline(batch):
            return
        for attempt, delay in enumerate((*self.RETRY_DELAYS, None)):
            try:
                await asyncio.to_thread(self.store.append, batch)
            except Exception as exc:
                if delay is None:
                    log.error("dropping %d uncommitted updates after %d attempts: %s", len(batch), attempt + 1, exc)
                    self._safely(self.on_fail, batch, exc)
                    return
                log.warning("commit failed (attempt %d), retrying in %.2fs: %s", attempt + 1, delay, exc)
                await asyncio.sleep(delay)
            else:
                return self._committed(batch)

    def _committed(self, batch: list[LogEntry]) -> None:
        self.committed += len(batch)
        self.batches += 1
        self._safely(self.on_commit, batch)

    @staticmethod
    def _safely(fn: Callable, *args) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("journal callback failed")
