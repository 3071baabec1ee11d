"""Who decided on a suggestion: the person's half of "attributed to both".

The agent's run wrote the suggestion (its entry carries ``agent``, ``agent_id`` and ``run_id``; its
log entries carry the run's token meta). When a person accepts or rejects it, their client applies
the edit and sets ``status`` — logged as theirs. The hub then stamps ``decided_by`` (and
``accepted_by`` on acceptance) into the entry, so the suggestion itself names both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycrdt import Map

from collab.events import Event

from .participant import SUGGESTIONS
from .requests import plain, set_fields, system_edit

if TYPE_CHECKING:
    from .service import AgentService

__all__ = ["ReviewRecorder"]


class ReviewRecorder:
    def __init__(self, service: "AgentService") -> None:
        self.hub = service.hub

    async def on_update(self, event: Event) -> None:
        """(Subscribed with ``human_edit_of_open_room_with(hub, SUGGESTIONS)``.)"""
        room = self.hub.rooms.get(event.doc_id) if self.hub.rooms else None
        if room is None:  # evicted since
            return
        suggestions = room.map(SUGGESTIONS)
        who = {"user_id": event.data.get("author_id"), "name": event.data.get("author_name")}
        stamps = {}
        for key in list(suggestions.keys()):
            entry = plain(suggestions.get(key))
            if isinstance(entry, dict) and entry.get("status") in ("accepted", "rejected") and not entry.get("decided_by"):
                stamps[key] = {"decided_by": who, **({"accepted_by": who} if entry["status"] == "accepted" else {})}
        if not stamps:
            return

        def edit(doc):
            m = doc.get(SUGGESTIONS, type=Map)
            for key, fields in stamps.items():
                set_fields(m, key, fields)

        await system_edit(self.hub, event.doc_id, edit,
                          {"suggestion_review": sorted(stamps), "reviewed_by": who["user_id"]})
