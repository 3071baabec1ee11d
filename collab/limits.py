"""Structural limits on what a client sends, checked before any library call that may recurse.

pycrdt (yrs) decodes nested values recursively in native code: a map value nested ~30,000 arrays
deep overflows the stack while decoding (``get_state``), one nested ~20,000 deep decodes but
crashes whoever later reads it (``to_py``) — in both cases the process dies with no Python
exception, every room with it. So every update and awareness message is first read here, by a
loop with an explicit stack (this module never recurses), and refused when it is deeper, larger
or more numerous than the limits. Refusal closes only the sender's socket (4413) and is logged;
nothing of it reaches pycrdt, the log or another peer.

The update format is the one ``updates.py`` documents; this reader walks all of it, delete set
included, and checks clocks against 2**32: yrs keeps clocks in 32 bits and silently wraps larger
ones while yjs counts on to 2**53, so past it the hub and a stock client would read different
documents (found by the fuzzer). No editor gets near it: a clock counts one client's characters.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import pycrdt

from .exceptions import LimitExceeded, ProtocolError, UpdateGap
from .lib0 import Reader

__all__ = ["UpdateLimits", "UpdateShape", "check_update", "clocks_after", "check_json", "refuse_constant", "to_py_within"]

GC, DELETED, JSON, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, DOC, SKIP = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
MAX_CLOCK = (1 << 32) - 1  # yrs' clocks are u32
MAX_TYPE_REF = 6  # yjs' shared types: Array, Map, Text, XmlElement, XmlFragment, XmlHook, XmlText
SKIP_BYTE = bytes([SKIP])  # a Skip struct's info byte carries no flags


@dataclass(frozen=True)
class UpdateLimits:
    """Per message. The defaults leave any real editing far below them: a pasted book is one
    string of a few MB, a document's values are a few levels deep."""

    #: Nesting of embedded values (lib0 ``any`` arrays/objects, JSON in embeds and formats).
    max_depth: int = 64
    #: Structs (items, GC and skip runs) plus delete-set ranges.
    max_structs: int = 200_000
    #: Client ids named (struct groups, delete-set clients).
    max_clients: int = 1_000
    #: Bytes of one string, key or binary value.
    max_string_bytes: int = 8 * 1024 * 1024


@dataclass(slots=True)
class UpdateShape:
    """What an update writes and what it builds on, so that whoever applies it can tell whether
    it depends on changes it has never seen (see ``Room._clocks_after``)."""

    #: ``(client, start, end)`` clock ranges it writes, in update order: one for each run of
    #: structs without a gap (a Skip struct starts a new one).
    ranges: list[tuple[int, int, int]]
    #: client -> the clock it must have reached: one past the highest item an origin, right
    #: origin or parent of this update names.
    needs: dict[int, int]
    #: Whether it holds only what typing makes: strings, deletions, garbage-collected runs.
    plain: bool = True


def check_update(update: bytes, limits: UpdateLimits) -> UpdateShape:
    """Raise ``LimitExceeded`` (or ``ProtocolError`` for bytes that are no update) unless
    ``update`` is a whole Yjs v1 update within ``limits``; return its :class:`UpdateShape`.
    Linear in its size, no recursion."""
    r = Reader(update)
    needs: dict[int, int] = {}
    groups = r.var_uint()
    if groups > limits.max_clients:
        raise LimitExceeded(f"update names {groups} clients (limit {limits.max_clients})")
    structs = 0
    ranges = []
    plain = True
    for _ in range(groups):
        n = r.var_uint()
        structs += n
        if structs > limits.max_structs:
            raise LimitExceeded(f"update has over {limits.max_structs} structs")
        client = r.var_uint()
        start = clock = r.var_uint()
        for _ in range(n):
            info = r.buf[r.pos:r.pos + 1]
            skip = info == SKIP_BYTE  # a gap: what follows is a range of its own
            if plain and info and info[0] & 31 not in (GC, DELETED, STRING):
                plain = False
            if skip and clock > start:
                ranges.append((client, start, clock))
            clock += _check_struct(r, limits, needs)
            if clock > MAX_CLOCK:
                raise LimitExceeded("update clocks pass 2**32")
            if skip:
                start = clock
        if clock > start:
            ranges.append((client, start, clock))
    clients = r.var_uint()
    if clients > limits.max_clients:
        raise LimitExceeded(f"delete set names {clients} clients (limit {limits.max_clients})")
    for _ in range(clients):
        r.var_uint()  # client
        deleted = r.var_uint()
        structs += deleted
        if structs > limits.max_structs:
            raise LimitExceeded(f"update has over {limits.max_structs} structs and deleted ranges")
        for _ in range(deleted):
            if r.var_uint() + r.var_uint() > MAX_CLOCK:
                raise LimitExceeded("deleted range passes 2**32")
    if not r.at_end():
        raise ProtocolError(f"update has {r.remaining} trailing bytes")
    return UpdateShape(ranges, needs, plain)


