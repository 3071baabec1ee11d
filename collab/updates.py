"""Yjs updates and state vectors read straight from their bytes, and edits captured as updates.

pycrdt applies and merges updates but cannot say what one contains: which client wrote it, what
text it inserts, how much it deletes, or which items a new item sits between. Those answers cost
a few microseconds read from the bytes, whatever the size of the document (a text observer walks
the text from its start to the change: ~100 us per keystroke on a 100k-character document).

Format: Yjs update v1 (what y-websocket sends and pycrdt makes), in lib0 encoding::

    update     = varuint n_clients, n_clients * (varuint n_structs, varuint client, varuint clock,
                 n_structs * struct), delete_set
    struct     = u8 info; info & 31: 0 GC (varuint len), 10 Skip (varuint len), else an Item:
                 [origin id if info & 128] [right origin id if info & 64]
                 [parent (varuint 1 + varstring root name | varuint 0 + id) and
                  parent sub (varstring, if info & 32), only if info & 192 == 0] content
    delete_set = varuint n_clients, n_clients * (varuint client, varuint n, n * (clock, len))
    state vector = varuint n, n * (varuint client, varuint clock)

Bad bytes raise :class:`~collab.exceptions.ProtocolError` (truncated, overflowing, or a content
kind this reader does not know); the caller decides what that costs. The hub validates updates
with pycrdt before it reads them here, so for it an error means a content kind newer than this
reader, and only a summary is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

from pycrdt import Doc

from .exceptions import ProtocolError
from .lib0 import Reader

__all__ = [
    "EMPTY_UPDATE",
    "Struct",
    "UpdateSummary",
    "decode_state_vector",
    "edit_copy",
    "first_client",
    "first_item",
    "has_structs",
    "read_structs",
    "summarize",
]

#: An update with no structs and an empty delete set: what a client with nothing new sends.
EMPTY_UPDATE = b"\x00\x00"

#: Content kinds (``info & 31``) that are not items.
GC, SKIP = 0, 10
#: The item content kind that carries typed text.
STRING = 4

ItemId = tuple[int, int]  # (client, clock)


class Struct(NamedTuple):
    """One struct of an update, as much of it as tinymorph asks about."""

    #: The Yjs client that wrote it.
    client: int
    #: ``info & 31``: GC (0), Skip (10), or an item's content kind (1 deleted, 4 string, 8 any, ...).
    kind: int
    #: The item to its left and to its right when it was inserted (None: the start / the end).
    origin: ItemId | None
    right_origin: ItemId | None
    #: Its text, if it is a string item (kind 4).
    text: str | None


@dataclass(frozen=True, slots=True)
class UpdateSummary:
    #: The text of the string items it adds, in update order (every shared type, not only
    #: ``content``: an update does not always name the type an item belongs to).
    inserted: str
    #: How many items it deletes: characters of text (in UTF-16 units, Yjs' clock), map and
    #: array entries.
    deleted: int


def has_structs(update: bytes) -> bool:
    """Whether a (v1) update carries any new items (as opposed to only a delete set)."""
    return bool(update) and update[0] != 0


def first_client(update: bytes) -> int | None:
    """The Yjs client id of the first struct group of a (v1) update, or None if it has none.

    ``pycrdt.get_state(update)`` cannot tell: it only counts structs that start at clock 0.
    Reads only the update's header, so any update pycrdt accepted has an answer.
    """
    r = Reader(update)
    if r.var_uint() == 0:
        return None
    r.var_uint()  # number of structs of this client
    return r.var_uint()


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """client id → next clock, from an encoded state vector (``Doc.get_state()``,
    ``pycrdt.get_state(update)``, ``Y.encodeStateVector``). Truncated or trailing bytes:
    ProtocolError."""
    r = Reader(state_vector)
    out = {}
    for _ in range(r.var_uint()):
        client = r.var_uint()
        out[client] = r.var_uint()
    if not r.at_end():
        raise ProtocolError(f"malformed state vector: {r.remaining} trailing bytes")
    return out


def read_structs(update: bytes) -> Iterator[Struct]:
    """The structs of an update, in update order (then stops; the delete set is not read)."""
    r = Reader(update)
    for _ in range(r.var_uint()):
        n_structs = r.var_uint()
        client = r.var_uint()
        r.var_uint()  # clock of the group's first struct
        for _ in range(n_structs):
            yield _read_struct(r, client)


def first_item(update: bytes) -> Struct | None:
    """The first struct of an update (e.g. the item a one-insert edit made), or None."""
    return next(read_structs(update), None)


def summarize(update: bytes) -> UpdateSummary:
    """What an update inserts and deletes; see :class:`UpdateSummary`."""
    r = Reader(update)
    inserted: list[str] = []
    for _ in range(r.var_uint()):
        n_structs = r.var_uint()
        client = r.var_uint()
        r.var_uint()  # first clock
        for _ in range(n_structs):
            text = _read_struct(r, client).text
            if text is not None:
                inserted.append(text)
    deleted = 0
    for _ in range(r.var_uint()):
        r.var_uint()  # client
        for _ in range(r.var_uint()):
            r.var_uint()  # clock
            deleted += r.var_uint()
    return UpdateSummary("".join(inserted), deleted)


def edit_copy(state: bytes, edit: Callable[[Doc], None]) -> bytes | None:
    """Run ``edit`` on a scratch copy of the document whose full update is ``state``, in one
    transaction, and return the update that transaction produced; None if it changed nothing.

    For edits the hub makes itself (reverts, run status, review stamps) and for probing where
    yrs would put an insertion: the live document stays untouched until the update is submitted
    like anyone else's. The copy has a new random client id, so its items never collide with a
    peer's. Exceptions from ``edit`` propagate; nothing is returned then.
    """
    scratch = Doc()
    if state:
        scratch.apply_update(state)
    updates: list[bytes] = []
    sub = scratch.observe(lambda event: updates.append(event.update))
    try:
        with scratch.transaction():
            edit(scratch)
    finally:
        scratch.unobserve(sub)
    return updates[0] if updates else None


# -- struct layout -------------------------------------------------------------------------------

def _read_struct(r: Reader, client: int) -> Struct:
    info = r.u8()
    kind = info & 31
    if kind == GC or kind == SKIP:
        r.var_uint()  # length
        return Struct(client, kind, None, None, None)
    origin = (r.var_uint(), r.var_uint()) if info & 128 else None
    right = (r.var_uint(), r.var_uint()) if info & 64 else None
    if info & 192 == 0:  # no origins: the parent is named
        if r.var_uint() == 1:
            r.skip(r.var_uint())  # root type name
        else:
            r.var_uint(), r.var_uint()  # parent item id
        if info & 32:
            r.skip(r.var_uint())  # parent sub (map key)
    if kind == STRING:  # the typing
        return Struct(client, kind, origin, right, r.var_bytes().decode("utf-8", "replace"))
    _skip_content(r, kind)
    return Struct(client, kind, origin, right, None)


def _skip_content(r: Reader, kind: int) -> None:
    if kind == 1:  # ContentDeleted: length
        r.var_uint()
    elif kind == 2:  # ContentJSON: n strings
        for _ in range(r.var_uint()):
            r.skip(r.var_uint())
    elif kind in (3, 5):  # ContentBinary, ContentEmbed (JSON text)
        r.skip(r.var_uint())
    elif kind == 6:  # ContentFormat: key, JSON value
        r.skip(r.var_uint())
        r.skip(r.var_uint())
    elif kind == 7:  # ContentType: type ref, a name for XmlElement (3) and XmlHook (5)
        if r.var_uint() in (3, 5):
            r.skip(r.var_uint())
    elif kind == 8:  # ContentAny: n values
        for _ in range(r.var_uint()):
            _skip_any(r)
    elif kind == 9:  # ContentDoc: guid, options
        r.skip(r.var_uint())
        _skip_any(r)
    else:
        raise ProtocolError(f"unknown item content kind {kind}")


def _skip_any(r: Reader) -> None:
    """One lib0 ``any`` value (the values of maps and arrays)."""
    tag = r.u8()
    if tag in (127, 126, 121, 120):  # undefined, null, false, true
        return
    if tag == 125:  # integer
        r.var_int()
    elif tag == 124:  # float32
        r.skip(4)
    elif tag in (123, 122):  # float64, bigint64
        r.skip(8)
    elif tag in (119, 116):  # string, bytes
        r.skip(r.var_uint())
    elif tag == 118:  # object: n (key, value)
        for _ in range(r.var_uint()):
            r.skip(r.var_uint())
            _skip_any(r)
    elif tag == 117:  # array: n values
        for _ in range(r.var_uint()):
            _skip_any(r)
    else:
        raise ProtocolError(f"unknown lib0 value tag {tag}")
