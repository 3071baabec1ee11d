"""``tinymorph worker``: a Celery worker for the agents (a thin wrapper over ``celery worker``)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _worker(args: argparse.Namespace) -> int:
    from collab.config import Settings

    from .celery_app import create_celery, is_embedded_broker
    from .worker import run_worker

    settings = Settings.load(config_file=args.config, db=args.db, broker_url=args.broker)
    if is_embedded_broker(settings):
        from collab.exceptions import ConfigError

        raise ConfigError("tinymorph worker needs a shared broker: set TINYMORPH_BROKER_URL=redis://... "
                          "(the embedded broker lives inside `tinymorph serve`)")
    argv = ["--queues", settings.agent_queue, "--loglevel", args.loglevel, "--task-events", "--pool", args.pool]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    return run_worker(create_celery(settings), argv + list(args.celery_args or []))


def register(subparsers) -> None:
    p = subparsers.add_parser("worker", help="run a Celery worker for the agents (needs a Redis broker)")
    p.add_argument("--broker", help="broker URL (default: TINYMORPH_BROKER_URL)")
    p.add_argument("--db", help="SQLAlchemy URL of the hub's database")
    p.add_argument("--config", type=__import__("pathlib").Path)
    p.add_argument("--concurrency", type=int, default=0)
    p.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    p.add_argument("--hostname", help="worker node name (celery -n)")
    p.add_argument("--loglevel", default="info")
    p.add_argument("celery_args", nargs=argparse.REMAINDER, help="more `celery worker` options after --")
    p.set_defaults(func=_worker)