def clocks_after(shape: UpdateShape, known: Callable[[int], int]) -> dict[int, int]:
    """The clocks an update of ``shape`` takes its clients to, given the clocks ``known`` of
    each client; ``UpdateGap`` if it writes past a gap or names an item beyond them."""
    have: dict[int, int] = {}
    for client, start, end in shape.ranges:
        at = have.get(client) or known(client)
        if start > at:
            raise UpdateGap(f"update writes clocks {start}.. of client {client}, but the hub has its changes only up to {at}")
        have[client] = max(at, end)
    for client, clock in shape.needs.items():
        if clock > (have.get(client) or known(client)):
            raise UpdateGap(f"update builds on item {clock - 1} of client {client}, which the hub does not have")
    return have


def _string(r: Reader, limits: UpdateLimits) -> int:
    """Skip a string, which must be UTF-8: yjs decodes strictly (a TextDecoder that throws), so
    one invalid byte would make the whole document unloadable in a browser."""
    n = r.var_uint()
    if n > limits.max_string_bytes:
        raise LimitExceeded(f"a string of {n} bytes (limit {limits.max_string_bytes})")
    start = r.pos
    r.skip(n)
    raw = r.buf[start:r.pos]
    if not raw.isascii():
        try:
            raw.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"a string is not UTF-8 ({exc.reason})") from None
    return n


def _need(r: Reader, needs: dict[int, int]) -> None:
    """Read an item id; its client must have reached one past its clock."""
    client, clock = r.var_uint(), r.var_uint() + 1
    if clock > MAX_CLOCK:
        raise LimitExceeded("update names an item past clock 2**32")
    if needs.get(client, 0) < clock:
        needs[client] = clock


def _check_struct(r: Reader, limits: UpdateLimits, needs: dict[int, int]) -> int:
    """Skip one struct, checking it and noting the items it names in ``needs``; returns the
    clock length it claims."""
    info = r.u8()
    kind = info & 31
    if kind in (GC, SKIP):
        return r.var_uint()
    if info & 128:
        _need(r, needs)  # origin
    if info & 64:
        _need(r, needs)  # right origin
    if info & 192 == 0:
        if r.var_uint() == 1:
            _string(r, limits)  # root type name
        else:
            _need(r, needs)  # parent item
        if info & 32:
            _string(r, limits)  # parent sub (map key)
    if kind == DELETED:
        return r.var_uint()
    if kind == STRING:  # its clock length counts UTF-16 code units, as JavaScript strings do
        n = _string(r, limits)
        raw = r.buf[r.pos - n:r.pos]
        return len(raw) if raw.isascii() else len(raw.decode().encode("utf-16-le")) // 2
    if kind == JSON:
        n = r.var_uint()
        for _ in range(n):
            _content_json(r.take(_length(r, limits)), limits, undefined_ok=True)
        return n
    if kind == BINARY:
        _string(r, limits)
    elif kind == EMBED:
        _content_json(r.take(_length(r, limits)), limits)
    elif kind == FORMAT:
        _string(r, limits)
        _content_json(r.take(_length(r, limits)), limits)
    elif kind == TYPE:
        ref = r.var_uint()
        if ref > MAX_TYPE_REF:  # yrs also knows weak links (7) and more; yjs cannot read them
            raise ProtocolError(f"shared type {ref} is not one yjs knows (0-{MAX_TYPE_REF})")
        if ref in (3, 5):  # XmlElement, XmlHook: a name
            _string(r, limits)
    elif kind == ANY:
        n = r.var_uint()
        for _ in range(n):
            _check_any(r, limits)
        return n
    elif kind == DOC:
        _string(r, limits)  # guid
        _check_any(r, limits)  # options
    else:
        raise ProtocolError(f"unknown item content kind {kind}")
    return 1


