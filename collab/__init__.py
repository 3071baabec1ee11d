"""tinymorph's collaboration hub: y-websocket sync, a durable attributed log, tokens, events."""

from .app import create_app
from .auth import Authenticator, AuthMode, Identity, Role
from .config import Settings, data_dir
from .events import Event, EventBus, MemoryBus, RedisBus, create_bus
from .exceptions import (
    ConfigError,
    HubShuttingDown,
    InvalidRequest,
    InvalidToken,
    MessageTooLarge,
    PermissionDenied,
    ProtocolError,
    TinymorphError,
    TokenRevoked,
    Unavailable,
    UnknownDocument,
    UpdateDecodeError,
)
from .hub import Hub, HubState
from .store import LogEntry, Store

__all__ = [
    "create_app", "Settings", "data_dir", "Hub", "HubState", "Store", "LogEntry",
    "Role", "AuthMode", "Authenticator", "Identity",
    "Event", "EventBus", "MemoryBus", "RedisBus", "create_bus",
    "TinymorphError", "ConfigError", "ProtocolError", "MessageTooLarge", "UpdateDecodeError",
    "UnknownDocument", "InvalidToken", "TokenRevoked", "PermissionDenied", "HubShuttingDown", "InvalidRequest", "Unavailable",
]
