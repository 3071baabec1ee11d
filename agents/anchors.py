"""Yjs relative positions (the JSON ``Y.relativePositionToJSON`` produces) ↔ character indexes.

Why not pycrdt's ``StickyIndex`` alone: in pycrdt 0.14 ``Text.sticky_index`` mixes UTF-8 byte
offsets with UTF-16 clocks (wrong item ids after any non-ASCII character) and panics at the end of
the text, while ``StickyIndex.get_index`` answers in UTF-16 units for item positions. So positions
are *made* here from item ids we read out of a Yjs update (yrs does the index arithmetic when it
inserts), and *resolved* through ``StickyIndex`` with the UTF-16 answer converted to characters.
Everything this module hands out counts Python characters; ``byte_index`` converts for pycrdt.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, StickyIndex, Text

from collab.updates import decode_state_vector, edit_copy, first_item

from .exceptions import InvalidAnchor

__all__ = ["RelPos", "byte_index", "item_position", "relative_position", "resolve", "state_vector",
           "utf16_len", "validate", "normalize"]

RelPos = dict[str, Any]
TEXT = "content"


def byte_index(s: str, char_index: int) -> int:
    """pycrdt's ``Text`` counts UTF-8 bytes."""
    return len(s[:char_index].encode())


def utf16_len(s: str) -> int:
    """Yjs clocks count UTF-16 code units."""
    return len(s.encode("utf-16-le")) // 2


def _char_from_utf16(s: str, units: int) -> int:
    n = 0
    for i, ch in enumerate(s):
        if n >= units:
            return i
        n += 2 if ord(ch) > 0xFFFF else 1
    return len(s)


def state_vector(doc: Doc) -> dict[int, int]:
    """client id → next clock (the decoded ``Y.encodeStateVector``)."""
    return decode_state_vector(doc.get_state())


def item_position(client: int, clock: int, assoc: int = 0) -> RelPos:
    """The position at the character with id (client, clock): before it (assoc 0) or after it (-1)."""
    return {"item": {"client": client, "clock": clock}, "assoc": assoc}


def relative_position(doc: Doc, char_index: int, assoc: int = 0) -> RelPos:
    """A relative position at ``char_index`` of the ``content`` text: attached to the character
    after it (assoc 0, like ``Y.createRelativePositionFromTypeIndex``) or before it (assoc -1).

    Found by inserting a probe character into a scratch copy and reading the new item's
    neighbours out of the update yrs writes — yrs does the index arithmetic, we only read ids.
    """

    def probe(scratch: Doc) -> None:
        text = scratch.get(TEXT, type=Text)
        s = str(text)
        text.insert(byte_index(s, max(0, min(char_index, len(s)))), "\u2063")

    item = first_item(edit_copy(doc.get_update(), probe))
    left, right = item.origin, item.right_origin
    if assoc < 0:
        return item_position(*left, assoc=-1) if left else {"tname": TEXT, "assoc": -1}
    return item_position(*right, assoc=0) if right else {"tname": TEXT, "assoc": 0}


def _int(v: Any) -> Any:
    """Numbers read back from a Y.Map are floats (JSON numbers); ids are integers."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def normalize(pos: Any) -> Any:
    if not isinstance(pos, dict):
        return pos
    out = dict(pos)
    for key in ("item", "type"):
        if isinstance(out.get(key), dict):
            out[key] = {k: _int(v) for k, v in out[key].items()}
    if "assoc" in out:
        out["assoc"] = _int(out["assoc"])
    return out


def validate(doc: Doc, pos: Any, what: str = "anchor") -> RelPos:
    """Check the shape of a position and that its item exists in ``doc``; returns it."""
    if not isinstance(pos, dict):
        raise InvalidAnchor(f"{what} must be a Yjs relative position as JSON (an object)")
    pos = normalize(pos)
    assoc = pos.get("assoc", 0)
    if isinstance(assoc, bool) or not isinstance(assoc, int):
        raise InvalidAnchor(f"{what}.assoc must be an integer")
    item = pos.get("item")
    if item is None:
        if pos.get("tname") not in (None, TEXT) and pos.get("type") is None:
            raise InvalidAnchor(f"{what} refers to the type {pos.get('tname')!r}, not the text {TEXT!r}")
        return pos
    if not (isinstance(item, dict) and all(isinstance(item.get(k), int) and not isinstance(item.get(k), bool)
                                           and item.get(k) >= 0 for k in ("client", "clock"))):
        raise InvalidAnchor(f"{what}.item must be {{client, clock}} with non-negative integers")
    if item["clock"] >= state_vector(doc).get(item["client"], 0):
        raise InvalidAnchor(f"{what} points at an item this document does not have")
    return pos


def resolve(doc: Doc, pos: RelPos) -> int:
    """The character index a relative position stands for now (deleted items resolve to where
    they were, as in Yjs)."""
    text = doc.get(TEXT, type=Text)
    s = str(text)
    pos = normalize(pos)
    if pos.get("item") is None:
        return len(s) if pos.get("assoc", 0) >= 0 else 0
    item = pos["item"]
    if item["clock"] >= state_vector(doc).get(item["client"], 0):
        raise InvalidAnchor("the position points at an item this document does not have")
    try:
        units = StickyIndex.from_json({"item": item, "assoc": pos.get("assoc", 0)}, text).get_index()
    except BaseException as exc:  # pycrdt panics (PanicException is a BaseException) on odd input
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise InvalidAnchor(f"cannot resolve the position: {exc}") from None
    return _char_from_utf16(s, units)
