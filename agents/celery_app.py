"""The Celery application, configured from tinymorph's settings.

Local (the default for ``make serve``): kombu's filesystem broker and Celery's file result
backend under ``<data_dir>/celery/``, consumed by worker processes that ``tinymorph serve`` starts
(or ``tinymorph worker`` on the same machine) — no external service, and no model in the hub
process. Production: Redis (``TINYMORPH_BROKER_URL=redis://127.0.0.1:6379/0``) and any number of
``tinymorph worker`` processes. ``celery -A agents.celery_app worker`` works too (and Flower).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery

from collab.config import Settings
from collab.exceptions import ConfigError

__all__ = ["create_celery", "is_local_broker", "local_broker_dir"]

#: How often an idle worker looks for a message in the local broker's folder (seconds): a task
#: waits half of it on average; every look wakes the worker, and at 10/s per worker those wake-ups
#: cost the hub process (on the same cores) several per cent of its CPU per keystroke (bench.hub).
LOCAL_POLL_S = 0.5


def is_local_broker(settings: Settings) -> bool:
    return not settings.broker_url or settings.broker_url.startswith("filesystem://")


def local_broker_dir(settings: Settings) -> Path:
    return settings.data_dir / "celery"


def _local_broker(settings: Settings) -> tuple[str, dict[str, Any], str]:
    """Broker URL, transport options and result backend of the local (filesystem) broker. Read
    messages are renamed into ``processed/`` on the same filesystem (a rename is atomic, so two
    workers never take one message); ``worker.prune_processed`` deletes them later."""
    root = local_broker_dir(settings)
    folders = {"queue": root / "queue", "processed": root / "processed", "control": root / "control",
               "results": root / "results"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    options = {"data_folder_in": str(folders["queue"]), "data_folder_out": str(folders["queue"]),
               "store_processed": True, "processed_folder": str(folders["processed"]),
               "control_folder": str(folders["control"]), "polling_interval": LOCAL_POLL_S}
    return "filesystem://", options, folders["results"].as_uri()


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.load()
    if settings.broker_url.startswith("memory://"):
        raise ConfigError("the in-memory broker cannot reach worker processes; leave broker_url empty "
                          "for the local (filesystem) broker, or use redis://")
    options: dict[str, Any] = {"visibility_timeout": settings.broker_visibility_timeout_s}
    if is_local_broker(settings):
        broker, local_options, local_backend = _local_broker(settings)
        options |= local_options
    else:
        broker, local_backend = settings.broker_url, settings.broker_url
    backend = settings.result_backend or local_backend
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
        broker_transport_options=options,
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
