"""lib0, the byte encoding under every Yjs message: variable-length integers, strings and bytes.

Everything that reads Yjs bytes in tinymorph reads them through :class:`Reader`, because pycrdt's
own ``Decoder`` trusts its input (a truncated buffer raises IndexError or returns garbage). Bad
input never raises anything but :class:`~collab.exceptions.ProtocolError`:

- a value that runs past the end of the buffer (a varuint cut short, a length prefix larger than
  what is left) is a truncation;
- an integer above 2**53 - 1, or one spread over more bytes than such a number needs, is an
  overflow: lib0 decodes into JavaScript numbers, so no Yjs peer can have written it;
- text that is not UTF-8 is malformed.

Writing uses pycrdt's ``write_var_uint``: it is as fast as a hand-written encoder and the one
Yjs peers already read, so there is no second encoder to keep in step.
"""

from __future__ import annotations

import re

from pycrdt import write_var_uint

from .exceptions import ProtocolError

__all__ = ["Reader", "Writer", "MAX_SAFE_INTEGER", "write_var_uint"]

#: The largest integer lib0 reads or writes (JavaScript's ``Number.MAX_SAFE_INTEGER``).
MAX_SAFE_INTEGER = (1 << 53) - 1
#: Bytes a varuint of at most 53 bits takes (7 bits each); a longer one is refused.
_MAX_VARUINT_BYTES = 8
#: Up to seven bytes with the continuation bit, then one without: a whole varuint.
_VARUINT_TAIL = re.compile(rb"[\x80-\xff]{0,7}[\x00-\x7f]")


class Reader:
    """Reads lib0 values from ``buf`` front to back; ``pos`` is the next unread byte."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def at_end(self) -> bool:
        return self.pos == len(self.buf)

    def u8(self) -> int:
        """One byte. Past the end: ProtocolError."""
        pos = self.pos
        if pos >= len(self.buf):
            raise ProtocolError("truncated: a byte runs past the end")
        self.pos = pos + 1
        return self.buf[pos]

    def var_uint(self) -> int:
        """An unsigned varint (7 bits a byte, low bits first, high bit = more follow).
        Cut short: ProtocolError; above 2**53 - 1 or over 8 bytes long: ProtocolError."""
        buf, pos = self.buf, self.pos
        if pos < len(buf) and (byte := buf[pos]) < 0x80:  # one byte: most of them
            self.pos = pos + 1
            return byte
        # Longer ones (client ids are 4-7 bytes): find the last byte with a regex, then drop the
        # continuation bits of all of them at once (three shift-and-mask steps fold 8x7 bits),
        # instead of a Python loop per byte.
        m = _VARUINT_TAIL.match(buf, pos)
        if m is None:
            if len(buf) - pos < _MAX_VARUINT_BYTES:
                raise ProtocolError("truncated: a varuint runs past the end")
            raise ProtocolError(f"overflow: a varuint longer than {_MAX_VARUINT_BYTES} bytes")
        end = m.end()
        x = int.from_bytes(buf[pos:end], "little") & 0x7F7F7F7F7F7F7F7F
        x = (x & 0x007F007F007F007F) | ((x & 0x7F007F007F007F00) >> 1)
        x = (x & 0x00003FFF00003FFF) | ((x & 0x3FFF00003FFF0000) >> 2)
        value = (x & 0x000000000FFFFFFF) | ((x & 0x0FFFFFFF00000000) >> 4)
        if value > MAX_SAFE_INTEGER:
            raise ProtocolError("overflow: a varuint above 2**53 - 1")
        self.pos = end
        return value

    def var_int(self) -> int:
        """A signed varint: the first byte holds the sign (0x40) and 6 bits, the rest 7 bits
        each. Same errors as :meth:`var_uint`."""
        first = self.u8()
        value = first & 0x3F
        negative = bool(first & 0x40)
        shift = 6
        byte = first
        while byte & 0x80:
            if shift >= 6 + 7 * (_MAX_VARUINT_BYTES - 1):
                raise ProtocolError(f"overflow: a varint longer than {_MAX_VARUINT_BYTES} bytes")
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            shift += 7
        if value > MAX_SAFE_INTEGER:
            raise ProtocolError("overflow: a varint beyond 2**53 - 1")
        return -value if negative else value

    def skip(self, n: int) -> None:
        """Step over ``n`` bytes. Fewer left: ProtocolError."""
        if n > len(self.buf) - self.pos:
            raise ProtocolError(f"truncated: {n} bytes announced, {len(self.buf) - self.pos} left")
        self.pos += n

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes. Fewer left: ProtocolError."""
        start = self.pos
        self.skip(n)
        return self.buf[start : self.pos]

    def var_bytes(self) -> bytes:
        """A varuint length, then that many bytes. Length past the end: ProtocolError."""
        return self.take(self.var_uint())

    def var_string(self) -> str:
        """A varuint byte length, then UTF-8 text. Past the end or not UTF-8: ProtocolError."""
        raw = self.var_bytes()
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"malformed: a string is not UTF-8 ({exc.reason})") from None


class Writer:
    """Builds a lib0 buffer; :meth:`to_bytes` returns it. Each method returns the writer."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> "Writer":
        """One byte; outside 0..255: ProtocolError."""
        if not 0 <= value <= 0xFF:
            raise ProtocolError(f"cannot write {value} as a byte")
        self._parts.append(bytes((value,)))
        return self

    def var_uint(self, value: int) -> "Writer":
        """An unsigned varint; negative or above 2**53 - 1 (no peer could read it): ProtocolError."""
        if not 0 <= value <= MAX_SAFE_INTEGER:
            raise ProtocolError(f"cannot write {value} as a varuint (0 .. 2**53 - 1)")
        self._parts.append(write_var_uint(value))
        return self

    def var_bytes(self, data: bytes) -> "Writer":
        self.var_uint(len(data))
        self._parts.append(bytes(data))
        return self

    def var_string(self, text: str) -> "Writer":
        """UTF-8 with its byte length (pycrdt's ``Encoder.write_var_string`` writes the length
        in characters, which a Yjs peer misreads for any non-ASCII text)."""
        return self.var_bytes(text.encode())

    def raw(self, data: bytes) -> "Writer":
        """Bytes as they are (already encoded: a float, a prebuilt run)."""
        self._parts.append(bytes(data))
        return self

    def to_bytes(self) -> bytes:
        return b"".join(self._parts)
