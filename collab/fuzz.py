"""A grammar-aware fuzzer for the hub: valid-but-hostile Yjs updates and awareness messages.

Random bytes die at the first varint; these follow the grammar (``updates.py``) and push on its
edges: values nested far deeper than any editor nests them, clocks and client ids at 2**53,
thousands of clients, long and broken strings, every content kind (maps, arrays, formats,
embeds, types, subdocs), deletes of ranges nobody wrote, NaN and bigint values, presence floods
and sync-step-1 storms. ``python -m bench fuzz`` sends 100,000 of them to a live hub; the test
suite a few thousand (``tests/test_fuzz.py``). Deterministic for a seed.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
from dataclasses import dataclass

import websockets
from websockets.asyncio.client import connect

from .lib0 import MAX_SAFE_INTEGER, Writer

__all__ = ["Case", "HostileInput", "FuzzReport", "attack"]

STRING, ANY, JSON_, BINARY, EMBED, FORMAT, TYPE, DOC, DELETED, GC, SKIP = 4, 8, 2, 3, 5, 6, 7, 9, 1, 0, 10


@dataclass(frozen=True)
class Case:
    """One websocket message and what kind of hostility it carries (for the report)."""

    kind: str
    frame: bytes


class HostileInput:
    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    # -- numbers and strings on the edges ----------------------------------------------------
    def _uint(self) -> int:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.randrange(0, 64)
        if r < 0.8:
            return self.rng.randrange(0, 1 << 32)
        return self.rng.choice([MAX_SAFE_INTEGER, MAX_SAFE_INTEGER - 1, 1 << 52, (1 << 53) - 100])

    def _text(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            return "".join(self.rng.choice("ab é🐈\n\u200b") for _ in range(self.rng.randrange(0, 12)))
        if r < 0.8:
            return "x" * self.rng.choice([100, 1000, 20_000])
        return "\ud800".encode("utf-8", "surrogatepass").decode("latin-1")  # a lone surrogate's bytes

    def _any(self, w: Writer, depth: int) -> None:
        """A lib0 ``any`` value, possibly nested ``depth`` deep."""
        if depth > 40:  # written flat: the point is to find who recurses, not to recurse here
            w.raw(b"\x75\x01" * depth + b"\x7f")
            return
        for _ in range(depth):
            if self.rng.random() < 0.5:
                w.u8(117).var_uint(1)  # array of one
            else:
                w.u8(118).var_uint(1).var_string("k")  # object of one
        tag = self.rng.choice([127, 126, 125, 124, 123, 122, 121, 120, 119, 116])
        w.u8(tag)
        if tag == 125:
            w.var_uint(self._uint())  # a varint (sign bit in the first byte; positive here)
        elif tag == 124:
            w.raw(struct.pack(">f", self.rng.choice([float("nan"), float("inf"), 1.5])))
        elif tag == 123:
            w.raw(struct.pack(">d", self.rng.choice([float("nan"), float("-inf"), 1e308])))
        elif tag == 122:
            w.raw(struct.pack(">q", self.rng.choice([-(1 << 63), (1 << 63) - 1, 0])))
        elif tag == 119:
            w.var_string(self._text())
        elif tag == 116:
            w.var_bytes(bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(0, 16))))

    def _depth(self) -> int:
        return self.rng.choice([0, 1, 3, 10, 63, 64, 65, 200, 5_000, 30_000, 60_000])

    def _json(self) -> str:
        depth = self._depth()
        if self.rng.random() < 0.3:
            return "[" * depth + "]" * depth
        return json.dumps({"v": self.rng.choice([1, "s", None, True])}) if depth < 3 else \
            '{"a":' * depth + "1" + "}" * depth

    # -- updates -------------------------------------------------------------------------------
    def _struct(self, w: Writer) -> None:
        kind = self.rng.choice([STRING, STRING, ANY, ANY, JSON_, BINARY, EMBED, FORMAT, TYPE, DOC, DELETED, GC, SKIP])
        if kind in (GC, SKIP):
            w.u8(kind).var_uint(self._uint())
            return
        origin = self.rng.random() < 0.3
        right = self.rng.random() < 0.2
        sub = not (origin or right) and self.rng.random() < 0.5
        w.u8(kind | (128 if origin else 0) | (64 if right else 0) | (32 if sub else 0))
        if origin:
            w.var_uint(self._uint()).var_uint(self._uint())
        if right:
            w.var_uint(self._uint()).var_uint(self._uint())
        if not (origin or right):
            if self.rng.random() < 0.8:
                w.var_uint(1).var_string(self.rng.choice(["content", "m", "requests", "suggestions", self._text()]))
            else:
                w.var_uint(0).var_uint(self._uint()).var_uint(self._uint())
            if sub:
                w.var_string(self.rng.choice(["k", "status", self._text()]))
        if kind == STRING:
            w.var_string(self._text())
        elif kind == ANY:
            w.var_uint(1)
            self._any(w, self._depth())
        elif kind == JSON_:
            w.var_uint(1).var_string(self._json())
        elif kind in (BINARY,):
            w.var_bytes(self._text().encode("utf-8", "replace"))
        elif kind == EMBED:
            w.var_string(self._json())
        elif kind == FORMAT:
            w.var_string(self.rng.choice(["bold", "x" * 300])).var_string(self._json())
        elif kind == TYPE:
            ref = self.rng.randrange(0, 8)
            w.var_uint(ref)
            if ref in (3, 5):
                w.var_string(self._text())
        elif kind == DOC:
            w.var_string(self._text())
            self._any(w, self._depth())
        elif kind == DELETED:
            w.var_uint(self._uint())

    def update(self) -> bytes:
        w = Writer()
        groups = self.rng.choice([0, 1, 1, 2, 5, 1200])
        w.var_uint(groups)
        for _ in range(groups):
            n = self.rng.choice([1, 1, 2, 10]) if groups < 100 else 1
            w.var_uint(n).var_uint(self._uint()).var_uint(self._uint())
            for _ in range(n):
                self._struct(w)
        deletes = self.rng.choice([0, 0, 1, 3, 1100])
        w.var_uint(deletes)
        for _ in range(deletes):
            ranges = self.rng.choice([1, 2, 50])
            w.var_uint(self._uint()).var_uint(ranges)
            for _ in range(ranges):
                w.var_uint(self._uint()).var_uint(self._uint())
        data = w.to_bytes()
        if self.rng.random() < 0.05:
            data = data[: self.rng.randrange(0, len(data) + 1)]  # truncated
        return data

    def awareness(self) -> bytes:
        w = Writer()
        n = self.rng.choice([1, 1, 3, 20, 500])
        w.var_uint(n)
        for _ in range(n):
            w.var_uint(self._uint()).var_uint(self._uint())
            r = self.rng.random()
            if r < 0.3:
                state = '{"user":{"name":"x","cursor":NaN}}'
            elif r < 0.5:
                state = self._json()
            elif r < 0.6:
                state = "null"
            else:
                state = json.dumps({"user": {"name": self._text()[:200]}})
            w.var_string(state)
        return w.to_bytes()

    def case(self) -> Case:
        r = self.rng.random()
        if r < 0.55:
            return Case("update", b"\x00\x02" + Writer().var_bytes(self.update()).to_bytes())
        if r < 0.7:
            return Case("step2", b"\x00\x01" + Writer().var_bytes(self.update()).to_bytes())
        if r < 0.9:
            return Case("awareness", b"\x01" + Writer().var_bytes(self.awareness()).to_bytes())
        if r < 0.97:
            sv = Writer().var_uint(1).var_uint(self._uint()).var_uint(self._uint()).to_bytes()
            return Case("step1", b"\x00\x00" + Writer().var_bytes(sv).to_bytes())
        return Case("garbage", bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 40))))


@dataclass
class FuzzReport:
    cases: int = 0
    by_kind: dict | None = None
    close_codes: dict | None = None
    failures: list | None = None

    def __post_init__(self) -> None:
        self.by_kind, self.close_codes, self.failures = {}, {}, []


async def attack(ws_url: str, doc_id: str, tokens: dict[str, str | None], n: int, seed: int = 0,
                 check_every: int = 250, check=None, stop_on_failure: bool = True) -> FuzzReport:
    """Send ``n`` hostile cases to ``doc_id``, round-robin over ``tokens`` (role -> token), each
    on the open socket until the hub closes it (then a new one). Every ``check_every`` cases
    ``await check()`` looks at the hub (healthy, control text intact, loads in yjs) and returns a
    list of failures (empty: fine)."""
    gen = HostileInput(seed)
    report = FuzzReport()
    roles = list(tokens)
    sockets: dict[str, object] = {}

    async def socket(role: str):
        ws = sockets.get(role)
        if ws is None or ws.close_code is not None:
            if ws is not None:
                report.close_codes[ws.close_code] = report.close_codes.get(ws.close_code, 0) + 1
            token = tokens[role]
            url = f"{ws_url}/{doc_id}" + (f"?token={token}" if token else "")
            ws = sockets[role] = await connect(url, max_size=None, compression=None, max_queue=None)
        return ws

    async def drain(ws) -> None:
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 0.001)
        except (asyncio.TimeoutError, websockets.ConnectionClosed):
            pass

    try:
        for i in range(n):
            case = gen.case()
            role = roles[i % len(roles)]
            report.cases += 1
            report.by_kind[case.kind] = report.by_kind.get(case.kind, 0) + 1
            ws = await socket(role)
            try:
                await ws.send(case.frame)
            except websockets.ConnectionClosed:
                pass
            await drain(ws)
            if check is not None and (i + 1) % check_every == 0:
                found = await check()
                report.failures += [f"after case {i + 1}: {f}" for f in found]
                if found and stop_on_failure:
                    break
    finally:
        for ws in sockets.values():
            await ws.close()
    return report


def load_in_yjs(js_dir, state: bytes) -> str:
    """The text a stock ``yjs`` Y.Doc holds after ``Y.applyUpdate(state)`` (node, ``js_dir`` with
    yjs installed and ``loadstate.mjs``); raises if yjs cannot load it."""
    import base64
    import subprocess
    from pathlib import Path

    out = subprocess.run(["node", str(Path(js_dir) / "loadstate.mjs")], input=base64.b64encode(state).decode(),
                         capture_output=True, text=True, timeout=60, cwd=js_dir)
    if out.returncode != 0:
        raise RuntimeError(f"yjs could not load the hub's state: {out.stderr[-500:]}")
    return json.loads(out.stdout)["text"]


def hub_checker(http_url: str, ws_url: str, doc_id: str, control: str, js_dir):
    """``check()`` for :func:`attack`: the hub answers /healthz, the control text is intact,
    and the document's state loads in a stock yjs client with the same text pycrdt sees."""
    import urllib.request

    from .client import HubClient

    async def check() -> list[str]:
        problems = []
        try:
            with urllib.request.urlopen(f"{http_url}/healthz", timeout=10) as r:
                if json.load(r)["status"] != "running":
                    problems.append("hub not running")
        except OSError as exc:
            return [f"hub unreachable: {exc}"]
        try:
            async with HubClient(ws_url, doc_id) as c:
                await c.synced(30)
                text, state = str(c.text), c.doc.get_update()
        except (asyncio.TimeoutError, OSError) as exc:
            return [*problems, f"a new client could not load the document ({type(exc).__name__}): "
                               "the hub holds state a fresh pycrdt doc cannot apply"]
        if control not in text:
            problems.append(f"control text lost: {text[:100]!r}")
        try:
            if (await asyncio.to_thread(load_in_yjs, js_dir, state)) != text:
                problems.append("yjs reads another text than pycrdt")
        except RuntimeError as exc:
            problems.append(str(exc))
        return problems

    return check
