"""The event bus the rest of the system hangs off: agents, the embedding graph, webhooks.

Topics: ``document.updated`` (after commit: doc, ``seq``/``first_seq``, author id, name and kind,
client id, ``inserted`` text (first 200 characters), ``inserted_chars``, ``deleted`` items, meta),
``participant.joined``, ``participant.left``, ``token.revoked``. Handlers are async callables;
each delivery runs in its own task so a slow or failing subscriber never stalls the hub (failures
are logged). ``MemoryBus`` is in-process; ``RedisBus`` publishes through Redis pub/sub so several
hub and worker processes share one stream (each process still delivers to its local handlers, so
subscribers look the same either way).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable

__all__ = ["Event", "EventBus", "MemoryBus", "RedisBus", "create_bus"]

log = logging.getLogger("tinymorph.events")

Handler = Callable[["Event"], Awaitable[None]]
#: A synchronous test run at publish time: an event it rejects costs the subscriber no task.
Filter = Callable[["Event"], bool]


@dataclass(frozen=True, slots=True)
class Event:
    topic: str
    doc_id: str
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Event":
        return cls(**json.loads(raw))


class EventBus:
    """Subscribe by exact topic or ``*`` for all; publish never blocks the caller."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[tuple[Handler, Filter | None]]] = {}
        self._tasks: set[asyncio.Task] = set()

    def subscribe(self, topic: str, handler: Handler, when: Filter | None = None) -> Callable[[], None]:
        """``when`` picks the events worth a delivery; ``document.updated`` comes with every
        keystroke, and a task per event per subscriber is most of what an event costs."""
        entry = (handler, when)
        self._handlers.setdefault(topic, []).append(entry)
        return lambda: self._handlers.get(topic, []).remove(entry)

    def publish(self, event: Event) -> None:
        self._deliver(event)

    def publish_local(self, event: Event) -> None:
        """To this process's subscribers only. Several hub processes each publish
        ``document.updated`` for every entry they apply (their own and the others'), right
        after applying it, so a subscriber reads the room with that entry in it; through Redis
        it would arrive once per committing process, and possibly before the entry does."""
        self._deliver(event)

    def _deliver(self, event: Event) -> None:
        for handler, when in (*self._handlers.get(event.topic, ()), *self._handlers.get("*", ())):
            if when is not None and not self._wanted(when, event):
                continue
            task = asyncio.get_running_loop().create_task(self._run(handler, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _wanted(when: Filter, event: Event) -> bool:
        try:
            return when(event)
        except Exception:  # a broken filter must not break the publisher (the hub's commit path)
            log.exception("event filter %r failed on %s", when, event.topic)
            return False

    @staticmethod
    async def _run(handler: Handler, event: Event) -> None:
        try:
            await handler(event)
        except Exception:
            log.exception("event handler %r failed on %s", handler, event.topic)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        """Let in-flight deliveries finish (bounded) so shutdown does not cut them off."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)


class MemoryBus(EventBus):
    """In-process delivery: the embedded default."""


class RedisBus(EventBus):
    """Events travel through one Redis pub/sub channel; every process delivers what it hears."""

    CHANNEL = "tinymorph:events"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._redis = None
        self._reader: asyncio.Task | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(self.url)
        await self._redis.ping()  # fail at start-up, not on the first publish
        self._reader = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._ready.wait(), timeout=5)

    async def _listen(self) -> None:
        """Subscribe and deliver; when Redis goes away, retry with backoff (0.5 s doubling to
        10 s) and say so, once when it is lost and once when it is back. Events published
        meanwhile are lost to this process: what must not be lost has a periodic check behind
        it (token revocation: ``Hub._watch_tokens``)."""
        backoff = 0.5
        lost = False
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(self.CHANNEL)
                if lost:
                    log.warning("redis event bus reconnected")
                    lost = False
                backoff = 0.5
                self._ready.set()
                async for msg in pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    try:
                        event = Event.from_json(msg["data"])
                    except (ValueError, TypeError):
                        log.warning("dropping malformed event from redis: %r", msg["data"][:200])
                        continue
                    self._deliver(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - connection errors of every kind
                if not lost:
                    log.warning("redis event bus lost (%s); reconnecting", exc)
                    lost = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def publish(self, event: Event) -> None:
        task = asyncio.get_running_loop().create_task(self._publish(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, event: Event) -> None:
        try:
            await self._redis.publish(self.CHANNEL, event.to_json())
        except Exception as exc:  # noqa: BLE001 - Redis down: this process goes on (see _listen)
            log.warning("event %s for %s not published: %s", event.topic, event.doc_id, exc)

    async def stop(self) -> None:
        await super().stop()
        if self._reader:
            self._reader.cancel()
        if self._redis is not None:
            await self._redis.aclose()


def create_bus(spec: str) -> EventBus:
    if spec in ("", "memory"):
        return MemoryBus()
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisBus(spec)
    from .exceptions import ConfigError

    raise ConfigError(f"event_bus must be 'memory' or a redis:// URL, not {spec!r}")
