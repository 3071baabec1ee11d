"""The watcher's margin notes are one per pause across hub processes: every process that fires
for the same pause (the same last edit) asks for the same run id, and ``RunStore.create_once``
(tests/test_unit_runs.py) lets one of them create it."""

from __future__ import annotations

import asyncio

from pycrdt import Doc, Text

from agents.watcher import Watcher


class _Service:
    """What the watcher asks of the agent service: the document, and to create a run."""

    def __init__(self) -> None:
        self.asked: list[str | None] = []
        self.doc = Doc()
        self.doc["content"] = Text("First paragraph.\n\nThe writer paused here.")

        self.runs = self  # runs.get: every earlier run is done, so a later pause may ask again

    def get(self, run_id: str) -> dict:
        return {"id": run_id, "status": "done"}

    async def document(self, doc_id: str) -> Doc:
        return self.doc

    async def create_run(self, doc_id, body, requester, run_id=None):
        assert body["task"] == "margin_note" and body["mode"] == "suggest"
        self.asked.append(run_id)
        return {"id": run_id or "fresh", "status": "queued"}


def test_two_processes_firing_for_one_pause_ask_for_one_run():
    service = _Service()
    first, second = Watcher(service, "editor", 0.01), Watcher(service, "editor", 0.01)  # two hub processes

    async def fire() -> None:
        await first._propose("doc", "alice", 41)
        await second._propose("doc", "alice", 41)
        await second._propose("doc", "alice", 57)  # a later pause (a done run would let it through)

    asyncio.run(fire())
    a, b, later = service.asked
    assert a is not None and a == b and later != a
