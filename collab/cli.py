"""The ``tinymorph`` command: ``serve``, ``token``, ``db``; extensions add their own commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import Settings
from .exceptions import ConfigError
from .extensions import ExtensionContext, hook, load_extensions

__all__ = ["main"]

def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(
        config_file=getattr(args, "config", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        db=getattr(args, "db", None),
        auth_mode=getattr(args, "auth_mode", None),
    )


def _serve(args: argparse.Namespace) -> int:
    from .server import serve

    serve(_settings(args), log_level=args.log_level)
    return 0


def _token(args: argparse.Namespace) -> int:
    from .auth import Authenticator, Role
    from .store import Store

    settings = _settings(args)
    store = Store(settings.database_url)
    store.migrate()
    auth = Authenticator(store, settings.signing_secret(), settings.auth_mode, settings.token_ttl_s)
    role = Role(args.role)
    if role is not Role.USER and not args.doc:
        raise ConfigError("--doc is required for a document role")
    token, token_id = auth.issue(user_id=args.user, name=args.name or args.user, role=role, doc_id=args.doc, ttl_s=args.ttl)
    print(token)
    print(f"token_id={token_id}", file=sys.stderr)
    return 0


def _db(args: argparse.Namespace) -> int:
    from .store import Store

    settings = _settings(args)
    store = Store(settings.database_url)
    try:
        store.migrate(*[ext.migrations for ext in load_extensions() if getattr(ext, "migrations", None)])
    finally:
        store.close()
    print(f"schema up to date: {settings.database_url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinymorph", description="Collaborative writing with steerable AI co-editors.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", help="SQLAlchemy URL (default: SQLite under $XDG_DATA_HOME/tinymorph)")
        p.add_argument("--config", type=Path, help="TOML settings file (default: <data dir>/config.toml)")
        p.add_argument("--auth-mode", choices=["open", "tokens"])

    serve = sub.add_parser("serve", help="run the hub, API and UI")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", default="info")
    common(serve)
    serve.set_defaults(func=_serve)

    token = sub.add_parser("token", help="issue a token (a user token creates documents in tokens mode)")
    token.add_argument("--user", required=True)
    token.add_argument("--name")
    token.add_argument("--role", default="user", choices=["user", "owner", "editor", "viewer", "agent"])
    token.add_argument("--doc")
    token.add_argument("--ttl", type=int)
    common(token)
    token.set_defaults(func=_token)

    db = sub.add_parser("db", help="apply database migrations")
    db.add_argument("action", choices=["upgrade"])
    common(db)
    db.set_defaults(func=_db)

    for ext in load_extensions():
        if commands := hook(ext, "commands"):
            commands(sub, lambda: ExtensionContext(Settings.load()))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ConfigError as exc:
        print(f"tinymorph: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
