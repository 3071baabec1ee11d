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
    UpdateGap,
)
from .extensions import Extension, ExtensionContext, load_extensions
from .history import History, Revert, RevertScope
from .hub import Hub, HubState
from .lib0 import Reader, Writer
from .store import LogEntry, Store
from .updates import EMPTY_UPDATE, UpdateSummary, decode_state_vector, edit_copy, first_client, first_item, summarize

__all__ = [
    "create_app", "Settings", "data_dir", "Hub", "HubState", "Store", "LogEntry",
    "Extension", "ExtensionContext", "load_extensions", "History", "Revert", "RevertScope",
    "Reader", "Writer", "EMPTY_UPDATE", "UpdateSummary", "decode_state_vector", "edit_copy", "first_client",
    "first_item", "summarize",
    "Role", "AuthMode", "Authenticator", "Identity",
    "Event", "EventBus", "MemoryBus", "RedisBus", "create_bus",
    "TinymorphError", "ConfigError", "ProtocolError", "MessageTooLarge", "UpdateDecodeError", "UpdateGap",
    "UnknownDocument", "InvalidToken", "TokenRevoked", "PermissionDenied", "HubShuttingDown", "InvalidRequest", "Unavailable",
]
