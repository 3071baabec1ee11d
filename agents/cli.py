"""``tinymorph worker``: a Celery worker for the agents (a thin wrapper over ``celery worker``)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _worker(args: argparse.Namespace) -> int:
    from collab.config import Settings

    from .celery_app import create_celery
    from .worker import run_worker

    # With no broker URL this worker shares the local (filesystem) broker of the data directory:
    # a `tinymorph serve` on the same machine and data dir feeds it.
    settings = Settings.load(config_file=args.config, db=args.db, broker_url=args.broker)
    argv = ["--queues", settings.agent_queue, "--loglevel", args.loglevel, "--task-events", "--pool", args.pool]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    extra = list(args.celery_args or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return run_worker(create_celery(settings), argv + extra)


def register(subparsers) -> None:
    p = subparsers.add_parser("worker", help="run a Celery worker for agent runs and embeddings")
    p.add_argument("--broker", help="broker URL (default: TINYMORPH_BROKER_URL, else the data dir's local broker)")
    p.add_argument("--db", help="SQLAlchemy URL of the hub's database")
    p.add_argument("--config", type=__import__("pathlib").Path)
    p.add_argument("--concurrency", type=int, default=0)
    p.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    p.add_argument("--hostname", help="worker node name (celery -n)")
    p.add_argument("--loglevel", default="info")
    p.add_argument("celery_args", nargs=argparse.REMAINDER, help="more `celery worker` options after --")
    p.set_defaults(func=_worker)
