"""Runs requested from inside the document: the ``requests`` Y.Map.

Any Yjs client can ask for a run by writing ``requests[id] = {agent, task, mode, anchor?, range?,
options?}``. The hub (which owns the room) sees it on ``document.updated``, creates the run as the
person whose update wrote it, and writes ``run_id``, ``status`` (and ``error``) back into the
entry as the run moves on — the hub's own edits, logged with author kind ``system``. The run's id
comes from the entry (``runs.request_run_id``), so a request seen twice, on one process or two
(its lease handed over before the id was written back), is still one run.
Updates from agents and from the hub itself are ignored: an agent cannot ask for runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable

from pycrdt import Doc, Map

from collab.auth import Identity, Role
from collab.events import Event
from collab.exceptions import LimitExceeded, TinymorphError
from collab.limits import to_py_within
from collab.updates import edit_copy

from .runs import RunStatus, request_run_id

if TYPE_CHECKING:
    from .service import AgentService

__all__ = ["RequestMap", "REQUESTS", "system_edit", "human_edit_of_open_room_with"]

log = logging.getLogger("tinymorph.agents.requests")

REQUESTS = "requests"
POLL_S = 0.3


async def system_edit(hub: Any, doc_id: str, edit: Callable[[Doc], None], meta: dict[str, Any]) -> int | None:
    """Apply ``edit(doc)`` to a copy of the room's document and submit the resulting update as
    the hub's own (author kind ``system``)."""
    room = await hub.rooms.acquire(doc_id)
    try:
        _seq, state = room.state()
        update = edit_copy(state, edit)
        if update is None:
            return None
        system = Identity("tinymorph", "tinymorph", Role.OWNER, doc_id, None, {}, system=True)
        return room.submit(update, system, meta=meta)
    finally:
        hub.rooms.release(room)


def human_edit_of_open_room_with(hub: Any, name: str):
    """Bus filter: a person's edit to an open document whose ``name`` map has entries; the
    only events the requests and reviews subscribers ever act on (most keystrokes are not)."""

    def when(event: Event) -> bool:
        if event.data.get("kind") != "human":
            return False
        room = hub.rooms.get(event.doc_id) if hub.rooms else None
        return room is not None and room.has_entries(name)

    return when


def plain(value: Any) -> Any:
    """A map entry as Python data, with JSON's integral numbers back as ints (Y.Map gives floats);
    None for shared types nested deeper than any editor makes (read without recursion: a client
    may write these maps, and pycrdt's own ``to_py`` segfaults on such nesting)."""
    try:
        value = to_py_within(value)
    except LimitExceeded:
        return None
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def set_fields(m: Map, key: str, fields: dict[str, Any]) -> None:
    """Update an entry that is either a nested Y.Map or a plain object (replaced whole)."""
    entry = m.get(key)
    if isinstance(entry, Map):
        for k, v in fields.items():
            entry[k] = v
    else:
        m[key] = {**(entry if isinstance(entry, dict) else {}), **fields}


class RequestMap:
    def __init__(self, service: "AgentService") -> None:
        self.service = service
        self.hub = service.hub
        self._seen: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task] = set()

    async def on_update(self, event: Event) -> None:
        """(Subscribed with ``human_edit_of_open_room_with(hub, REQUESTS)``.)"""
        room = self.hub.rooms.get(event.doc_id) if self.hub.rooms else None
        if room is None:  # evicted since
            return
        requests = room.map(REQUESTS)
        for key in list(requests.keys()):
            entry = plain(requests.get(key))
            if (not isinstance(entry, dict) or entry.get("run_id") or entry.get("status") not in (None, "pending")
                    or (event.doc_id, key) in self._seen):
                continue
            self._seen.add((event.doc_id, key))
            requester = Identity(str(event.data.get("author_id")), str(event.data.get("author_name")),
                                 Role.EDITOR, event.doc_id)
            try:
                row = await self.service.create_run(event.doc_id, entry, requester,
                                                    run_id=request_run_id(event.doc_id, key, entry))
            except TinymorphError as exc:
                await self._write(event.doc_id, key, {"status": "failed", "error": str(exc)})
                continue
            await self._write(event.doc_id, key, {"run_id": row["id"], "status": row["status"]})
            task = asyncio.ensure_future(self._mirror(event.doc_id, key, row["id"], row["status"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write(self, doc_id: str, key: str, fields: dict[str, Any]) -> None:
        await system_edit(self.hub, doc_id, lambda d: set_fields(d.get(REQUESTS, type=Map), key, fields),
                          {"agent_request": key, **({"run_id": fields["run_id"]} if "run_id" in fields else {})})

    async def _mirror(self, doc_id: str, key: str, run_id: str, status: str) -> None:
        """Copy the run's status into the request entry until it ends."""
        last = status
        while True:
            await asyncio.sleep(POLL_S)
            try:
                row = await asyncio.to_thread(self.service.runs.get, run_id)
            except Exception:  # noqa: BLE001
                log.warning("request %s: cannot read run %s", key, run_id, exc_info=True)
                continue
            if row["status"] != last:
                last = row["status"]
                fields = {"status": last}
                if row.get("error"):
                    fields["error"] = row["error"]
                await self._write(doc_id, key, fields)
            if RunStatus(last).terminal:
                return

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
