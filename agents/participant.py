"""The agent as a collaborator: a Yjs peer that joins the document, shows a presence and writes.

One :class:`Participant` per run attempt. It connects through the hub like any browser (its own
Yjs client id, an ``agent``-role token whose ``meta`` the hub logs with every update), generates
with the inference engine in a thread, and writes word-sized updates as they come.

Where the text goes stays right while people type around it: every write resolves a Yjs relative
position first — the request's anchor/range for the first write, then "just after our own last
character" (built from our client id and clock) for every later one.

Exactly once across crashes: each write is one transaction that inserts the text *and* records,
in the document's ``agent_runs`` map, the span the run has written so far (relative positions of
its first and last character). The hub commits that update atomically, so the document always
knows exactly what a dead attempt left behind. A redelivered attempt removes that span in the
same transaction as its own first write (replacement, never duplication), and a run the map
already marks done is not written again. Suggestions are keyed by the run id, so a later attempt
overwrites rather than adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from typing import Any, Iterator

import websockets
from pycrdt import Doc, Map, Text

from collab.client import HubClient
from collab.exceptions import LimitExceeded
from collab.limits import to_py_within

from .anchors import RelPos, byte_index, item_position, resolve, state_vector, utf16_len
from .exceptions import HubUnreachable, ModelFailed, RunCancelled, RunLeased, RunRefused
from .prompts import Edit, Mode, Task, build_request
from .runs import RunStatus, RunStore
from .token_view import score_run

__all__ = ["Participant", "AGENT_RUNS", "SUGGESTIONS", "light", "compose"]

log = logging.getLogger("tinymorph.agents.participant")

AGENT_RUNS = "agent_runs"
SUGGESTIONS = "suggestions"
#: Minimum time between two writes: word-sized updates, not one per token.
FLUSH_EVERY_S = 0.15


def light(color: str) -> str:
    """y-codemirror's ``colorLight``: the colour at 20% opacity."""
    return color + "33"


#: Where a sentence ends: terminal punctuation (and closing quotes or brackets) before a space.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
_FINAL_END = re.compile(r"[.!?…]+[\"'”’)\]]*$")


class _Cut:
    """A co-writer writes whole sentences of one paragraph.

    * It stops at the first blank line *after* some text. A plain ``stop=["\\n\\n"]`` ended runs
      before they began whenever the model opened a new paragraph after a full stop (about a
      third of the seeds on "…end."); leading blank lines are kept back and written only once
      text follows them.
    * A paragraph break before ``min_tokens`` is a space: the paragraph goes on.
    * Text is released a sentence at a time, and once ``budget`` tokens are out the run ends at
      the next sentence end (the request allows some tokens more for that). What is left after
      the last sentence end when generation stops is dropped: half a sentence reads as a
      glitch. Only when nothing ended a sentence at all is the text kept as it is.
    """

    def __init__(self, budget: int | None = None, min_tokens: int = 0) -> None:
        self.buf = ""
        self.sent = 0
        self.done = False
        self.budget = budget
        self.min_tokens = min_tokens
        self.tokens = 0

    def feed(self, piece: str, tokens: int = 0) -> str:
        self.buf += piece
        self.tokens += tokens
        lead = len(self.buf) - len(self.buf.lstrip())
        if lead == len(self.buf):
            return ""  # only whitespace so far: hold it
        para = self.buf.find("\n\n", lead)
        while para >= 0 and self.tokens < self.min_tokens:
            # a paragraph break before the run's minimum length: one sentence is no continuation
            # ("She walked up to the ship's bridge."), so the paragraph goes on
            end = para
            while end < len(self.buf) and self.buf[end] == "\n":
                end += 1
            self.buf = self.buf[:para] + " " + self.buf[end:]
            para = self.buf.find("\n\n", lead)
        if para >= 0:
            self.done = True
            end = self._last_end(lead, para, final=True)
            return self._take(end if end > self.sent else (para if self.sent == 0 else self.sent))
        end = self._last_end(lead, len(self.buf))
        if end > self.sent and self.budget is not None and self.tokens >= self.budget:
            self.done = True
        return self._take(end)

    def flush(self) -> str:
        """At the end of generation (not after a cut: the rest is the next paragraph)."""
        if self.done or not self.buf.strip():
            return ""
        stripped = len(self.buf.rstrip())
        end = self._last_end(0, stripped, final=True)
        return self._take(end if end > self.sent else (stripped if self.sent == 0 else self.sent))

    def _last_end(self, lo: int, hi: int, final: bool = False) -> int:
        """The end of the last sentence within ``buf[lo:hi]`` (``final``: ``hi`` ends the text)."""
        region = self.buf[lo:hi]
        if final:
            m = _FINAL_END.search(region.rstrip())
            if m:
                return lo + m.end()
        ends = [m.end() for m in _SENTENCE_END.finditer(region)]
        return lo + ends[-1] if ends else 0

    def _take(self, upto: int) -> str:
        out = self.buf[self.sent : upto] if upto > self.sent else ""
        self.sent = max(self.sent, upto)
        return out


