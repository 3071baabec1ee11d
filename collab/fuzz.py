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

from .exceptions import ProtocolError
from .lib0 import MAX_SAFE_INTEGER, Writer
from .limits import UpdateLimits, check_update

__all__ = ["Case", "HostileInput", "FuzzReport", "HubCheck", "attack", "fuzz_hub", "load_in_yjs", "CONTROL"]

QUERY_AWARENESS = b"\x03"
CONTROL = "The control paragraph must survive every case."
STRING, ANY, JSON_, BINARY, EMBED, FORMAT, TYPE, DOC, DELETED, GC, SKIP = 4, 8, 2, 3, 5, 6, 7, 9, 1, 0, 10


@dataclass(frozen=True)
class Case:
    """One websocket message and what kind of hostility it carries (for the report)."""

    kind: str
    frame: bytes


class HostileInput:
    """Hostile messages, deterministic for a seed. Half the updates are *causal*: written by a
    few client ids of its own, each starting where that client's last accepted-looking update
    ended and pointing at items it wrote before, so that they pass the hub's structural and gap
    checks and reach pycrdt's integration code (the rest mostly meet the checks)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.clocks = {self.rng.randrange(1, 1 << 31): 0 for _ in range(4)}  # client id -> next clock
        self.items: list[tuple[int, int]] = []  # (client, clock) of items written causally
        self._shallow = False
        self._before: tuple[dict, list] | None = None

    # -- numbers and strings on the edges ----------------------------------------------------
    def _uint(self) -> int:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.randrange(0, 64)
        if r < 0.8:
            return self.rng.randrange(0, 1 << 32)
        return self.rng.choice([MAX_SAFE_INTEGER, MAX_SAFE_INTEGER - 1, 1 << 52, (1 << 32) - 1, 1 << 32])

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
        if self._shallow:
            return self.rng.choice([0, 1, 3, 10, 63])
        return self.rng.choice([0, 1, 3, 10, 63, 64, 65, 200, 5_000, 30_000, 60_000])

    def _json(self) -> str:
        depth = self._depth()
        if self.rng.random() < 0.3:
            return "[" * depth + "]" * depth
        return json.dumps({"v": self.rng.choice([1, "s", None, True])}) if depth < 3 else \
            '{"a":' * depth + "1" + "}" * depth

    # -- updates -------------------------------------------------------------------------------
    def _id(self) -> tuple[int, int]:
        """An item id: one written before (causal updates) or anything."""
        if self.items and self.rng.random() < 0.7:
            return self.rng.choice(self.items)
        return self._uint(), self._uint()

    def _struct(self, w: Writer, causal: bool = False) -> None:
        kinds = [STRING, STRING, ANY, ANY, JSON_, BINARY, EMBED, FORMAT, TYPE, DOC, DELETED]
        kind = self.rng.choice(kinds if causal else [*kinds, GC, SKIP])
        if kind in (GC, SKIP):
            w.u8(kind).var_uint(self._uint())
            return
        refs = not causal or bool(self.items)  # causal structs name only items written before
        origin = refs and self.rng.random() < (0.5 if causal else 0.3)
        right = refs and self.rng.random() < 0.2
        sub = not (origin or right) and self.rng.random() < 0.5
        w.u8(kind | (128 if origin else 0) | (64 if right else 0) | (32 if sub else 0))
        for present in (origin, right):
            if present:
                client, clock = self.rng.choice(self.items) if causal else self._id()
                w.var_uint(client).var_uint(clock)
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

    def causal_update(self) -> bytes:
        """Structs of one of our clients, gap-free from its last clock, pointing at earlier items."""
        client = self.rng.choice(list(self.clocks))
        w = Writer().var_uint(1)
        n = self.rng.choice([1, 1, 2, 5])
        w.var_uint(n).var_uint(client).var_uint(self.clocks[client])
        self._shallow = True  # values within the depth limit: the point is to reach pycrdt
        for _ in range(n):
            self._struct(w, causal=True)
        if self.rng.random() < 0.7:
            w.var_uint(0)  # no deletions
        else:  # delete a few of this client's own characters, written or not
            w.var_uint(1).var_uint(client).var_uint(1)
            w.var_uint(self.rng.randrange(0, self.clocks[client] + 1)).var_uint(self.rng.randrange(1, 4))
        self._shallow = False
        data = w.to_bytes()
        self._before = dict(self.clocks), list(self.items)
        try:
            ranges = check_update(data, UpdateLimits()).ranges
        except ProtocolError:
            return data  # refused by the checks: the hub never sees it, so the clock stays
        for c, start, end in ranges:
            self.items += [(c, start), (c, end - 1)]
            self.clocks[c] = max(self.clocks.get(c, 0), end)
        del self.items[:-64]
        return data

    @property
    def causal(self) -> bool:
        """Whether the last case was a causal update (whose acceptance moves our clocks)."""
        return self._before is not None

    def refused(self) -> None:
        """The hub refused the last case: if it was causal, its clocks never happened."""
        if self._before is not None:
            self.clocks, self.items = self._before
            self._before = None

    def update(self) -> bytes:
        self._before = None
        if self.rng.random() < 0.5:
            return self.causal_update()
        w = Writer()
        groups = self.rng.choice([0, 1, 1, 2, 5] * 6 + [1200])
        w.var_uint(groups)
        for _ in range(groups):
            n = self.rng.choice([1, 1, 2, 10]) if groups < 100 else 1
            w.var_uint(n).var_uint(self._uint()).var_uint(self._uint())
            for _ in range(n):
                self._struct(w)
        deletes = self.rng.choice([0, 0, 1, 3] * 6 + [1100])
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
        self._before = None
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
    #: Causal updates the hub took (past every check, into pycrdt and the log).
    reached: int = 0

    def __post_init__(self) -> None:
        self.by_kind, self.close_codes, self.failures = {}, {}, []


async def attack(ws_url: str, docs: list[tuple[str, dict[str, str | None]]], n: int, seed: int = 0,
                 check_every: int = 250, check=None, stop_on_failure: bool = True, block: int = 25) -> FuzzReport:
    """Send ``n`` hostile cases over one lane per ``(doc_id, tokens)`` of ``docs``, concurrently
    (lanes hide the round trips of reconnects). A lane has its own generator (seeded from
    ``seed``) and one socket at a time, as each role of ``tokens`` (role -> token) in turn for
    ``block`` cases or until the hub closes it. After each case the lane waits for the hub's
    verdict on it (see ``barrier``). Every ``check_every`` cases ``await check()`` looks at the
    hub (healthy, control text intact, loads in yjs) and returns a list of failures. The cases
    are the same for a seed; how the lanes interleave is not."""
    report = FuzzReport()
    done = asyncio.Event()
    counter = 0

    async def barrier(ws, settle: float = 0.0) -> None:
        """Ask for presence and read until its answer: the hub handles a socket's messages in
        order, so by then it has taken (or refused, closing the socket) the case before. Only
        the lane's own socket is in its document, so no one else's presence comes between;
        ``settle``: then read on until the socket is quiet that long (a new socket's welcome)."""
        try:
            await ws.send(QUERY_AWARENESS)
            while (await asyncio.wait_for(ws.recv(), 10))[:1] != b"\x01":
                pass
            while settle:
                await asyncio.wait_for(ws.recv(), settle)
        except (asyncio.TimeoutError, websockets.ConnectionClosed, OSError):
            pass

    async def lane(k: int, doc_id: str, tokens: dict[str, str | None]) -> None:
        nonlocal counter
        gen = HostileInput(seed * 7919 + k)
        roles, ws, role, used = list(tokens), None, None, 0
        try:
            for i in range(k, n, len(docs)):
                if done.is_set():
                    return
                if ws is None or ws.close_code is not None or used >= block:
                    if ws is not None:
                        await ws.close()
                        report.close_codes[ws.close_code] = report.close_codes.get(ws.close_code, 0) + 1
                    role = roles[(i // block) % len(roles)]
                    token = tokens[role]
                    url = f"{ws_url}/{doc_id}" + (f"?token={token}" if token else "")
                    ws = await connect(url, max_size=None, compression=None, max_queue=None)
                    used = 0
                    await barrier(ws, settle=0.02)
                case = gen.case()
                used += 1
                report.cases += 1
                report.by_kind[case.kind] = report.by_kind.get(case.kind, 0) + 1
                try:
                    await ws.send(case.frame)
                except (websockets.ConnectionClosed, OSError):
                    pass
                await barrier(ws)  # the verdict on it: the socket for the next case, our clocks
                if ws.close_code is not None or role == "viewer":
                    gen.refused()
                elif gen.causal:
                    report.reached += 1
                counter += 1
                if check is not None and counter % check_every == 0:
                    found = await check()
                    report.failures += [f"after {counter} cases: {f}" for f in found]
                    if found and stop_on_failure:
                        done.set()
        finally:
            if ws is not None:
                await ws.close()

    await asyncio.gather(*(lane(k, doc_id, tokens) for k, (doc_id, tokens) in enumerate(docs)))
    if check is not None and not done.is_set():
        report.failures += [f"at the end: {f}" for f in await check()]
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


class HubCheck:
    """``check()`` for :func:`attack`: the hub answers /healthz, and in each document the control
    text is intact, as pycrdt and as a stock yjs client read it, and the state loads in yjs.

    Where the two read different texts otherwise, that goes to ``divergences``, not failures:
    yrs and yjs integrate some hostile structs differently (an item whose origin lies in another
    type, say); every reader still loads the document and the control text, and what differs is
    only what the hostile editor wrote, which an editor may write anyway."""

    def __init__(self, http_url: str, ws_url: str, doc_ids: list[str], control: str, js_dir) -> None:
        self.http_url, self.ws_url, self.doc_ids, self.control, self.js_dir = http_url, ws_url, doc_ids, control, js_dir
        self.divergences: list[str] = []

    async def __call__(self) -> list[str]:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.http_url}/healthz", timeout=10) as r:
                if json.load(r)["status"] != "running":
                    return ["hub not running"]
        except OSError as exc:
            return [f"hub unreachable: {exc}"]
        return [f"{doc_id}: {p}" for doc_id in self.doc_ids for p in await self.check_doc(doc_id)]

    async def check_doc(self, doc_id: str) -> list[str]:
        from .client import HubClient

        try:
            async with HubClient(self.ws_url, doc_id) as c:
                await c.synced(30)
                text, state = str(c.text), c.doc.get_update()
        except (asyncio.TimeoutError, OSError) as exc:
            return [f"a new client could not load the document ({type(exc).__name__}): "
                    "the hub holds state a fresh pycrdt doc cannot apply"]
        try:
            in_yjs = await asyncio.to_thread(load_in_yjs, self.js_dir, state)
        except RuntimeError as exc:
            return [str(exc)]
        problems = [f"control text lost as {who} reads it: {t[:100]!r}"
                    for who, t in (("pycrdt", text), ("yjs", in_yjs)) if self.control not in t]
        if in_yjs != text and not problems:
            self.divergences.append(f"{doc_id}: yjs reads {len(in_yjs)} characters, pycrdt {len(text)}")
        return problems


async def fuzz_hub(hub, cases: int, js_dir, seed: int = 0, check_every: int = 2000,
                   lanes: int = 4) -> tuple[FuzzReport, list[str]]:
    """``cases`` hostile messages against a running hub (``collab.testing.HubProcess``): ``lanes``
    documents, each holding the control text and attacked as owner, editor, viewer and agent in
    turn, checked with :class:`HubCheck`. Returns the report and the checks' divergences."""
    from .client import HubClient

    docs = []
    for k in range(lanes):
        doc_id, owner = hub.create_doc(f"fuzzed {k}")
        docs.append((doc_id, {"owner": owner, "editor": hub.token(doc_id, "editor", "Eve"),
                              "viewer": hub.token(doc_id, "viewer", "Vic"), "agent": hub.token(doc_id, "agent", "Ada")}))
        async with HubClient(hub.ws_url, doc_id, token=owner) as control:
            await control.synced()
            control.text.insert(0, CONTROL)
            await control.flush()
    check = HubCheck(hub.url, hub.ws_url, [d for d, _ in docs], CONTROL, js_dir)
    return await attack(hub.ws_url, docs, cases, seed, check_every, check), check.divergences
