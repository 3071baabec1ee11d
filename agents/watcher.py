"""The watcher: an agent that proposes a margin note after the writer pauses.

Debounced on ``document.updated``: each human edit restarts a per-document timer; when it fires,
the last paragraph gets a suggest-mode ``margin_note`` run — unless a watcher run on that
document is still going. Off by default (``watcher_enabled``). The run's id comes from the
document and the sequence number of the edit the writer paused after (``runs.request_run_id``),
so one pause is one note even when two hub processes both fire (a lease handed over mid-pause).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from collab.auth import Identity, Role
from collab.events import Event

from .anchors import relative_position
from .runs import request_run_id

if TYPE_CHECKING:
    from .api import AgentService

__all__ = ["Watcher", "last_paragraph"]

log = logging.getLogger("tinymorph.agents.watcher")


def last_paragraph(text: str) -> tuple[int, int] | None:
    """Character range of the last non-blank paragraph, or None."""
    end = len(text.rstrip())
    if end == 0:
        return None
    start = text.rfind("\n\n", 0, end)
    start = 0 if start < 0 else start + 2
    while start < end and text[start].isspace():
        start += 1
    return start, end


class Watcher:
    def __init__(self, service: "AgentService", agent_id: str, debounce_s: float) -> None:
        self.service = service
        self.agent_id = agent_id
        self.debounce_s = debounce_s
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._running: dict[str, str] = {}  # doc id → the watcher's current run
        self._tasks: set[asyncio.Task] = set()

    async def on_update(self, event: Event) -> None:
        if event.data.get("kind") != "human" or not event.data.get("inserted_chars"):
            return
        doc_id = event.doc_id
        if (timer := self._timers.pop(doc_id, None)) is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[doc_id] = loop.call_later(self.debounce_s, self._fire, doc_id, event.data.get("author_id"),
                                               event.data.get("seq"))

    def _fire(self, doc_id: str, author_id: str | None, seq: int | None) -> None:
        self._timers.pop(doc_id, None)
        task = asyncio.ensure_future(self._propose(doc_id, author_id, seq))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _propose(self, doc_id: str, author_id: str | None, seq: int | None = None) -> None:
        if (run_id := self._running.get(doc_id)) is not None:
            row = await asyncio.to_thread(self.service.runs.get, run_id)
            if row["status"] not in ("done", "failed", "cancelled"):
                return
        doc = await self.service.document(doc_id)
        text = str(doc.get("content", type=__import__("pycrdt").Text))
        para = last_paragraph(text)
        if para is None:
            return
        rng = {"from": relative_position(doc, para[0], 0), "to": relative_position(doc, para[1], 0)}
        body = {"agent": self.agent_id, "task": "margin_note", "mode": "suggest", "range": rng}
        try:
            run_id = request_run_id(doc_id, "watcher", {"after_seq": seq}) if seq is not None else None
            row = await self.service.create_run(doc_id, body, Identity(author_id or "watcher", "watcher", Role.EDITOR, doc_id),
                                                run_id=run_id)
        except Exception:  # noqa: BLE001 - a watcher failure is logged, never raised into the hub
            log.warning("watcher: could not start a margin note on %s", doc_id, exc_info=True)
            return
        self._running[doc_id] = row["id"]

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
