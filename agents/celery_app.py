"""The Celery application, configured from tinymorph's settings.

Embedded (the default for ``make serve``): the in-memory broker and result backend, consumed by a
worker thread inside the server process — no external service. Production: Redis
(``TINYMORPH_BROKER_URL=redis://127.0.0.1:6379/0``) and any number of ``tinymorph worker``
processes. ``celery -A agents.celery_app worker`` works too (and Flower, with task events on).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from collab.config import Settings

__all__ = ["create_celery", "is_embedded_broker"]


def is_embedded_broker(settings: Settings) -> bool:
    return (settings.broker_url or "memory://").startswith("memory://")


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.load()
    broker = settings.broker_url or "memory://"
    backend = settings.result_backend or ("cache+memory://" if is_embedded_broker(settings) else broker)
    app = Celery("tinymorph", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.agent_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a long run must not hold queued runs hostage
        task_track_started=True,
        task_send_sent_event=True,  # task events, so Flower shows the runs
        worker_send_task_events=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=24 * 3600,
        broker_connection_retry_on_startup=True,
        # Redis hands an unacknowledged message (its worker was SIGKILLed) to another worker after
        # this long. A run that is still alive then is protected by its lease (see runs.py).
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout_s},
        result_backend_transport_options={"visibility_timeout": settings.broker_visibility_timeout_s},
        worker_hijack_root_logger=False,
    )
    app.tinymorph_settings = settings  # type: ignore[attr-defined]
    from .tasks import register

    register(app)

    return app


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    """``celery -A agents.celery_app`` looks for ``app``: built from the environment on first use."""
    global _app
    if name == "app":
        if _app is None:
            _app = create_celery()
        return _app
    raise AttributeError(name)
