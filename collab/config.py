"""Settings for every tinymorph process, from flags, ``TINYMORPH_*`` variables or a TOML file.

Precedence (highest first): explicit keyword arguments (the CLI flags), environment variables
``TINYMORPH_<FIELD>``, ``$XDG_DATA_HOME/tinymorph/config.toml``, then the defaults below. One
dataclass rather than a settings framework: the fields are few and the rules above are the whole
of it.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .auth import AuthMode
from .exceptions import ConfigError
from .limits import UpdateLimits

__all__ = ["Settings", "data_dir"]


def data_dir() -> Path:
    """Where tinymorph keeps its database, secret, models and caches (XDG base directory spec)."""
    override = os.environ.get("TINYMORPH_DATA_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tinymorph"


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    #: SQLAlchemy URL; empty means SQLite at ``<data_dir>/tinymorph.db``.
    db: str = ""
    #: ``open``: local single user, everybody edits. ``tokens``: a signed token is required.
    auth_mode: AuthMode = AuthMode.OPEN
    #: HMAC secret for tokens; empty means a random one persisted in ``<data_dir>/secret.key``.
    secret: str = ""
    token_ttl_s: int = 30 * 24 * 3600
    #: How often open sockets' tokens are checked: expired ones closed with 4401, revoked ones
    #: with 4410 (revocation also arrives at once as an event; this backs it up).
    token_check_s: float = 2.0
    #: Largest websocket message accepted, in bytes; larger ones close the socket with 1009.
    max_message_bytes: int = 8 * 1024 * 1024
    #: Group commit (see journal.py): updates that arrive in one loop turn or while a commit runs
    #: share a transaction. While updates stream in (less than ``commit_delay_ms`` apart) an update
    #: also waits until ``commit_group_size`` are waiting or it has waited ``commit_delay_ms``; an
    #: update after a quiet spell commits at once. ``commit_delay_ms = 0``: a commit per update.
    commit_delay_ms: float = 40.0
    commit_group_size: int = 4
    commit_max_batch: int = 2000
    #: Backpressure: every socket stops reading while this many updates wait for the database.
    commit_max_pending: int = 20000
    #: Structural limits on each update and presence message (limits.py), checked before pycrdt
    #: sees it: nesting depth of values, structs per update, client ids per update, bytes of one
    #: string. A message over a limit closes its socket with 4413.
    update_max_depth: int = 64
    update_max_structs: int = 200_000
    update_max_clients: int = 1_000
    update_max_string_bytes: int = 8 * 1024 * 1024
    #: Open mode only (tokens mode has tokens): browser origins besides the hub's own that may call
    #: it, and extra Host names it answers to (comma lists). Anything else is refused, so a web
    #: page the local user visits cannot use their hub (cross-site requests, DNS rebinding).
    allowed_origins: str = ""
    allowed_hosts: str = ""
    #: Per-socket and per-process bounds (see README "Security"): presence/sync requests per second
    #: and their burst (over: 4429), presence client ids per socket (over: 4413), bytes queued for
    #: a socket that does not read (over: closed with 4507), sockets per hub process (over: 1013),
    #: bytes of a REST request body (over: 413), threads replaying history for the review views.
    control_messages_per_s: float = 50.0
    control_messages_burst: int = 500
    awareness_max_clients: int = 8
    max_peer_queue_bytes: int = 32 * 1024 * 1024
    max_connections: int = 2000
    max_body_bytes: int = 1024 * 1024
    history_workers: int = 2
    #: A snapshot (merged state) is written after this many log entries since the last one.
    snapshot_every: int = 500
    #: How long an empty room stays in memory before it is evicted.
    room_grace_s: float = 30.0
    #: Retention policy: delete log entries covered by a snapshot and older than this many days.
    #: 0 keeps the whole history forever (the default; history is what stakeholders review).
    retention_days: float = 0.0
    #: Create a document on first websocket join instead of closing with 4404.
    auto_create_docs: bool = False
    #: ``memory`` (in-process) or a ``redis://`` URL for a bus shared by several processes.
    event_bus: str = "memory"
    #: Several hub processes serving the same documents (README "Running on several machines"):
    #: a ``redis://`` URL whose streams carry committed updates and presence between them; needs
    #: PostgreSQL as ``db``. Empty: this process is the only one (the embedded default).
    cluster_url: str = ""
    #: A hole in a document's sequence (a message Redis lost) is read from the database after this
    #: long; every ``cluster_check_s`` each open room is compared with the log's last position.
    cluster_gap_ms: float = 50.0
    cluster_check_s: float = 2.0
    #: A process's liveness key lives this long: a killed process's clients' presence is removed
    #: from the others within about this time.
    cluster_presence_ttl_s: float = 3.0
    #: Keep each document's text-embedding graph (needs the inference extra for embeddings).
    graph_enabled: bool = True
    #: Rebuild a document's graph this long after its last edit.
    graph_debounce_s: float = 2.0
    #: SQLite ``PRAGMA synchronous``. NORMAL (SQLite's advice for WAL): a committed update
    #: survives any crash of the process; FULL also survives power loss, for ~3x the CPU per
    #: commit (an fsync each). Clients keep their updates and re-send them on reconnect either way.
    sqlite_synchronous: str = "NORMAL"
    #: Celery broker for the agents. Empty: the embedded in-memory broker, served by a worker
    #: inside ``tinymorph serve``. Production: ``redis://127.0.0.1:6379/0`` + ``tinymorph worker``.
    broker_url: str = ""
    #: Celery result backend; empty: in memory when embedded, else the Redis broker's URL.
    result_backend: str = ""
    #: Run a Celery worker thread inside ``tinymorph serve`` (always on with the memory broker).
    #: The Celery queue agent runs go through (separate deployments on one broker use their own).
    agent_queue: str = "tinymorph.agents"
    worker_embedded: bool = True
    worker_concurrency: int = 2
    #: Niceness of the worker processes ``tinymorph serve`` starts (0: the hub's own priority).
    #: Model work is throughput, keystrokes are latency: where the two share cores, the kernel
    #: runs the hub first.
    worker_nice: int = 10
    #: How long an unacknowledged task may stay with a worker before the Redis broker hands it to
    #: another one (a SIGKILLed worker's runs are redelivered after this).
    broker_visibility_timeout_s: float = 120.0
    #: Where workers reach the hub (``http://host:port``); empty: this process's host and port.
    hub_url: str = ""
    #: The watcher agent: proposes margin notes after a human writer pauses this long.
    watcher_enabled: bool = False
    watcher_agent: str = "editor"
    watcher_debounce_s: float = 8.0
    data_dir: Path = field(default_factory=data_dir)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> "Settings":
        """Merge the TOML file, the environment and explicit overrides (None means 'not given')."""
        values: dict[str, Any] = {}
        base_dir = Path(overrides.get("data_dir") or os.environ.get("TINYMORPH_DATA_DIR") or data_dir())
        path = config_file or base_dir / "config.toml"
        if path.exists():
            try:
                values.update(tomllib.loads(path.read_text()))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: {exc}") from exc
        for f in fields(cls):
            env = os.environ.get(f"TINYMORPH_{f.name.upper()}")
            if env is not None:
                values[f.name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**{f.name: _coerce(f, values[f.name]) for f in fields(cls) if f.name in values})

    def __post_init__(self) -> None:
        try:  # flags, files and the environment give a string; anything but open/tokens: ConfigError
            self.auth_mode = AuthMode(self.auth_mode)
        except ValueError:
            raise ConfigError(f"auth_mode must be 'open' or 'tokens', not {self.auth_mode!r}") from None
        if self.sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError(f"sqlite_synchronous: bad value {self.sqlite_synchronous!r}")
        self.data_dir = Path(self.data_dir)

    @property
    def database_url(self) -> str:
        if self.db:
            return self.db
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.data_dir / 'tinymorph.db'}"

    def signing_secret(self) -> str:
        """The token secret; generated once and kept (mode 0600) so tokens survive restarts."""
        if self.secret:
            return self.secret
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        self.secret = path.read_text().strip()
        return self.secret

    def update_limits(self) -> UpdateLimits:
        return UpdateLimits(max_depth=self.update_max_depth, max_structs=self.update_max_structs,
                            max_clients=self.update_max_clients, max_string_bytes=self.update_max_string_bytes)

    def environment(self) -> dict[str, str]:
        """These settings as ``TINYMORPH_*`` variables, for a child process (a worker) that must
        see exactly what this process sees, however it was configured (flags, file, env)."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                value = "true" if value else "false"
            env[f"TINYMORPH_{f.name.upper()}"] = str(value)
        env["TINYMORPH_DB"] = self.database_url
        return env

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    try:
        if kind == "bool" and isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes", "on")
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "Path":
            return Path(value)
    except ValueError as exc:
        raise ConfigError(f"setting {f.name}: cannot read {value!r} as {kind}") from exc
    return value