def _length(r: Reader, limits: UpdateLimits) -> int:
    n = r.var_uint()
    if n > limits.max_string_bytes:
        raise LimitExceeded(f"a value of {n} bytes (limit {limits.max_string_bytes})")
    return n


def _check_any(r: Reader, limits: UpdateLimits) -> None:
    """One lib0 ``any`` value, containers walked with an explicit stack ``[left, is_object]``."""
    stack = [[1, False]]
    while stack:
        top = stack[-1]
        if top[0] == 0:
            stack.pop()
            continue
        top[0] -= 1
        if top[1]:
            _string(r, limits)  # the key of an object entry
        tag = r.u8()
        if tag in (127, 126, 121, 120):  # undefined, null, false, true
            continue
        if tag == 125:
            r.var_int()
        elif tag == 124:
            r.skip(4)
        elif tag in (123, 122):
            r.skip(8)
        elif tag in (119, 116):  # string, bytes
            _string(r, limits)
        elif tag in (118, 117):  # object, array
            n = r.var_uint()
            if len(stack) > limits.max_depth:  # the stack holds the top level too
                raise LimitExceeded(f"a value nested deeper than {limits.max_depth}")
            if n:
                stack.append([n, tag == 118])
        else:
            raise ProtocolError(f"unknown lib0 value tag {tag}")


_JSON_STRUCTURE = re.compile(rb'[\[\]{}"\\]')


def refuse_constant(name: str) -> Any:
    """``parse_constant`` for JSON a browser must read: its ``JSON.parse`` fails on NaN and Infinity."""
    raise ValueError(f"{name} is not JSON")


def _content_json(raw: bytes, limits: UpdateLimits, undefined_ok: bool = False) -> None:
    """JSON inside an update (embeds, formats, JSON content): yjs ``JSON.parse``s it while it reads
    the update, so text a browser cannot parse (NaN too) would make the document unloadable
    for every browser. Depth first (``json`` recurses), then well-formedness."""
    check_json(raw, limits.max_depth)
    if undefined_ok and raw == b"undefined":
        return
    try:
        json.loads(raw, parse_constant=refuse_constant)
    except ValueError as exc:  # UnicodeDecodeError included
        raise ProtocolError(f"update content is not JSON a browser can parse: {exc}") from None


def check_json(raw: bytes | str, max_depth: int) -> None:
    """Refuse JSON text nested deeper than ``max_depth`` (brackets outside strings), before a
    parser that recurses sees it. Well-formedness is the parser's business."""
    if isinstance(raw, str):
        raw = raw.encode()
    depth, in_string, escaped = 0, False, False
    last = -2
    for m in _JSON_STRUCTURE.finditer(raw):
        c = m.group()
        if in_string:
            if escaped:
                escaped = False
                if m.start() == last + 1:
                    continue  # this character is the one escaped
            if c == b"\\":
                escaped, last = True, m.start()
            elif c == b'"':
                in_string = False
            continue
        if c == b'"':
            in_string = True
        elif c in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise LimitExceeded(f"JSON nested deeper than {max_depth}")
        elif c in (b"]", b"}"):
            depth -= 1


def to_py_within(value: Any, max_depth: int = 64) -> Any:
    """``value.to_py()`` for a pycrdt Map or Array (any other value as it is), walked here with an
    explicit stack: pycrdt converts nested shared types recursively and segfaults on ones nested
    ~50,000 deep. Such nesting goes through parent references and grows over many updates, each
    within the limits, so no per-update check can see it: whoever reads a map a client may write
    (requests, suggestions, agent runs) reads it through this. Deeper than ``max_depth``:
    ``LimitExceeded``."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(value, root, 0, 1)]
    while stack:
        item, parent, key, depth = stack.pop()
        if isinstance(item, (pycrdt.Map, pycrdt.Array)):
            if depth > max_depth:
                raise LimitExceeded(f"shared types nested deeper than {max_depth}")
            children = list(item.items()) if isinstance(item, pycrdt.Map) else list(enumerate(item))
            out: Any = {} if isinstance(item, pycrdt.Map) else [None] * len(children)
            stack += [(child, out, k, depth + 1) for k, child in children]
        elif isinstance(item, pycrdt.Text):
            out = str(item)
        else:
            out = item
        parent[key] = out
    return root[0]
