"""What the agents extension runs inside the hub process: personas and runs in the hub's
database, the Celery producer and the local worker processes, the ``requests`` map trigger,
review stamps, the watcher, and the embedding graph's scheduler. No model is loaded here: runs,
embeddings and searches are Celery tasks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pycrdt import Doc

from collab.auth import Identity
from collab.exceptions import InvalidRequest, Unavailable

from . import anchors
from .celery_app import create_celery, is_local_broker, local_broker_dir
from .exceptions import InvalidTask
from .personas import PersonaStore, check_known_vectors, normalize_steering
from .prompts import Mode, Task
from .runs import RunStatus, RunStore, new_run_id
from .tasks import GRAPH_TASK, RUN_TASK, SEARCH_TASK

__all__ = ["AgentService"]

log = logging.getLogger("tinymorph.agents.service")

_OPTIONS = {"steering", "max_tokens", "min_tokens", "temperature", "seed"}
#: ``options.seed``: a signed 64-bit integer (the range OpenAI's ``seed`` takes).
SEED_RANGE = (-(2**63), 2**63 - 1)
#: How long the hub waits for a worker to answer a search (the first one loads the model).
SEARCH_TIMEOUT_S = 120.0
GRAPH_TIMEOUT_S = 600.0


class AgentService:
    """Everything agents need inside the hub process: personas and runs in the hub's database, the
    Celery producer (and the local worker processes), the ``requests`` map, review stamps, the
    watcher, the graph scheduler."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.settings = hub.settings
        self.personas = PersonaStore(hub.store.engine, self.settings.database_url)
        self.runs = RunStore(hub.store.engine)
        self.celery = create_celery(self.settings)
        self.workers = None
        self._watchdog: asyncio.Task | None = None
        self.graph_scheduler = None
        self.requests = None
        self.watcher = None

    async def start(self) -> None:
        from .graph import GraphReader, GraphScheduler
        from .requests import RequestMap
        from .reviews import ReviewRecorder
        from .worker import WorkerProcesses, prune_processed

        await asyncio.to_thread(self.personas.ensure_shipped)
        if self.settings.worker_embedded:
            if is_local_broker(self.settings):
                await asyncio.to_thread(prune_processed, local_broker_dir(self.settings) / "processed")
            self.workers = WorkerProcesses(self.settings, self.settings.worker_concurrency)
            await asyncio.to_thread(self.workers.start)
            self._watchdog = asyncio.create_task(self._watch_workers())
        self.graph_reader = GraphReader(self.hub.store.engine)
        if self.settings.graph_enabled:
            self.graph_scheduler = GraphScheduler(self._rebuild_graph, self.hub.bus, self.settings.graph_debounce_s)
        self.requests = RequestMap(self)
        self.reviews = ReviewRecorder(self)
        metrics = getattr(self.hub, "metrics", None)
        if metrics is not None:
            metrics.registry.register(_RunsCollector(self.hub.store.engine))
        if self.settings.watcher_enabled:
            from .watcher import Watcher

            self.watcher = Watcher(self, self.settings.watcher_agent, self.settings.watcher_debounce_s)

    def subscriptions(self) -> list[tuple[str, Any, Any]]:
        """``(topic, handler, filter)`` for the hub's bus (see ``Extension.subscriptions``)."""
        from .participant import SUGGESTIONS
        from .requests import REQUESTS, human_edit_of_open_room_with

        owned = self._owned
        subs = [("document.updated", self.requests.on_update, owned(human_edit_of_open_room_with(self.hub, REQUESTS))),
                ("document.updated", self.reviews.on_update, owned(human_edit_of_open_room_with(self.hub, SUGGESTIONS)))]
        if self.graph_scheduler:
            subs.append(("document.updated", self.graph_scheduler.on_update, owned(None)))
        if self.watcher:
            subs.append(("document.updated", self.watcher.on_update, owned(None)))
        return subs

    def _owned(self, when: Any) -> Any:
        """``when``, and with several hub processes only on the one that does the document's
        background work (``Cluster.owns``): each trigger acts once, whichever processes hold the
        document's peers. Alone, ``when`` as it is."""
        cluster = getattr(self.hub, "cluster", None)
        if cluster is None:
            return when
        if when is None:
            return lambda event: cluster.owns(event.doc_id)
        return lambda event: cluster.owns(event.doc_id) and when(event)

    async def _watch_workers(self, every_s: float = 2.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.workers.check()

    async def stop(self) -> None:
        if self._watchdog:
            self._watchdog.cancel()
        if self.requests:
            await self.requests.stop()
        if self.watcher:
            self.watcher.stop()
        if self.graph_scheduler:
            await self.graph_scheduler.stop()
        if self.workers:
            await asyncio.to_thread(self.workers.stop, 10)

    # -- the embedding graph (the model work is the workers') ------------------------------
    async def _call(self, name: str, args: list[Any], timeout: float, poll_s: float) -> Any:
        """Send a task and wait for its result, off the event loop, in one-second waits so that a
        cancelled caller (the hub shutting down) never leaves a thread blocked for ``timeout``.
        ``poll_s``: how often the result backend is read meanwhile (the hub's CPU, not the task's
        speed: a graph rebuild nobody waits for can be looked at rarely)."""
        from celery.exceptions import TimeoutError as ResultTimeout

        result = await asyncio.to_thread(self.celery.send_task, name, args=args)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                return await asyncio.to_thread(result.get, timeout=1.0, interval=poll_s)
            except ResultTimeout:
                if asyncio.get_running_loop().time() >= deadline:
                    raise Unavailable(f"{name}: no worker answered within {timeout:.0f} s") from None
            except Exception as exc:  # noqa: BLE001 - a broker error, or the task itself failed
                raise Unavailable(f"{name} failed in the worker: {type(exc).__name__}: {exc}") from None

    async def _rebuild_graph(self, doc_id: str) -> dict[str, Any]:
        return await self._call(GRAPH_TASK, [doc_id], GRAPH_TIMEOUT_S, poll_s=0.5)

    async def graph(self, doc_id: str, at: str | None) -> dict[str, Any]:
        """The stored graph at a log position or time (None: the newest)."""
        def work() -> dict[str, Any]:
            seq = self.hub.history.position(doc_id, at)
            return self.graph_reader.graph(doc_id, seq) | {"at": seq}

        return await asyncio.to_thread(work)

    async def search(self, query: str, doc_ids: list[str] | None) -> list[dict[str, Any]]:
        if not self.settings.graph_enabled:
            raise Unavailable("search needs the embedding graph (graph_enabled is false)")
        return await self._call(SEARCH_TASK, [query, doc_ids], SEARCH_TIMEOUT_S, poll_s=0.05)

    # -- runs -----------------------------------------------------------------------------
    async def document(self, doc_id: str) -> Doc:
        """A scratch copy of the document's committed state."""
        state, _seq = await self.hub.document_state(doc_id)
        doc = Doc()
        if state:
            doc.apply_update(state)
        return doc

    async def _doc_with(self, doc_id: str, positions: list, wait_s: float = 1.0) -> Doc:
        """The document, once it holds every item the positions name: a client may ask for a run
        at a character it typed a moment ago, whose update is still on its way to the hub."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            doc = await self.document(doc_id)
            try:
                for pos in positions:
                    anchors.validate(doc, pos)
                return doc
            except anchors.InvalidAnchor:
                if asyncio.get_running_loop().time() >= deadline:
                    return doc  # validate() below names the culprit
            await asyncio.sleep(0.05)

    async def create_run(self, doc_id: str, body: dict[str, Any], requester: Identity,
                         run_id: str | None = None) -> dict[str, Any]:
        """Validate a run request, record it, and queue the Celery task. With ``run_id`` (a
        ``requests`` map entry's, ``runs.request_run_id``) a run that already has it is not made
        twice: its row is returned, and its task queued again only while it is still queued (the
        first creator may have died before queueing it; a duplicate message is harmless, the
        worker's claim lets one attempt write)."""
        if not isinstance(body, dict):
            raise InvalidRequest("a run request must be an object")
        agent_id = body.get("agent")
        if not isinstance(agent_id, str) or not agent_id:
            raise InvalidRequest("'agent' must name an agent (see GET /api/agents)")
        persona = await asyncio.to_thread(self.personas.get, agent_id)
        task = Task.parse(body.get("task", "continue"))
        mode = Mode.parse(body.get("mode"))
        anchor, rng = body.get("anchor"), body.get("range")
        if rng is not None and (not isinstance(rng, dict) or "from" not in rng or "to" not in rng):
            raise anchors.InvalidAnchor("range must be {from, to}, each a Yjs relative position")
        doc = await self._doc_with(doc_id, [p for p in (anchor, *(rng.values() if rng else ())) if p is not None])
        if anchor is not None:
            anchor = anchors.validate(doc, anchor, "anchor")
        if rng is not None:
            rng = {"from": anchors.validate(doc, rng["from"], "range.from"),
                   "to": anchors.validate(doc, rng["to"], "range.to")}
            lo, hi = anchors.resolve(doc, rng["from"]), anchors.resolve(doc, rng["to"])
            if task.needs_range and lo == hi:
                raise InvalidTask(f"task {task.value!r} needs a non-empty range")
        elif task.needs_range:
            raise InvalidTask(f"task {task.value!r} needs a range (the selection)")
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise InvalidRequest("'options' must be an object")
        steering = persona.steering
        if options.get("steering"):
            steering = normalize_steering(options["steering"])
            await asyncio.to_thread(check_known_vectors, steering, self.settings.database_url)
        if "max_tokens" in options and not (_integer(options["max_tokens"]) and 1 <= options["max_tokens"] <= 512):
            raise InvalidRequest("options.max_tokens must be an integer in 1..512")
        if "min_tokens" in options and not (_integer(options["min_tokens"])
                                            and 0 <= options["min_tokens"] <= options.get("max_tokens", 512)):
            raise InvalidRequest("options.min_tokens must be an integer in 0..max_tokens")
        if "temperature" in options and not (_number(options["temperature"]) and 0 <= options["temperature"] <= 2):
            raise InvalidRequest("options.temperature must be a number in 0..2")
        if options.get("seed") is not None and not (_integer(options["seed"])
                                                    and SEED_RANGE[0] <= options["seed"] <= SEED_RANGE[1]):
            raise InvalidRequest("options.seed must be an integer in -2**63..2**63-1")
        params = {"persona": {"id": persona.id, "name": persona.name, "prompt": persona.prompt, "color": persona.color},
                  "model": persona.model, "steering": steering, "anchor": anchor, "range": rng,
                  "options": {k: v for k, v in options.items() if k in _OPTIONS and k != "steering"}}
        row, created = await asyncio.to_thread(
            self.runs.create_once, run_id=run_id or new_run_id(), doc_id=doc_id, agent_id=persona.id,
            task=task.value, mode=mode.value, params=params, requested_by=requester.user_id,
            requested_by_name=requester.name)
        run_id = row["id"]
        if not created and row["status"] != RunStatus.QUEUED.value:
            return row
        try:
            await asyncio.to_thread(self.celery.send_task, RUN_TASK, args=[run_id], task_id=run_id)
        except Exception as exc:  # noqa: BLE001 - the broker is down: say so, and fail the run
            await asyncio.to_thread(self.runs.finish, run_id, RunStatus.FAILED, error=f"broker unavailable: {exc}")
            raise Unavailable(f"cannot queue the run: the broker is unavailable ({exc})") from None
        return row


class _RunsCollector:
    """``tinymorph_agent_runs{status}``: agent runs in the database by status, read at scrape
    time (one GROUP BY on the runs table; every process reports the same shared numbers)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def describe(self) -> list:
        return []

    def collect(self):
        import sqlalchemy as sa
        from prometheus_client.core import GaugeMetricFamily

        from .models import RunRow

        family = GaugeMetricFamily("tinymorph_agent_runs", "Agent runs by status", labels=["status"])
        with self.engine.connect() as conn:
            counts = dict(conn.execute(sa.select(RunRow.status, sa.func.count()).group_by(RunRow.status)).all())
        for status in RunStatus:
            family.add_metric([status.value], counts.get(status.value, 0))
        yield family


def _integer(value: Any) -> bool:
    """A JSON integer: ``True`` is an ``int`` to Python, not to a client."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
