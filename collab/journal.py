"""Group commit for the update log: commit first, broadcast after, many updates per transaction.

Rooms hand log entries to :meth:`Journal.append` and carry on reading their sockets; the batch
is committed in one transaction, then ``on_commit`` is called with it in order. Two things put
many updates in one transaction:

- **Natural grouping.** Everything appended in one loop turn, or while a commit is running,
  shares the next commit (a burst: hundreds of updates per commit).
- **Commit delay** (``delay_s``, ``group_size``; MySQL's ``binlog_group_commit_sync_delay`` and
  ``..._no_delay_count``). While updates stream in (this one arrived less than ``delay_s`` after
  the previous one, in any room: they all share the log) an update waits until ``group_size``
  updates are waiting, or until the oldest has waited ``delay_s``, whichever is first; then they
  all commit together, in the loop turn of the arrival that completed the group (no wake-up of
  its own). An update after a quiet spell commits at once, so a lone typist never waits. Why: on
  the paced bench a commit per keystroke is a third of the hub's CPU (SQLite's commit path runs
  cold after every idle wake-up); in a room of 8 people typing, a group of 4 costs remote peers
  at most three keystroke gaps.

Small batches on SQLite without fsync commit on the event loop, from a callback at the end of
the loop turn (cheaper than a hop to a worker thread or a task wake-up); large batches, remote
stores and retries go to a writer task that commits in a thread. Neither SQLAlchemy nor the
drivers offer this, hence this module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from .exceptions import recoverable
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
        delay_s: float = 0.0,
        group_size: int = 1,
        max_batch: int = 2000,
        max_pending: int = 20000,
        metrics: Any = None,
    ) -> None:
        self.store = store
        #: Told each commit's size and duration (``metrics.HubMetrics.committed``), if given.
        self.metrics = metrics
        self.on_commit = on_commit
        self.on_fail = on_fail
        self.delay_s = delay_s
        self.group_size = max(1, group_size)
        self._last_append = float("-inf")
        #: The timer that commits held updates once the oldest has waited ``delay_s``.
        self._held: asyncio.TimerHandle | None = None
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._queue: list[LogEntry] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._space = asyncio.Event()
        self._space.set()
        #: The longest the queue got while it was full (reported when it has room again).
        self._peak = 0
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
            self._mind_space()
        now = self._loop.time()
        streaming = now - self._last_append < self.delay_s
        self._last_append = now
        if not streaming or len(self._queue) >= self.group_size:
            self._schedule()
        elif self._held is None and not self._soon:  # the first to wait: it waits delay_s at most
            self._held = self._loop.call_at(now + self.delay_s, self._release)

    def _schedule(self) -> None:
        """Commit everything queued at the end of this loop turn."""
        if self._held is not None:
            self._held.cancel()
            self._held = None
        if not self._soon:
            self._soon = True
            self._loop.call_soon(self._commit_soon)

    def _release(self) -> None:
        """The oldest held update has waited ``delay_s``: commit what is waiting now."""
        self._held = None
        if not self._soon:  # else the callback already scheduled for this turn takes them
            self._commit_soon()

    @property
    def depth(self) -> int:
        """Updates waiting for a commit (not those being committed now)."""
        return len(self._queue)

    @property
    def has_space(self) -> bool:
        return self._space.is_set()

    def _commit_soon(self) -> None:
        """End of the loop turn that appended: commit it all here if that is cheap, else wake the
        writer task (it is busy, the batch is large or the store is remote)."""
        self._soon = False
        queue = self._queue
        if self._busy or not self._can_inline(queue):
            if queue:
                self._wakeup.set()
            return
        self._queue = []
        self._mind_space()
        if not self._append_inline(queue):  # the writer task takes it, still first in line
            self._queue[:0] = queue
            self._mind_space()
            self._wakeup.set()
            return
        if not self._queue:
            self._idle.set()

    def _mind_space(self) -> None:
        """Backpressure on or off, by the queue's length; said in the log, as it means the
        database is far behind and every socket has stopped reading."""
        waiting = len(self._queue)
        if waiting >= self.max_pending:
            if self._space.is_set():
                self._space.clear()
                log.warning("%d updates wait for the database: sockets pause reading", waiting)
            self._peak = max(self._peak, waiting)
        elif not self._space.is_set():
            self._space.set()
            log.warning("the database caught up (at most %d updates waited): sockets read again", self._peak)
            self._peak = 0

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
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            if not self._queue:
                self._wakeup.clear()
            self._mind_space()
            if batch:
                await self._commit(batch)
            if not self._queue:
                self._idle.set()

    def _can_inline(self, batch: list[LogEntry]) -> bool:
        return 0 < len(batch) <= self.INLINE_MAX and self.store.can_append_inline

    def _append_inline(self, batch: list[LogEntry]) -> bool:
        """Commit a small batch on the event loop, where the store allows it; False if not done."""
        if not self._can_inline(batch):
            return False
        started = time.perf_counter()
        try:
            self.store.append(batch, inline=True)
        except Exception as exc:  # locked or failing: the threaded path retries
            log.debug("inline commit of %d updates fell back to a thread: %s", len(batch), exc)
            return False
        self._committed(batch, started)
        return True

    async def _commit(self, batch: list[LogEntry]) -> None:
        if self._append_inline(batch):
            return
        for attempt, delay in enumerate((*self.RETRY_DELAYS, None)):
            started = time.perf_counter()
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
                return self._committed(batch, started)

    def _committed(self, batch: list[LogEntry], started: float) -> None:
        self.committed += len(batch)
        self.batches += 1
        if self.metrics is not None:
            self.metrics.committed(len(batch), time.perf_counter() - started)
        self._safely(self.on_commit, batch)

    @staticmethod
    def _safely(fn: Callable, *args) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            if not recoverable(exc):
                raise
            log.exception("journal callback failed")
