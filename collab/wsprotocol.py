"""What the hub's websocket fast path needs from uvicorn and websockets, and what it offers.

The fast path (``_wsprotocol.py``) subclasses uvicorn's sans-I/O websocket protocol and reads
the internals of uvicorn and websockets, which neither project documents or keeps stable.
pyproject pins both to the minor versions it is tested against; should an install still differ,
every internal it touches is checked when this module is imported (:data:`PRIVATE_API`,
:data:`MISSING`), and if any is missing the server (``server.py``) logs a warning naming it and
serves with uvicorn's own ``websockets-sansio`` protocol instead: slower, never broken. This
module imports none of those internals itself, so the hub imports whatever they do.

The endpoint and peers use the extensions below when ``scope["extensions"]`` has them and the
plain ASGI ``receive``/``send`` otherwise, so they work the same on either protocol (and under
Starlette's TestClient).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from typing import Iterable, NamedTuple

__all__ = [
    "RECEIVE_DIRECT",
    "SEND_NOWAIT",
    "STOCK_PROTOCOL",
    "PRIVATE_API",
    "MISSING",
    "Internal",
    "missing_private_api",
]

#: ASGI extension (``scope["extensions"]``) of the fast protocol: ``send_nowait(data) -> bool``
#: writes one binary message now and says True, or says False when it cannot (socket closing,
#: transport paused, compression on) and the caller must use the ordinary awaitable ``send``.
#: It spares a broadcast a coroutine chain per peer (Starlette's WebSocket, its exception
#: middleware, uvicorn's send) for a write that never waits.
SEND_NOWAIT = "tinymorph.websocket.send_nowait"

#: ASGI extension of the fast protocol: ``receive_direct(fn | None)`` registers (or, with None,
#: removes) a synchronous ``fn(payload: bytes)`` that is handed complete binary messages straight
#: from the socket while the app waits in ``receive`` with nothing queued. ``fn`` must not raise;
#: if it does, the connection is failed with 1011 and the error logged.
RECEIVE_DIRECT = "tinymorph.websocket.receive_direct"

_UVICORN = "uvicorn.protocols.websockets.websockets_sansio_impl"
#: uvicorn's own sans-I/O protocol, served when the fast path cannot be (or is not wanted); with
#: that module gone too, uvicorn picks its default.
STOCK_PROTOCOL = "websockets-sansio" if importlib.util.find_spec(_UVICORN) else "auto"


class Internal(NamedTuple):
    """One undocumented thing the fast path takes from uvicorn or websockets."""

    module: str
    #: ``Name`` (a class or function), ``Class.attr`` (on the class: a method, property, member).
    name: str
    #: ``attr`` is set on instances, not on the class: looked for as an assignment
    #: ``self.attr = ...`` in the source of the class or one of its bases.
    instance: bool = False

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


_P = "WebSocketsSansIOProtocol"
_S = "ServerProtocol"  # websockets' connection state machine: uvicorn's ``self.conn``

#: Everything ``_wsprotocol.py`` uses that uvicorn and websockets do not document. Keep in step
#: with that module: a name it starts using belongs here.
PRIVATE_API: tuple[Internal, ...] = (
    # uvicorn's protocol: the class it subclasses, and the methods it overrides or calls.
    Internal(_UVICORN, _P),
    Internal(_UVICORN, f"{_P}.data_received"),  # gets every frame the fast path does not parse
    Internal(_UVICORN, f"{_P}.handle_connect"),  # builds the scope our extensions go into
    Internal(_UVICORN, f"{_P}.send_receive_event_to_app"),  # pauses per message; we pause by watermark
    Internal(_UVICORN, f"{_P}.receive"),  # resumes reading; we resume by watermark
    Internal(_UVICORN, f"{_P}.send"),  # everything but a binary message on an open connection
    # ... and its connection state, set in __init__ (scope: in handle_connect).
    Internal(_UVICORN, f"{_P}.config", instance=True),  # .ws_max_size, below
    Internal(_UVICORN, f"{_P}.conn", instance=True),  # a websockets ServerProtocol, below
    Internal(_UVICORN, f"{_P}.queue", instance=True),  # ASGI receive queue we put messages on
    Internal(_UVICORN, f"{_P}.transport", instance=True),
    Internal(_UVICORN, f"{_P}.scope", instance=True),
    Internal(_UVICORN, f"{_P}.close_sent", instance=True),
    Internal(_UVICORN, f"{_P}.disconnected", instance=True),
    Internal(_UVICORN, f"{_P}.handshake_complete", instance=True),
    Internal(_UVICORN, f"{_P}.initial_response", instance=True),
    Internal(_UVICORN, f"{_P}.read_paused", instance=True),
    Internal(_UVICORN, f"{_P}.writable", instance=True),
    Internal("uvicorn.config", "Config.ws_max_size", instance=True),
    # websockets' sans-I/O connection: state, the parser's position and failure, output.
    Internal("websockets.server", _S),
    Internal("websockets.server", f"{_S}.state"),
    Internal("websockets.server", f"{_S}.fail"),
    Internal("websockets.server", f"{_S}.data_to_send"),
    Internal("websockets.server", f"{_S}.current_size", instance=True),  # None between messages
    Internal("websockets.server", f"{_S}.parser_exc", instance=True),
    Internal("websockets.server", f"{_S}.extensions", instance=True),  # non-empty: deflate is on
    Internal("websockets.server", f"{_S}.reader", instance=True),  # a StreamReader, below
    Internal("websockets.streams", "StreamReader.buffer", instance=True),  # empty at a frame boundary
    Internal("websockets.protocol", "State.OPEN"),
    Internal("websockets.frames", "apply_mask"),  # the C unmasking speedup (or its fallback)
)


def missing_private_api(required: Iterable[Internal] = PRIVATE_API) -> list[str]:
    """The names of ``required`` that this install lacks (empty: the fast path can run). A
    module that does not import, or a class whose source cannot be read to find an instance
    attribute, counts as missing."""
    sources: dict[type, str | None] = {}
    return [str(item) for item in required if not _present(item, sources)]


def _present(item: Internal, sources: dict[type, str | None]) -> bool:
    try:
        obj = importlib.import_module(item.module)
    except ImportError:
        return False
    *path, last = item.name.split(".")
    for part in path:
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    if hasattr(obj, last):
        return True
    if not (item.instance and isinstance(obj, type)):
        return False
    assigned = re.compile(rf"\bself\.{re.escape(last)}\s*(:[^=\n]+)?=(?!=)")
    for klass in obj.__mro__:
        if klass not in sources:
            sources[klass] = _class_source(klass)
        if sources[klass] and assigned.search(sources[klass]):
            return True
    return False


def _class_source(klass: type) -> str | None:
    """The text of ``class Name...`` up to the next unindented line of its module; None for a
    builtin or a module installed without its sources. (``inspect.getsource(klass)`` parses
    the whole module on Python 3.11: ten times slower, and this runs at import.)"""
    module = sys.modules.get(klass.__module__)
    try:
        text = inspect.getsource(module) if module is not None else None
    except (OSError, TypeError):
        return None
    if text is None:
        return None
    found = re.search(rf"^class {re.escape(klass.__name__)}\b.*?(?=^\S|\Z)", text, re.M | re.S)
    return found.group(0) if found else None


#: What this install lacks, checked once at import.
MISSING: tuple[str, ...] = tuple(missing_private_api())
