"""One exception per failure, each carrying the websocket close code the hub answers it with.

Close codes follow RFC 6455 where one fits (1009 message too big) and the 4xxx private range
otherwise, mirroring HTTP statuses so they read at a glance in a browser's devtools.
"""

from __future__ import annotations

__all__ = [
    "TinymorphError",
    "ConfigError",
    "ProtocolError",
    "MessageTooLarge",
    "UpdateDecodeError",
    "UpdateGap",
    "NotIntegrated",
    "LimitExceeded",
    "recoverable",
    "RateLimited",
    "TooManyConnections",
    "UnknownDocument",
    "InvalidToken",
    "TokenRevoked",
    "PermissionDenied",
    "HubShuttingDown",
    "InvalidRequest",
    "Unavailable",
]


class TinymorphError(Exception):
    """Base class; ``close_code`` is what a websocket is closed with when this ends it."""

    close_code: int = 1011
    http_status: int = 500

    @property
    def reason(self) -> str:
        # WebSocket close reasons are limited to 123 bytes of UTF-8.
        return str(self).encode()[:123].decode(errors="ignore")


class ConfigError(TinymorphError):
    """A setting could not be read or is out of range."""

    http_status = 500


class ProtocolError(TinymorphError):
    """A frame is truncated, malformed, or of an unknown message type."""

    http_status = 400
    close_code = 4400


class MessageTooLarge(TinymorphError):
    """A websocket message is over the configured ``max_message_bytes``."""

    http_status = 413
    close_code = 1009


class UpdateDecodeError(ProtocolError):
    """A sync update frame is well framed but its Yjs update does not decode."""

    close_code = 4422


class UpdateGap(UpdateDecodeError):
    """An update writes clocks past what the hub has of that client: it depends on changes the
    hub never saw. A stock yjs client holds such structs back until the gap fills, but pycrdt
    integrates them at once, so the two would read different documents: refused instead."""


class NotIntegrated(TinymorphError):
    """A committed entry that pycrdt applied only in part (it drops some hostile structs): the
    room quarantines it and rebuilds its doc from the log without it. Never sent to a client."""


class LimitExceeded(ProtocolError):
    """A message is deeper, larger or more numerous than the hub's structural limits (limits.py):
    refused before any library sees it."""

    http_status = 413
    close_code = 4413


class RateLimited(ProtocolError):
    """More presence or sync requests a second than a socket may send."""

    http_status = 429
    close_code = 4429


class TooManyConnections(TinymorphError):
    """The hub holds as many sockets as it allows (``max_connections``): try again later."""

    http_status = 503
    close_code = 1013


class UnknownDocument(TinymorphError):
    """No document with that id exists (and auto-creation is off)."""

    http_status = 404
    close_code = 4404


class InvalidToken(TinymorphError):
    """Missing, malformed, badly signed or expired token."""

    http_status = 401
    close_code = 4401


class TokenRevoked(TinymorphError):
    """The token was valid but has been revoked."""

    http_status = 401
    close_code = 4410


class PermissionDenied(TinymorphError):
    """The token is valid but its role or document does not allow this."""

    http_status = 403
    close_code = 4403


class HubShuttingDown(TinymorphError):
    """The server is draining for shutdown; reconnect later."""

    http_status = 503
    close_code = 1012


class InvalidRequest(TinymorphError):
    """A REST request body or parameter is missing or malformed."""

    http_status = 400


class Unavailable(TinymorphError):
    """An optional part (embeddings, inference) is not installed or not running."""

    http_status = 503


def recoverable(exc: BaseException) -> bool:
    """Whether a failure on one entry, message or room may be contained there: every Exception,
    and a panic inside a native library (pycrdt's Rust code raises pyo3's ``PanicException``,
    which derives from BaseException, e.g. applying an update that decoded but indexes out of
    bounds). Not: cancellation, KeyboardInterrupt, SystemExit."""
    return isinstance(exc, Exception) or is_panic(exc)


def is_panic(exc: BaseException) -> bool:
    """A panic in native code (pyo3's ``PanicException``): hostile input found a library bug;
    its Python traceback says nothing more than its message."""
    return type(exc).__name__ == "PanicException"
