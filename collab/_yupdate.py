"""What a Yjs update inserts and deletes, read straight from its bytes.

The room used to learn this from a text observer, but a text delta is computed by walking the
text from its start to the change: ~100 us per keystroke on a 100k-character document, just for
the summary that ``document.updated`` carries. Reading the update costs a few microseconds
whatever the size of the document. pycrdt has no such reader, hence this module.

Format: Yjs update v1 (what y-websocket sends and pycrdt makes), lib0 encoding::

    update     = varuint n_clients, n_clients * (varuint n_structs, varuint client, varuint clock,
                 n_structs * struct), delete_set
    struct     = u8 info; info & 31: 0 GC (varuint len), 10 Skip (varuint len), else an Item:
                 [origin id if info & 128] [right origin id if info & 64]
                 [parent (varuint 1 + varstring root name | varuint 0 + id) and
                  parent sub (varstring, if info & 32), only if info & 192 == 0] content
    delete_set = varuint n_clients, n_clients * (varuint client, varuint n, n * (clock, len))

Updates reach this only after pycrdt has decoded them, so a failure here means a content kind
this reader does not know; it raises ProtocolError and the caller decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from .exceptions import ProtocolError
from .protocol import _Reader

__all__ = ["UpdateSummary", "summarize"]


@dataclass(frozen=True, slots=True)
class UpdateSummary:
    #: The text of the string items it adds, in update order (every shared type, not only
    #: ``content``: an update does not always name the type an item belongs to).
    inserted: str
    #: How many items it deletes: characters of text (in UTF-16 units, Yjs' clock), map and
    #: array entries.
    deleted: int


def summarize(update: bytes) -> UpdateSummary:
    r = _Reader(update)
    inserted: list[str] = []
    for _ in range(r.varuint()):
        n_structs = r.varuint()
        r.varuint()  # client
        r.varuint()  # first clock
        for _ in range(n_structs):
            info = r.byte()
            ref = info & 31
            if ref == 0 or ref == 10:  # GC, Skip
                r.varuint()
                continue
            if info & 128:
                r.varuint(), r.varuint()
            if info & 64:
                r.varuint(), r.varuint()
            if info & 192 == 0:
                if r.varuint() == 1:
                    r.skip(r.varuint())  # root type name
                else:
                    r.varuint(), r.varuint()
                if info & 32:
                    r.skip(r.varuint())  # parent sub (map key)
            if ref == 4:  # ContentString: the typing
                inserted.append(r.varbytes().decode("utf-8", "replace"))
            else:
                _skip_content(r, ref)
    deleted = 0
    for _ in range(r.varuint()):
        r.varuint()  # client
        for _ in range(r.varuint()):
            r.varuint()  # clock
            deleted += r.varuint()
    return UpdateSummary("".join(inserted), deleted)


def _skip_content(r: _Reader, ref: int) -> None:
    if ref == 1:  # ContentDeleted: length
        r.varuint()
    elif ref == 2:  # ContentJSON: n strings
        for _ in range(r.varuint()):
            r.skip(r.varuint())
    elif ref in (3, 5):  # ContentBinary, ContentEmbed (JSON text)
        r.skip(r.varuint())
    elif ref == 6:  # ContentFormat: key, JSON value
        r.skip(r.varuint())
        r.skip(r.varuint())
    elif ref == 7:  # ContentType: type ref, a name for XmlElement (3) and XmlHook (5)
        if r.varuint() in (3, 5):
            r.skip(r.varuint())
    elif ref == 8:  # ContentAny: n values
        for _ in range(r.varuint()):
            _skip_any(r)
    elif ref == 9:  # ContentDoc: guid, options
        r.skip(r.varuint())
        _skip_any(r)
    else:
        raise ProtocolError(f"unknown item content kind {ref}")


def _skip_any(r: _Reader) -> None:
    """One lib0 ``any`` value (the values of maps and arrays)."""
    tag = r.byte()
    if tag in (127, 126, 121, 120):  # undefined, null, false, true
        return
    if tag == 125:  # varint: 7 bits per byte (6 in the first), high bit = more
        while r.byte() & 128:
            pass
    elif tag == 124:  # float32
        r.skip(4)
    elif tag in (123, 122):  # float64, bigint64
        r.skip(8)
    elif tag in (119, 116):  # string, bytes
        r.skip(r.varuint())
    elif tag == 118:  # object: n (key, value)
        for _ in range(r.varuint()):
            r.skip(r.varuint())
            _skip_any(r)
    elif tag == 117:  # array: n values
        for _ in range(r.varuint()):
            _skip_any(r)
    else:
        raise ProtocolError(f"unknown lib0 value tag {tag}")
