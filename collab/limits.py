"""Structural limits on what a client sends, checked before any library call that may recurse.

pycrdt (yrs) decodes nested values recursively in native code: a map value nested ~30,000 arrays
deep overflows the stack while decoding (``get_state``), one nested ~20,000 deep decodes but
crashes whoever later reads it (``to_py``) — in both cases the process dies with no Python
exception, every room with it. So every update and awareness message is first read here, by a
loop with an explicit stack (this module never recurses), and refused when it is deeper, larger
or more numerous than the limits. Refusal closes only the sender's socket (4413) and is logged;
nothing of it reaches pycrdt, the log or another peer.

The update format is the one ``updates.py`` documents; this reader walks all of it, delete set
included, and checks clocks against 2**53 (JavaScript clients cannot count further; ``lib0.Reader``
refuses larger numbers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .exceptions import LimitExceeded, ProtocolError
from .lib0 import MAX_SAFE_INTEGER, Reader

__all__ = ["UpdateLimits", "check_update", "check_json"]

GC, DELETED, JSON, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, DOC, SKIP = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10


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


def check_update(update: bytes, limits: UpdateLimits) -> None:
    """Raise ``LimitExceeded`` (or ``ProtocolError`` for bytes that are no update) unless
    ``update`` is a whole Yjs v1 update within ``limits``. Linear in its size, no recursion."""
    r = Reader(update)
    groups = r.var_uint()
    if groups > limits.max_clients:
        raise LimitExceeded(f"update names {groups} clients (limit {limits.max_clients})")
    structs = 0
    for _ in range(groups):
        n = r.var_uint()
        structs += n
        if structs > limits.max_structs:
            raise LimitExceeded(f"update has over {limits.max_structs} structs")
        r.var_uint()  # client
        clock = r.var_uint()
        for _ in range(n):
            clock += _check_struct(r, limits)
            if clock > MAX_SAFE_INTEGER:
                raise LimitExceeded("update clocks pass 2**53")
    clients = r.var_uint()
    if clients > limits.max_clients:
        raise LimitExceeded(f"delete set names {clients} clients (limit {limits.max_clients})")
    for _ in range(clients):
        r.var_uint()  # client
        ranges = r.var_uint()
        structs += ranges
        if structs > limits.max_structs:
            raise LimitExceeded(f"update has over {limits.max_structs} structs and deleted ranges")
        for _ in range(ranges):
            if r.var_uint() + r.var_uint() > MAX_SAFE_INTEGER:
                raise LimitExceeded("deleted range passes 2**53")
    if not r.at_end():
        raise ProtocolError(f"update has {r.remaining} trailing bytes")


def _string(r: Reader, limits: UpdateLimits) -> int:
    n = r.var_uint()
    if n > limits.max_string_bytes:
        raise LimitExceeded(f"a string of {n} bytes (limit {limits.max_string_bytes})")
    r.skip(n)
    return n


def _check_struct(r: Reader, limits: UpdateLimits) -> int:
    """Skip one struct, checking it; returns the clock length it claims (at least 1)."""
    info = r.u8()
    kind = info & 31
    if kind in (GC, SKIP):
        return max(1, r.var_uint())
    if info & 128:
        r.var_uint(), r.var_uint()  # origin
    if info & 64:
        r.var_uint(), r.var_uint()  # right origin
    if info & 192 == 0:
        if r.var_uint() == 1:
            _string(r, limits)  # root type name
        else:
            r.var_uint(), r.var_uint()  # parent item
        if info & 32:
            _string(r, limits)  # parent sub (map key)
    if kind == DELETED:
        return max(1, r.var_uint())
    if kind == STRING:
        return max(1, _string(r, limits))
    if kind == JSON:
        n = r.var_uint()
        for _ in range(n):
            check_json(r.take(_length(r, limits)), limits.max_depth)
        return max(1, n)
    if kind == BINARY:
        _string(r, limits)
    elif kind == EMBED:
        check_json(r.take(_length(r, limits)), limits.max_depth)
    elif kind == FORMAT:
        _string(r, limits)
        check_json(r.take(_length(r, limits)), limits.max_depth)
    elif kind == TYPE:
        if r.var_uint() in (3, 5):  # XmlElement, XmlHook: a name
            _string(r, limits)
    elif kind == ANY:
        n = r.var_uint()
        for _ in range(n):
            _check_any(r, limits)
        return max(1, n)
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