def compose(engine: Any, request: Any, budget: int | None = None,
            stop: threading.Event | None = None) -> Iterator[str]:
    """The text a run writes, piece by piece, as it is generated: the engine's stream cut to
    what a co-writer keeps (``_Cut``; ``budget``: the tokens asked for, the request allowing a
    few more to finish a sentence). Runs and ``tinymorph eval writing`` both write through this."""
    stream = engine.stream(request, engine.prepare(request))
    cut = _Cut(budget, request.params.min_tokens)
    try:
        for event in stream:
            if stop is not None and stop.is_set():
                break
            if event.text or event.token_ids:
                out = cut.feed(event.text, len(event.token_ids))
                if out:
                    yield out
                if cut.done:
                    break
        rest = cut.flush()
        if rest:
            yield rest
    finally:
        stream.close()


class _Chunker:
    """Buffers streamed text and releases whole words (never a trailing space, so a replacement
    does not end in whitespace the model emitted before its last word)."""

    def __init__(self) -> None:
        self.buf = ""

    def add(self, piece: str) -> None:
        self.buf += piece

    def words(self) -> str:
        j = len(self.buf)
        while j > 0 and not (self.buf[j - 1].isspace() and (j < 2 or not self.buf[j - 2].isspace())):
            j -= 1
        if j <= 1:
            return ""
        out, self.buf = self.buf[: j - 1], self.buf[j - 1:]
        return out

    def rest(self) -> str:
        out, self.buf = self.buf.rstrip(), ""
        return out


class Participant:
    def __init__(self, run: dict[str, Any], *, ws_url: str, token: str, engine: Any, runs: RunStore,
                 owner: str, heartbeat_s: float = 0.25) -> None:
        self.run_row = run
        self.run_id: str = run["id"]
        self.params: dict[str, Any] = run["params"]
        self.persona: dict[str, Any] = self.params["persona"]
        self.task = Task(run["task"])
        self.mode = Mode(run["mode"])
        self.edit = self.task.edit
        if self.edit is Edit.APPEND and self.mode is Mode.SUGGEST:
            self.edit = Edit.NOTE  # a suggested definition is an inline note, not a text edit
        self.to_suggestion = self.mode is Mode.SUGGEST or self.edit is Edit.NOTE
        self.engine = engine
        self.runs = runs
        self.owner = owner
        self.heartbeat_s = heartbeat_s
        self.client = HubClient(ws_url, run["doc_id"], token=token, presence=self._presence("thinking"))
        self._stop = threading.Event()
        self._cancelled = False
        self._lost = False
        self.written = ""  # this attempt's text so far
        self._start: RelPos | None = None
        self._end: RelPos | None = None
        self._queue: asyncio.Queue | None = None  # the writer's: generated text, end, error, stop

    # -- presence -------------------------------------------------------------------------
    def _presence(self, status: str, cursor: dict | None = None) -> dict[str, Any]:
        color = self.persona.get("color") or "#0f766e"
        return {"user": {"name": self.persona["name"], "color": color, "colorLight": light(color), "kind": "agent",
                         "agent_id": self.persona["id"], "run_id": self.run_id},
                "cursor": cursor, "status": status}

    def _set_presence(self, status: str, at: RelPos | None = None, head: RelPos | None = None) -> None:
        cursor = {"anchor": at, "head": head or at} if at is not None else None
        self.client.set_presence(self._presence(status, cursor))

    # -- the run ------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        try:
            await self.client.connect()
        except (OSError, websockets.InvalidHandshake, asyncio.TimeoutError) as exc:
            raise HubUnreachable(f"cannot reach the hub at {self.client.url.split('?')[0]}: {exc}") from None
        try:
            synced = asyncio.ensure_future(self.client.synced(timeout=30))
            closed = asyncio.ensure_future(self.client.wait_closed(timeout=30))
            await asyncio.wait([synced, closed], return_when=asyncio.FIRST_COMPLETED)
            for t in (synced, closed):
                t.cancel()
            if self.client.close_code is not None:
                raise RunRefused(f"the hub refused the agent ({self.client.close_code} {self.client.close_reason})")
            if not synced.done() or synced.cancelled() or synced.exception():
                raise HubUnreachable("the hub did not sync the document in time")
            return await self._work()
        finally:
            self._stop.set()
            with contextlib.suppress(Exception):
                await self.client.close()

    async def _work(self) -> dict[str, Any]:
        doc = self.client.doc
        previous = self._entry(doc)
        if previous and previous.get("status") == "done":
            log.info("run %s: the document already has its text (a redelivery); finishing", self.run_id)
            return {"recovered": True, **(previous.get("result") or {})}
        prompt = self.params.get("prompt")
        if prompt is None:
            prompt = self._freeze_prompt(doc)
            await asyncio.to_thread(self.runs.update_params, self.run_id, prompt=prompt)
        request = build_request(prompt, self.params.get("steering") or [])
        self._set_presence("thinking", *self._cursor_for_request(doc))

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._queue = queue
        gen = threading.Thread(target=self._generate, args=(request, int(prompt["max_tokens"]), loop, queue),
                               daemon=True,
                               name=f"generate-{self.run_id[:8]}")
        gen.start()
        beat = asyncio.ensure_future(self._heartbeat())
        chunker, first, last_flush = _Chunker(), True, 0.0
        try:
            while True:
                kind, value = await queue.get()
                if kind == "error":
                    raise value
                if self._lost:
                    raise RunLeased("another attempt took this run over")
                if self._cancelled:
                    break
                if kind == "end":
                    break
                chunker.add(value)
                if time.monotonic() - last_flush >= FLUSH_EVERY_S:
                    words = chunker.words()
                    if words:
                        await self._write(doc, words, first=first)
                        if first:
                            first = False
                            await asyncio.to_thread(self.runs.transition, self.run_id, RunStatus.STREAMING,
                                                    owner=self.owner)
                        last_flush = time.monotonic()
            if self._cancelled:
                self._mark(doc, "cancelled")
                await self.client.flush()
                raise RunCancelled("cancelled")
            await self._write(doc, chunker.rest(), first=first, final=True)
            result = self._result()
            view = await asyncio.to_thread(self._token_view, request)
            if view is not None:
                result["token_view"] = view
            return result
        finally:
            self._stop.set()
            beat.cancel()
            await asyncio.to_thread(gen.join, 5)

    # -- generation (a thread: llama.cpp blocks) ----------------------------------------------
    def _generate(self, request: Any, budget: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        def put(kind: str, value: Any = None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        try:
            from inference.exceptions import InferenceError
        except ImportError:  # pragma: no cover
            InferenceError = Exception  # type: ignore[misc,assignment]  # noqa: N806
        try:
            for piece in compose(self.engine, request, budget, self._stop):
                put("text", piece)
            put("end")
        except InferenceError as exc:
            put("error", ModelFailed(f"the model call failed: {getattr(exc, 'message', exc)}"))
        except Exception as exc:  # noqa: BLE001 - any engine crash fails the run with its reason
            log.exception("run %s: generation crashed", self.run_id)
            put("error", ModelFailed(f"the model call failed: {type(exc).__name__}: {exc}"))

    def _token_view(self, request: Any) -> dict[str, Any] | None:
        """The written text's per-token scores (``token_view``). A failure here costs only the
        view: the text is in the document and the run is done, so it is logged, not raised."""
        try:
            return score_run(self.engine, request, self.written)
        except Exception:  # noqa: BLE001 - e.g. a backend that does not score prompts (vLLM)
            log.warning("run %s: no token view", self.run_id, exc_info=True)
            return None

    async def _heartbeat(self) -> None:
        """Renew the lease and notice cancellation: the writer stops within one beat, even while
        the model is slow to produce its next token, and generation at that token. Also renew
        the presence every 10 s, as y-protocols clients do: others drop a presence after 30 s of
        silence (a first run may think that long while a steering vector is built)."""
        renewed = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - renewed > 10:
                self.client.set_presence(self.client.awareness.get_local_state())
                renewed = time.monotonic()
            try:
                still, cancel = await asyncio.to_thread(self.runs.heartbeat, self.run_id, self.owner)
            except Exception:  # noqa: BLE001 - a busy database delays a beat, it does not end the run
                log.warning("run %s: heartbeat failed", self.run_id, exc_info=True)
                still, cancel = True, False
            if cancel or not still:
                self._cancelled, self._lost = cancel, not still
                self._stop.set()
                if self._queue is not None:  # wake the writer now, not when the next token comes
                    self._queue.put_nowait(("stop", None))
                return
            await asyncio.sleep(self.heartbeat_s)

    # -- reading the document -----------------------------------------------------------------
    def _entry(self, doc: Doc) -> dict[str, Any] | None:
        value = doc.get(AGENT_RUNS, type=Map).get(self.run_id)
        try:
            value = to_py_within(value)
        except LimitExceeded:
            return None  # a hostile entry: not a run entry this agent can read
        return value if isinstance(value, dict) else None

    def _range(self, doc: Doc) -> tuple[int, int]:
        rng = self.params["range"]
        a, b = resolve(doc, rng["from"]), resolve(doc, rng["to"])
        return min(a, b), max(a, b)

    def _anchor_index(self, doc: Doc) -> int:
        anchor = self.params.get("anchor")
        if anchor is None:
            return len(str(doc.get("content", type=Text)))
        return resolve(doc, anchor)

    def _freeze_prompt(self, doc: Doc) -> dict:
        from .prompts import build_prompt

        s = str(doc.get("content", type=Text))
        if self.task.needs_range:
            lo, hi = self._range(doc)
            before, selected = s[:lo], s[lo:hi]
        else:
            before, selected = s[: self._anchor_index(doc)], ""
        options = self.params.get("options") or {}
        return build_prompt(self.task, self.persona.get("prompt", ""), before, selected, options, self.run_id).to_json()

    def _cursor_for_request(self, doc: Doc) -> tuple[RelPos | None, RelPos | None]:
        if self.task.needs_range:
            return self.params["range"]["from"], self.params["range"]["to"]
        return self.params.get("anchor") or {"tname": "content", "assoc": 0}, None

    # -- writing ------------------------------------------------------------------------------
    async def _write(self, doc: Doc, words: str, *, first: bool, final: bool = False) -> None:
        if self.to_suggestion:
            self._write_suggestion(doc, words, first=first, final=final)
        else:
            self._write_text(doc, words, first=first, final=final)
        await self.client.flush()

    def _write_text(self, doc: Doc, words: str, *, first: bool, final: bool) -> None:
        text = doc.get("content", type=Text)
        me = doc.client_id
        s = str(text)
        if first:
            previous = self._entry(doc)
            with doc.transaction():
                if previous and previous.get("start") and previous.get("end"):
                    # a dead attempt's text: replace it (its range was already replaced with it)
                    lo, hi = resolve(doc, previous["start"]), resolve(doc, previous["end"])
                    at = min(lo, hi)
                    if hi > lo:
                        del text[byte_index(s, lo):byte_index(s, hi)]
                elif self.edit is Edit.REPLACE:
                    lo, hi = self._range(doc)
                    if hi > lo:
                        del text[byte_index(s, lo):byte_index(s, hi)]
                    at = lo
                elif self.edit is Edit.APPEND:
                    at = self._range(doc)[1]
                else:
                    at = self._anchor_index(doc)
                s = str(text)
                words = self._lead(s, at, words)
                if final and self.edit is Edit.APPEND:
                    words += ")"
                if not words:
                    self._mark(doc, "done" if final else "writing")
                    return
                clock = state_vector(doc).get(me, 0)
                text.insert(byte_index(s, at), words)
                self._start = item_position(me, clock, 0)
                self._end = item_position(me, clock + utf16_len(words) - 1, -1)
                self.written += words
                self._mark(doc, "done" if final else "writing")
        else:
            if final and self.edit is Edit.APPEND:
                words += ")"
            if not words and not final:
                return
            with doc.transaction():
                if words:
                    at = resolve(doc, self._end)
                    clock = state_vector(doc).get(me, 0)
                    text.insert(byte_index(s, at), words)
                    self._end = item_position(me, clock + utf16_len(words) - 1, -1)
                    self.written += words
                self._mark(doc, "done" if final else "writing")
        self._set_presence("done" if final else "writing", self._end)

    def _lead(self, s: str, at: int, words: str) -> str:
        """Spacing at the seam: a continuation after a word needs a space, after a space none."""
        if self.edit is Edit.APPEND:
            return " (" + words.lstrip()
        if self.edit is Edit.REPLACE:
            return words.lstrip()
        prev = s[at - 1] if at > 0 else ""
        if not prev or prev.isspace():
            return words.lstrip(" ")
        if words and not words[0].isspace() and words[0] not in ".,;:!?)'\"’":
            return " " + words
        return words

    def _write_suggestion(self, doc: Doc, words: str, *, first: bool, final: bool) -> None:
        suggestions = doc.get(SUGGESTIONS, type=Map)
        self.written = (self.written + words) if self.written else words.lstrip()
        text = self.written.rstrip() if final else self.written
        with doc.transaction():
            entry = suggestions.get(self.run_id)
            if first or not isinstance(entry, Map):
                if self.task.needs_range:
                    frm, to = self.params["range"]["from"], self.params["range"]["to"]
                else:
                    frm = to = self.params.get("anchor") or {"tname": "content", "assoc": 0}
                kind = {Task.MARGIN_NOTE: "margin_note", Task.DEFINE: "define"}.get(self.task, self.task.value)
                fields = {"kind": kind, "from": frm, "to": to, "text": text, "agent": self.persona["name"],
                          "agent_id": self.persona["id"], "run_id": self.run_id, "status": "pending",
                          "model": self.params.get("model", ""), "requested_by": self.run_row.get("requested_by", ""),
                          "streaming": not final}
                if self.edit is Edit.NOTE:
                    fields["note"] = text
                if isinstance(entry, Map):  # a redelivered attempt: overwrite its own suggestion
                    for k, v in fields.items():
                        entry[k] = v
                else:
                    suggestions[self.run_id] = Map(fields)
            else:
                entry["text"] = text
                if self.edit is Edit.NOTE:
                    entry["note"] = text
                if final:
                    entry["streaming"] = False
            self._mark(doc, "done" if final else "writing")
        frm, to = self._cursor_for_request(doc)
        self._set_presence("done" if final else "writing", frm, to)

    def _mark(self, doc: Doc, status: str) -> None:
        """Record this run's state (and written span) in the document, inside the caller's
        transaction, so text and bookkeeping commit as one update."""
        entry: dict[str, Any] = {"status": status, "agent": self.persona["id"], "task": self.task.value,
                                 "mode": self.mode.value}
        if self._start is not None:
            entry["start"], entry["end"] = self._start, self._end
        if self.to_suggestion:
            entry["suggestion"] = self.run_id
        if status == "done":
            entry["result"] = self._result()
        doc.get(AGENT_RUNS, type=Map)[self.run_id] = entry

    def _result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"chars": len(self.written), "text": self.written[:2000]}
        if self.to_suggestion:
            out["suggestion_id"] = self.run_id
        return out
