"""End to end: the browser app in frontend/ against a real hub, in Debian's Chromium.

A node process (frontend/tests/driver.mjs) drives Chromium through playwright-core and takes
commands as JSON lines; these tests script it, start real hubs (collab.testing.HubProcess), and
bring in agent peers over the real websocket (collab.client.HubClient) or run real agents from
the panel (the hub's embedded Celery worker and the bundled model). Waits are conditions
evaluated in the page, with generous timeouts; there are no sleeps. Screenshots go to
test-artifacts/frontend/.

Needs node, the npm packages in frontend/ (`npm ci` there) and /usr/bin/chromium: skipped without
them, except when CI=true, where that is a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from collab.testing import HubProcess

from agents_support import run_row

ROOT = Path(__file__).resolve().parent.parent
FRONTEND = ROOT / "frontend"
DIST = FRONTEND / "dist"
DRIVER = FRONTEND / "tests" / "driver.mjs"
ARTIFACTS = ROOT / "test-artifacts" / "frontend"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TIMEOUT = 45.0  # seconds for any one browser step; a loaded 2-core machine is slow, not broken

pytestmark = [pytest.mark.node, pytest.mark.browser]  # node + Chromium; see the module docstring


def _need(msg: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " — required when CI=true")
    pytest.skip(msg)


def _stale(out: Path, inputs: list[Path]) -> bool:
    if not out.exists():
        return True
    newest = max(p.stat().st_mtime for d in inputs for p in ([d] if d.is_file() else d.rglob("*")) if p.is_file())
    return newest > out.stat().st_mtime


@pytest.fixture(scope="session")
def frontend_dist() -> Path:
    """frontend/dist, built now if it is missing or older than its sources."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("the `node` executable")
    for pkg in ("playwright-core", "esbuild", "codemirror", "yjs"):
        if not (FRONTEND / "node_modules" / pkg / "package.json").is_file():
            missing.append(f"npm package {pkg!r} (run `cd frontend && npm ci`)")
    if not Path(CHROMIUM).is_file():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    if missing:
        _need("browser tests need " + ", ".join(missing))
    inputs = [FRONTEND / "src", FRONTEND / "index.html", FRONTEND / "build.mjs", FRONTEND / "package-lock.json"]
    if _stale(DIST / "assets" / "app.js", inputs):
        subprocess.run([node, "build.mjs"], cwd=FRONTEND, check=True, capture_output=True, timeout=300)
    return DIST


class Browser:
    """The driver process; `browser.open(name, url)` gives a Page (its own browser context)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["node", str(DRIVER)], cwd=FRONTEND, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                     env={**os.environ, "CHROMIUM": CHROMIUM})
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr.append), daemon=True).start()
        self._id = 0
        hello = self._next(90)
        assert hello.get("ready"), hello
        self.version = hello["version"]
        self.pages: dict[str, Page] = {}

    @staticmethod
    def _read(stream, sink) -> None:
        for line in stream:
            sink(line)
        sink(None)

    def _next(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"browser driver silent for {timeout:.0f}s; stderr: {''.join(self.stderr)[-2000:]}")
        if line is None:
            raise AssertionError(f"browser driver exited; stderr: {''.join(self.stderr)[-3000:]}")
        return json.loads(line)

    def cmd(self, cmd: str, timeout: float = TIMEOUT, **args):
        self._id += 1
        self.proc.stdin.write(json.dumps({"id": self._id, "cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        while True:
            msg = self._next(timeout + 15)
            if msg.get("id") == self._id:
                break
        if not msg["ok"]:
            raise AssertionError(f"{cmd} {json.dumps(args)[:300]}: {msg['error']}")
        return msg["result"]

    def open(self, name: str, url: str, init: str | None = None) -> "Page":
        self.cmd("open", name=name, url=url, init=init)
        self.pages[name] = Page(self, name)
        return self.pages[name]

    def close_pages(self) -> list[str]:
        """Close every page; returns the uncaught page errors they had."""
        problems = []
        for name in list(self.pages):
            errs = self.cmd("errors", name=name)
            problems += [f"{name}: {e}" for e in errs["errors"]]
            self.cmd("close", name=name)
        self.pages.clear()
        return problems

    def quit(self) -> None:
        try:
            self.cmd("quit", timeout=20)
        except AssertionError:
            pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Page:
    def __init__(self, browser: Browser, name: str) -> None:
        self.b, self.name = browser, name

    def eval(self, js: str, arg=None):
        return self.b.cmd("eval", name=self.name, js=js, arg=arg)

    def wait(self, js: str, arg=None, what: str = "", timeout: float = TIMEOUT):
        """Wait until `js` (a function of arg) is truthy in the page; returns its value."""
        try:
            return self.b.cmd("wait", timeout, name=self.name, js=js, arg=arg, ms=int(timeout * 1000))
        except AssertionError as exc:
            raise AssertionError(f"[{self.name}] waiting for {what or js}: {exc}") from None

    def visible(self, selector: str, timeout: float = TIMEOUT) -> None:
        self.b.cmd("waitSelector", timeout, name=self.name, selector=selector, ms=int(timeout * 1000))

    def click(self, selector: str) -> None:
        self.b.cmd("click", name=self.name, selector=selector)

    def fill(self, selector: str, value: str) -> None:
        self.b.cmd("fill", name=self.name, selector=selector, value=value)

    def focus(self, selector: str) -> None:
        self.b.cmd("focus", name=self.name, selector=selector)

    def type(self, text: str) -> None:
        self.b.cmd("type", name=self.name, text=text)

    def press(self, key: str) -> None:
        self.b.cmd("press", name=self.name, key=key)

    def screenshot(self, label: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{label}.png"
        self.b.cmd("screenshot", name=self.name, path=str(path))
        return path

    # -- the app ---------------------------------------------------------------------------------
    def text(self) -> str:
        return self.eval("() => window.tinymorph.editor.view.state.doc.toString()")

    def wait_text(self, predicate_js: str, arg=None, what: str = "text") -> str:
        return self.wait(f"(arg) => {{ const t = window.tinymorph?.editor?.view.state.doc.toString(); return t != null && ({predicate_js}) ? t : null }}", arg, what)

    def wait_contains(self, needle: str) -> str:
        return self.wait_text("t.includes(arg)", needle, f"the editor to contain {needle!r}")

    def wait_ready(self) -> None:
        """The document page is up and synced with the hub."""
        self.wait("() => document.querySelector('.conn')?.dataset.status === 'connected' && !!window.tinymorph?.editor",
                  what="the editor to connect and sync")

    def type_in_editor(self, text: str, at_end: bool = True) -> None:
        self.focus(".cm-content")
        if at_end:
            self.press("Control+End")
        self.type(text)


@pytest.fixture(scope="module")
def browser(frontend_dist):
    b = Browser()
    yield b
    b.quit()


@pytest.fixture
def pages(browser, request):
    """The browser, with every page closed after the test; uncaught page errors fail it."""
    failed_before = request.session.testsfailed
    yield browser
    if request.session.testsfailed > failed_before:  # keep what each page showed when it failed
        for name, page in browser.pages.items():
            try:
                page.screenshot(f"FAILED-{request.node.name}-{name}")
            except AssertionError:
                pass
    problems = browser.close_pages()
    assert not problems, "uncaught errors in the page:\n" + "\n".join(problems)


#: The browser tests' hubs neither run agents nor build the embedding graph: no worker processes
#: to start (and stop) beside each one. The review test has a hub that does (``graph_web``).
NO_WORKERS = {"TINYMORPH_GRAPH_ENABLED": "false", "TINYMORPH_WORKER_EMBEDDED": "false"}


@pytest.fixture
def web(tmp_path, frontend_dist):
    proc = HubProcess(tmp_path / "hub", env=NO_WORKERS).start()
    yield proc
    proc.stop()


@pytest.fixture
def graph_web(tmp_path, frontend_dist):
    """A hub as `make serve` runs it: worker processes beside it build the embedding graph (a short
    debounce: the graph is rebuilt half a second after the last edit)."""
    proc = HubProcess(tmp_path / "hub", env={"TINYMORPH_GRAPH_DEBOUNCE_S": "0.5"}).start()
    yield proc
    proc.stop()


def http_status(hub: HubProcess, path: str) -> int:
    """Status of a GET (the hub's 404 for an unknown route has a plain-text body)."""
    try:
        with urllib.request.urlopen(hub.url + path, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def doc_url(hub: HubProcess, doc_id: str, token: str | None = None, name: str | None = None) -> str:
    q = {k: v for k, v in (("token", token), ("name", name)) if v}
    return f"{hub.url}/d/{doc_id}" + (f"?{urllib.parse.urlencode(q)}" if q else "")


# ------------------------------------------------------------------------------------------------
def test_home_lists_creates_and_renames_documents(web, pages):
    existing, _ = web.create_doc("Existing essay")
    home = pages.open("home", web.url + "/?name=Alice")
    home.wait("(id) => document.querySelector(`a[data-doc-id='${id}']`)", existing, "the existing document in the list")
    home.screenshot("home")

    # create from the list page: lands on /d/{id} with a connected editor
    home.fill("#main input[type=text]", "Field notes")
    home.click("#create-doc")
    new_id = home.wait("() => location.pathname.match(/^\\/d\\/([^/]+)$/)?.[1]", what="navigation to the new document")
    home.wait_ready()
    assert home.eval("() => document.querySelector('.doc-title-input').value") == "Field notes"
    assert home.eval("() => window.tinymorph.role") == "owner"

    # rename in the header: the hub has the new title
    home.fill(".doc-title-input", "Field notes, revised")
    home.press("Enter")
    deadline = time.monotonic() + TIMEOUT
    while web.request("GET", f"/api/docs/{new_id}")[1]["title"] != "Field notes, revised":
        assert time.monotonic() < deadline, "rename never reached the hub"
        time.sleep(0.1)

    # and rename from the list
    home.click("a.brand")
    home.wait("(id) => document.querySelector(`a[data-doc-id='${id}']`)?.textContent.includes('revised')", new_id, "the renamed document in the list")
    home.click(f"li:has(a[data-doc-id='{existing}']) button")
    home.fill(".rename-form input", "Existing essay (final)")
    home.press("Enter")
    home.wait("(id) => document.querySelector(`a[data-doc-id='${id}']`)?.textContent.includes('(final)')", existing, "the list to show the new title")
    assert web.request("GET", f"/api/docs/{existing}")[1]["title"] == "Existing essay (final)"


CARET = "(name) => document.querySelector(`.tm-caret[data-name='${name}']`)"


def test_two_people_type_and_see_each_others_text_and_cursors(web, pages):
    doc_id, owner = web.create_doc("Duet")
    alice = pages.open("alice", doc_url(web, doc_id, owner, name="Alice"))
    bob = pages.open("bob", doc_url(web, doc_id, name="Bob"))  # open mode: a guest editor, no token
    alice.wait_ready()
    bob.wait_ready()

    alice.type_in_editor("# Duet\n\nHello from Alice. ")
    bob.wait_contains("Hello from Alice.")
    bob.type_in_editor("And Bob replies.")
    final = alice.wait_contains("And Bob replies.")
    assert bob.wait_text("t === arg", final, "Bob's copy to match Alice's") == final

    # each sees the other's caret, named, marked as a person, where the other one is typing
    for viewer, other in ((alice, "Bob"), (bob, "Alice")):
        viewer.wait(f"(name) => ({CARET})(name)?.dataset.kind === 'human'", other, f"{other}'s caret")
        viewer.wait("(name) => [...document.querySelectorAll('.presence-item')].some((li) => li.dataset.name === name && li.dataset.kind === 'human')",
                    other, f"{other} in the presence list")
    bob_caret_at = alice.wait(f"(name) => {{ const el = ({CARET})(name); return el && window.tinymorph.editor.view.posAtDOM(el) }}", "Bob")
    assert bob_caret_at == len(final), (bob_caret_at, len(final))
    assert alice.eval(f"() => ({CARET})('Bob').querySelector('.tm-caret-label').textContent") == "Bob"

    # Bob selects "Alice": Alice sees the selection highlighted
    bob.eval("() => { const v = window.tinymorph.editor.view; const i = v.state.doc.toString().indexOf('Alice'); v.focus(); v.dispatch({ selection: { anchor: i, head: i + 5 } }) }")
    alice.wait("() => [...document.querySelectorAll('.tm-remote-sel')].some((el) => el.textContent === 'Alice')", what="Bob's selection")
    alice.screenshot("two-people-alice")
    bob.screenshot("two-people-bob")


def test_viewer_link_cannot_edit(web, pages):
    doc_id, owner = web.create_doc("Under review")
    alice = pages.open("alice", doc_url(web, doc_id, owner, name="Alice"))
    alice.wait_ready()
    alice.type_in_editor("Draft by Alice.")

    # the owner makes a view-only link in the Share panel
    alice.click(".side [data-tab=share]")
    alice.fill(".share input[type=text]", "Victor")
    alice.click("button[data-share=viewer]")
    link = alice.wait("() => document.querySelector('input.share-link[data-role=viewer]')?.value", what="the viewer link")
    assert link.startswith(f"{web.url}/d/{doc_id}?token="), link
    alice.wait("() => [...document.querySelectorAll('.token-item')].some((li) => li.textContent.includes('Victor'))", what="the link in the list")
    alice.screenshot("share-panel")

    viewer = pages.open("viewer", link + "&name=Victor")
    viewer.wait_ready()
    viewer.wait_contains("Draft by Alice.")
    assert viewer.eval("() => window.tinymorph.role") == "viewer"
    assert viewer.eval("() => document.querySelector('.cm-content').getAttribute('contenteditable')") == "false"
    assert viewer.eval("() => !!document.querySelector('[data-readonly=true]') && document.querySelector('.role-badge').dataset.role") == "viewer"
    assert viewer.eval("() => document.querySelector('.doc-title-input').readOnly") is True

    # typing does nothing …
    viewer.click(".cm-content")
    viewer.type("VANDAL")
    assert "VANDAL" not in viewer.text()
    # … and a write behind the editor's back is refused by the hub, which says so
    viewer.eval("() => window.tinymorph.session.ytext.insert(0, 'FORGED ')")
    viewer.wait("() => window.tinymorph.session.state.denied", what="the hub's permission-denied answer")
    alice.type_in_editor(" Marker.")
    viewer.wait_contains("Marker.")  # the viewer still receives edits after the refusal
    assert "FORGED" not in alice.text()
    assert "FORGED" not in web.request("GET", f"/api/docs/{doc_id}")[1]["text"]
    alice.wait("() => [...document.querySelectorAll('.presence-item')].some((li) => li.dataset.name === 'Victor')", what="the viewer's presence")
    viewer.screenshot("viewer-read-only")


def test_network_drop_then_resync(web, pages):
    doc_id, owner = web.create_doc("Flaky wifi")
    alice = pages.open("alice", doc_url(web, doc_id, owner, name="Alice"))
    bob = pages.open("bob", doc_url(web, doc_id, name="Bob"))
    alice.wait_ready()
    bob.wait_ready()
    alice.type_in_editor("Before the drop.")
    bob.wait_contains("Before the drop.")

    web.stop()  # the hub goes away: both browsers lose their sockets
    for p in (alice, bob):
        p.wait("() => document.querySelector('.conn').dataset.status !== 'connected'", what="the offline indicator")
    alice.type_in_editor(" Written offline by Alice.")
    bob.type_in_editor(" Bob too.")
    alice.wait("() => document.querySelector('.conn').dataset.tone === 'warn'", what="the offline warning")
    alice.screenshot("offline")

    web.start()  # same port, same data: the providers reconnect and resync both ways
    for p in (alice, bob):
        p.wait_ready()
        p.wait_text("t.includes('Written offline by Alice.') && t.includes('Bob too.')", what="both offline edits")
    assert alice.text() == bob.text()
    text = web.request("GET", f"/api/docs/{doc_id}")[1]["text"]
    assert "Written offline by Alice." in text and "Bob too." in text


END = {"tname": "content", "assoc": 0}  # a Yjs relative position: the end of `content`


async def test_agent_peer_streams_text_visibly_into_both_browsers(web, pages):
    from collab.client import HubClient

    doc_id, owner = web.create_doc("With an agent")
    alice = pages.open("alice", doc_url(web, doc_id, owner, name="Alice"))
    bob = pages.open("bob", doc_url(web, doc_id, name="Bob"))
    for p in (alice, bob):
        await asyncio.to_thread(p.wait_ready)
    opening = "The harbour at dawn. "
    await asyncio.to_thread(alice.type_in_editor, opening)

    token = web.token(doc_id, "agent", "Muse")
    user = {"name": "Muse", "color": "#0f766e", "colorLight": "#0f766e33", "kind": "agent"}
    async with HubClient(web.ws_url, doc_id, token=token, presence={"user": user, "cursor": {"anchor": END, "head": END}}) as muse:
        await muse.synced(TIMEOUT)
        # all of it: in a busy room the last keystrokes can arrive a commit delay later, and a
        # chunk written before them would land in front of them
        await muse.wait_for(lambda: str(muse.text) == opening, TIMEOUT)
        for p in (alice, bob):
            await asyncio.to_thread(p.wait, "() => document.querySelector('.presence-item[data-kind=agent][data-name=Muse]')?.textContent.includes('agent')",
                                    None, "the agent, marked as one, in the presence list")
        # stream in chunks; each partial state shows up in both browsers before the next chunk
        so_far = str(muse.text)
        for chunk in ("The fog ", "lifted ", "over the ", "water."):
            muse.text.insert(len(muse.text), chunk)
            so_far += chunk
            for p in (alice, bob):
                await asyncio.to_thread(p.wait_contains, so_far)
        for p in (alice, bob):
            label = await asyncio.to_thread(
                p.wait, f"() => {{ const c = ({CARET})('Muse'); return c?.dataset.kind === 'agent' && c.textContent }}", None, "the agent's caret")
            assert "🤖" in label and "agent" in label, label
            at = await asyncio.to_thread(p.eval, f"() => window.tinymorph.editor.view.posAtDOM(({CARET})('Muse'))")
            assert at == len(so_far)
        await asyncio.to_thread(alice.screenshot, "agent-streaming-alice")
        await asyncio.to_thread(bob.screenshot, "agent-streaming-bob")


async def test_agent_suggestion_shows_inline_and_in_margin_and_can_be_accepted_or_rejected(web, pages):
    from pycrdt import Assoc, Map
    from collab.client import HubClient

    doc_id, owner = web.create_doc("Suggestions")
    alice = pages.open("alice", doc_url(web, doc_id, owner, name="Alice"))
    bob = pages.open("bob", doc_url(web, doc_id, name="Bob"))
    for p in (alice, bob):
        await asyncio.to_thread(p.wait_ready)
    await asyncio.to_thread(alice.type_in_editor, "The quick fox jumps. It was very big and very old. The end.")

    token = web.token(doc_id, "agent", "Muse")
    async with HubClient(web.ws_url, doc_id, token=token, presence={"user": {"name": "Muse", "kind": "agent", "color": "#0f766e"}}) as muse:
        await muse.synced(TIMEOUT)
        await muse.wait_for(lambda: "The end." in str(muse.text), TIMEOUT)
        text = str(muse.text)
        pos = lambda i: muse.text.sticky_index(i, Assoc.AFTER).to_json()  # noqa: E731
        a, b = text.index("quick"), text.index("very big")
        sugg = muse.doc.get("suggestions", type=Map)
        with muse.doc.transaction():
            sugg["s1"] = {"from": pos(a), "to": pos(a + len("quick")), "text": "swift", "agent": "Muse", "status": "pending"}
            sugg["s2"] = {"from": pos(b), "to": pos(b + len("very big")), "text": "enormous", "agent": "Muse", "status": "pending"}

        for p in (alice, bob):
            await asyncio.to_thread(p.wait, "() => document.querySelectorAll('.suggestion-card').length === 2 && document.querySelectorAll('.tm-inlay').length === 2",
                                    None, "two suggestions, inline and in the margin")
        # an edit before the suggestions moves them along (relative positions)
        await asyncio.to_thread(bob.eval, "() => window.tinymorph.session.ytext.insert(0, 'Title. ')")
        await asyncio.to_thread(alice.wait_contains, "Title. The quick")
        await asyncio.to_thread(alice.screenshot, "suggestions")

        await asyncio.to_thread(alice.click, ".suggestion-card[data-suggestion=s1] button:has-text('Accept')")
        await asyncio.to_thread(bob.click, ".tm-inlay[data-suggestion=s2] button[title=Reject]")
        for p in (alice, bob):
            await asyncio.to_thread(p.wait_text, "t === arg", "Title. The swift fox jumps. It was very big and very old. The end.", "s1 applied, s2 not")
            await asyncio.to_thread(p.wait, "() => document.querySelectorAll('.suggestion-card, .tm-inlay').length === 0", None, "no pending suggestions")
        await muse.wait_for(lambda: sugg["s1"]["status"] == "accepted" and sugg["s2"]["status"] == "rejected", TIMEOUT)


def test_history_slider_shows_an_earlier_version(web, pages):
    doc_id, owner = web.create_doc("Growing text")
    alice = pages.open("alice", doc_url(web, doc_id, owner, name="Alice"))
    alice.wait_ready()
    alice.type_in_editor("First version.")
    alice.wait("() => window.tinymorph.session.provider.synced")
    alice.click("[data-tab=timeline]")
    alice.wait("() => document.querySelector('.version-text')?.textContent && !document.querySelector('[data-unavailable]')", what="the timeline")
    alice.click("[data-tab=write]")
    alice.type_in_editor(" Then a second sentence.")
    final = alice.wait_contains("second sentence.")
    deadline = time.monotonic() + TIMEOUT
    while True:  # the history catches up with the last edit
        entries = web.request("GET", f"/api/docs/{doc_id}/history")[1]["entries"]
        last = web.request("GET", f"/api/docs/{doc_id}/versions/{entries[-1]['seq']}")[1]["text"]
        if last == final:
            break
        assert time.monotonic() < deadline, f"history never reached the final text: {last!r}"
        time.sleep(0.2)
    first = web.request("GET", f"/api/docs/{doc_id}/versions/{entries[0]['seq']}")[1]["text"]
    assert first != final

    alice.click("[data-tab=timeline]")
    alice.wait("(t) => document.querySelector('.version-text')?.textContent === t", final, "the latest version on the timeline")
    alice.focus(".timeline-slider")
    alice.press("Home")  # keyboard: the slider's first position is the first edit
    alice.wait("(t) => document.querySelector('.version-text')?.textContent === t", first, "the first version")
    assert alice.eval("() => document.querySelector('.timeline-slider').getAttribute('aria-valuetext')").startswith("Edit 1 of")
    alice.screenshot("timeline-earlier")


def test_local_files_save_as_download_and_open_through_file_input(web, pages):
    no_fs_access = ("for (const k of ['showOpenFilePicker', 'showSaveFilePicker']) "
                    "Object.defineProperty(window, k, { value: undefined, configurable: true })")
    doc_id, owner = web.create_doc("Notes: draft/1")
    alice = pages.open("alice", doc_url(web, doc_id, owner, name="Alice"), init=no_fs_access)
    alice.wait_ready()
    alice.type_in_editor("# Notes\n\nSaved locally.")

    alice.b.cmd("expectDownload", name="alice")
    alice.click("button[data-action=save]")
    saved = alice.b.cmd("download", name="alice")
    assert saved == {"filename": "Notes- draft-1.md", "text": "# Notes\n\nSaved locally."}

    alice.b.cmd("expectDownload", name="alice")
    alice.focus(".cm-content")
    alice.press("Control+s")  # the keyboard shortcut saves too
    assert alice.b.cmd("download", name="alice")["text"] == "# Notes\n\nSaved locally."

    # open a local file from the home page: it becomes a new shared document with that text
    alice.click("a.brand")
    alice.visible("#create-doc")
    alice.b.cmd("chooseFiles", name="alice", selector="button:has-text('Open a local file')",
                files=[{"name": "Chapter 3.md", "text": "## Chapter 3\n\nIt was a dark night."}])
    new_id = alice.wait("(old) => { const m = location.pathname.match(/^\\/d\\/([^/]+)$/); return m && m[1] !== old && m[1] }", doc_id, "the new document")
    alice.wait_ready()
    alice.wait_contains("It was a dark night.")
    assert alice.eval("() => document.querySelector('.doc-title-input').value") == "Chapter 3"
    deadline = time.monotonic() + TIMEOUT
    while "dark night" not in web.request("GET", f"/api/docs/{new_id}")[1]["text"]:
        assert time.monotonic() < deadline, "the opened file's text never reached the hub"
        time.sleep(0.1)


ACCESSIBLE_NAMES = """() => {
  const name = (el) => (el.getAttribute('aria-label') || '').trim()
    || (el.getAttribute('aria-labelledby') || '').split(/\\s+/).map((id) => document.getElementById(id)?.textContent || '').join(' ').trim()
    || [...(el.labels || [])].map((l) => l.textContent).join(' ').trim()
    || (el.tagName === 'INPUT' ? '' : el.textContent.trim()) || (el.getAttribute('title') || '').trim()
  const visible = (el) => el.getClientRects().length > 0
  return [...document.querySelectorAll('button, a[href], input, select, textarea, [role=tab], [role=button], [contenteditable]')]
    .filter((el) => visible(el) && !(el.type === 'hidden')).filter((el) => !name(el))
    .map((el) => el.outerHTML.slice(0, 120))
}"""


REVIEW_VIEW_LOADED = (
    "(tab) => { const p = document.getElementById(document.querySelector(`[data-tab=${tab}]`).getAttribute('aria-controls')); "
    "return !p.hidden && !p.querySelector('[role=status]')?.textContent.startsWith('Loading') && p.textContent.trim() }")
REVIEW_VIEW_UNAVAILABLE = (
    "(tab) => !!document.querySelector(`#${document.querySelector(`[data-tab=${tab}]`).getAttribute('aria-controls')} .unavailable`)")


def test_keyboard_labels_and_unavailable_agents(web, pages):
    doc_id, owner = web.create_doc("Accessible")
    alice = pages.open("alice", doc_url(web, doc_id, owner, name="Alice"))
    alice.wait_ready()
    alice.type_in_editor("Some words.")
    assert alice.eval(ACCESSIBLE_NAMES) == []
    assert alice.eval("() => document.querySelector('.cm-content').getAttribute('aria-label')").startswith("Accessible")

    # the view tabs follow the ARIA tabs pattern: arrows move and select, focus is visible
    alice.focus("[role=tab][data-tab=write]")
    alice.press("ArrowRight")
    assert alice.eval("() => document.activeElement.dataset.tab") == "timeline"
    assert alice.eval("() => document.activeElement.getAttribute('aria-selected')") == "true"
    assert alice.eval("() => getComputedStyle(document.activeElement).outlineStyle") != "none"
    assert alice.eval("() => document.getElementById(document.activeElement.getAttribute('aria-controls')).hidden") is False
    alice.press("End")
    assert alice.eval("() => document.activeElement.dataset.tab") == "graph"
    alice.press("Home")
    assert alice.eval("() => document.activeElement.dataset.tab") == "write"

    # every review view loads (this hub serves the review API and the graph)
    for tab in ("timeline", "diff", "blame", "activity", "graph"):
        alice.click(f"[data-tab={tab}]")
        alice.wait(REVIEW_VIEW_LOADED, tab, f"the {tab} view to load")
        assert not alice.eval(REVIEW_VIEW_UNAVAILABLE, tab), tab
    alice.click("[data-tab=write]")

    # the agent panel: the shipped personas, every control enabled
    alice.click(".side [data-tab=agents]")
    state = alice.wait("() => { const s = document.querySelector('.agents-banner')?.dataset.state; return s && s }", what="the agent panel")
    assert state == "ready"
    assert alice.eval("() => document.querySelector('.agents-form').disabled") is False
    assert alice.eval("() => [...document.querySelectorAll('.agents input[type=radio]')].map((r) => r.value)") == [
        "continue", "rewrite", "margin_notes", "expand", "contract", "define", "suggest", "direct"]
    assert alice.eval(ACCESSIBLE_NAMES) == []
    # the default persona's slider: the range the backend serves (inference/steering/strengths.py)
    from inference.steering import CAA_GUIDES

    guide = CAA_GUIDES["concise"]
    rec = alice.eval("() => document.querySelector('.steer-item .small')?.textContent || ''")
    assert f"Recommended {guide.low:g} to {guide.high:g}" in rec and "✓ in the recommended range" in rec, rec
    alice.screenshot("agents-panel")

    # a hub without the agents extension (no agents API, no graph): the panel says so plainly
    # and disables its controls; the graph view says it isn't available; the hub's own review
    # views still load
    bare = HubProcess(web.data_dir.parent / "bare", env={"TINYMORPH_EXTENSIONS": ""}).start()
    try:
        assert http_status(bare, "/api/agents") == 404
        bare_id, bare_owner = bare.create_doc("No agents here")
        carol = pages.open("carol", doc_url(bare, bare_id, bare_owner, name="Carol"))
        carol.wait_ready()
        carol.type_in_editor("Some words.")
        carol.click(".side [data-tab=agents]")
        state = carol.wait("() => { const s = document.querySelector('.agents-banner')?.dataset.state; return s && s }", what="the agent panel")
        assert state == "unavailable"
        assert "Agents unavailable" in carol.eval("() => document.querySelector('.agents-banner').textContent")
        assert carol.eval("() => document.querySelector('.agents-form').disabled") is True
        for tab in ("timeline", "graph"):
            carol.click(f"[data-tab={tab}]")
            carol.wait(REVIEW_VIEW_LOADED, tab, f"the {tab} view to load")
            assert bool(carol.eval(REVIEW_VIEW_UNAVAILABLE, tab)) is (tab == "graph"), tab
        assert carol.eval(ACCESSIBLE_NAMES) == []
        carol.screenshot("agents-panel-unavailable")
    finally:
        bare.stop()


async def test_review_views_show_blame_diff_activity_and_graph(graph_web, pages):
    from collab.client import HubClient

    web = graph_web
    doc_id, owner = web.create_doc("Reviewed essay")
    alice = pages.open("alice", doc_url(web, doc_id, web.token(doc_id, "editor", "Alice"), name="Alice"))
    await asyncio.to_thread(alice.wait_ready)
    await asyncio.to_thread(alice.type_in_editor, "Tides rise twice a day.\n\nThe moon pulls the oceans.")
    token = web.token(doc_id, "agent", "Muse")
    async with HubClient(web.ws_url, doc_id, token=token, presence={"user": {"name": "Muse", "kind": "agent", "color": "#0f766e"}}) as muse:
        await muse.synced(TIMEOUT)
        await muse.wait_for(lambda: "oceans." in str(muse.text), TIMEOUT)
        muse.text.insert(len(muse.text), "\n\nGravity from the sun adds a smaller tide.")
        await asyncio.to_thread(alice.wait_contains, "smaller tide.")
        await muse.flush()

    viewer = pages.open("viewer", doc_url(web, doc_id, web.token(doc_id, "viewer", "Stakeholder"), name="Stakeholder") + "#blame")
    await asyncio.to_thread(viewer.wait_ready)
    legend = await asyncio.to_thread(
        viewer.wait, "() => { const t = document.querySelector('.blame .legend')?.textContent || ''; return t.includes('Muse') && t.includes('Alice') && t }",
        None, "blame by Alice and Muse")
    assert "agent" in legend and "person" in legend, legend
    kinds = await asyncio.to_thread(viewer.eval, "() => [...new Set([...document.querySelectorAll('.blame-span')].map((s) => s.dataset.kind))].sort()")
    assert kinds == ["agent", "human"], kinds
    await asyncio.to_thread(viewer.screenshot, "review-blame")

    await asyncio.to_thread(viewer.click, "[data-tab=diff]")
    await asyncio.to_thread(viewer.wait, "() => [...document.querySelectorAll('.diff-ins')].some((el) => el.textContent.includes('smaller tide'))", None, "the agent's insertion in the diff")
    await asyncio.to_thread(viewer.screenshot, "review-diff")

    await asyncio.to_thread(viewer.click, "[data-tab=activity]")
    await asyncio.to_thread(viewer.wait, "() => [...document.querySelectorAll('.stats tbody th')].some((th) => th.textContent.includes('Muse') && th.textContent.includes('agent'))", None, "Muse's row in the session stats")
    await asyncio.to_thread(viewer.screenshot, "review-activity")

    # the graph: the worker processes embed the three paragraphs a moment after the last edit
    # (the first time after loading the embedding model); the open view asks again every 4 s
    await asyncio.to_thread(viewer.click, "[data-tab=graph]")
    await asyncio.to_thread(viewer.wait, "() => document.querySelectorAll('.graph-svg .node').length === 3", None, "the graph of three paragraphs", 150)
    assert not await asyncio.to_thread(viewer.eval, "() => !!document.querySelector('.graph .unavailable')")
    await asyncio.to_thread(viewer.screenshot, "review-graph")
    await asyncio.to_thread(viewer.click, ".graph-svg .node[data-index='2']")
    at = await asyncio.to_thread(viewer.wait, "() => !document.querySelector('.write-panel').hidden && window.tinymorph.editor.view.state.selection.main.head", None, "the jump to paragraph 3")
    assert at == (await asyncio.to_thread(viewer.text)).index("Gravity")


# -- a real agent run from the panel: embedded Celery worker, the bundled model -------------------
@pytest.fixture(scope="module")
def agent_web(tmp_path_factory, frontend_dist):
    """A hub whose embedded Celery worker runs agents with the real bundled model; shared by the
    tests below so the model loads once (no graph: its embedding model would compete for the CPU)."""
    proc = HubProcess(tmp_path_factory.mktemp("agent-web") / "hub",
                      env={"TINYMORPH_WORKER_EMBEDDED": "true", "TINYMORPH_GRAPH_ENABLED": "false"}).start()
    yield proc
    proc.stop()


AGENT_RUN_S = 240.0  # a first run loads the model; a loaded 2-core machine generates slowly
OPENING = "The old lighthouse keeper climbed the stairs every night. He"

# In the page: every state the editor shows after a change to the shared text (Date.now() stamps,
# comparable across browser contexts), agents seen in presence, and the panel's run statuses.
RECORD = """() => {
  const t = window.tinymorph, rec = window.__rec = { texts: [], agents: [], listed: [], statuses: [] }
  t.session.ytext.observe(() => rec.texts.push([Date.now(), t.editor.view.state.doc.toString()]))
  t.session.awareness.on('change', () => {
    for (const s of t.session.awareness.getStates().values()) if (s.user?.kind === 'agent') rec.agents.push(s.user.name)
  })
  new MutationObserver(() => {
    const li = document.querySelector('.presence-item[data-kind=agent]')
    if (li) rec.listed.push(li.textContent)
    const st = document.querySelector('.agents .run-status')?.dataset.status
    if (st && rec.statuses.at(-1)?.[1] !== st) rec.statuses.push([Date.now(), st])
  }).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true })
  return true
}"""


def seeded_runs(seed: int) -> str:
    """An init script for a page whose agent runs sample with ``seed``: the panel has no seed
    field, so the run request it sends gets ``options.seed`` added on its way out."""
    return ("(() => { const fetch0 = window.fetch; window.fetch = (url, init) => { "
            "if (init?.method === 'POST' && /\\/api\\/docs\\/[^/]+\\/runs$/.test(new URL(url, location.href).pathname)) { "
            "const body = JSON.parse(init.body); body.options = { ...(body.options || {}), seed: SEED }; "
            "init = { ...init, body: JSON.stringify(body) } } "
            "return fetch0.call(window, url, init) } })()").replace("SEED", str(int(seed)))


def _open_agent_panel(page: Page, max_tokens: int) -> None:
    """Agents tab: the Plain persona (no steering vector to build), continue, written directly."""
    page.click(".side [data-tab=agents]")
    page.wait("() => document.querySelector('.agents-banner')?.dataset.state === 'ready'", what="the agents to load")
    page.b.cmd("select", name=page.name, selector=".agents select", value="plain")
    page.click(".agents input[type=radio][value=continue]")
    page.click(".agents input[type=radio][value=direct]")
    page.fill(".agents .length-input", str(max_tokens))


def test_agent_run_from_the_panel_streams_into_both_browsers(agent_web, pages):
    web = agent_web
    doc_id, owner = web.create_doc("Run from the panel")
    # seed 1 writes all 64 tokens here (269 characters), not a paragraph that ends after a few words
    alice = pages.open("alice", doc_url(web, doc_id, owner, name="Alice"), init=seeded_runs(1))
    bob = pages.open("bob", doc_url(web, doc_id, name="Bob"))
    for p in (alice, bob):
        p.wait_ready()
    alice.type_in_editor(OPENING)
    bob.wait_contains(OPENING)
    for p in (alice, bob):
        assert p.eval(RECORD)

    _open_agent_panel(alice, 64)
    alice.click("[data-action=run-agent]")
    alice.wait("() => ['streaming', 'done', 'failed'].includes(document.querySelector('.agents .run-status').dataset.status)",
               what="the run to start writing", timeout=AGENT_RUN_S)
    alice.screenshot("agent-run-alice-streaming")
    bob.screenshot("agent-run-bob-streaming")
    status = alice.wait("() => { const s = document.querySelector('.agents .run-status').dataset.status; return ['done', 'failed', 'cancelled'].includes(s) && s }",
                        what="the run to finish", timeout=AGENT_RUN_S)
    assert status == "done", alice.eval("() => document.querySelector('.agents .run-status').textContent")
    run = web.request("GET", f"/api/docs/{doc_id}/runs", None, owner)[1]["runs"][0]
    assert run["status"] == "done" and run["agent"] == "plain" and run["task"] == "continue" and run["mode"] == "direct"
    assert run_row(web.data_dir, run["id"])["params"]["options"] == {"max_tokens": 64, "seed": 1}  # as the panel sent it
    written = run["result"]["text"]
    assert written.strip(), run
    final = web.request("GET", f"/api/docs/{doc_id}")[1]["text"]
    assert final.startswith(OPENING) and final.endswith(written) and len(final) > len(OPENING)
    for p in (alice, bob):
        p.wait_text("t === arg", final, "the agent's whole text")
    alice.screenshot("agent-run-alice-done")
    bob.screenshot("agent-run-bob-done")
    # the token view (scored by the worker): the run's text, one shaded span per token; the Plain
    # persona is not steered, so there is no steering-effect view to pick
    view = run["result"]["token_view"]
    assert view["steered"] is False and "".join(t[0] for t in view["tokens"]) == written, view
    shown = alice.eval("() => { const v = document.querySelector('.agents .token-view'); return v && "
                       "[v.querySelectorAll('.tok').length, v.querySelector('.token-text').textContent, "
                       "v.querySelectorAll('input[type=radio]').length, v.querySelector('.tok').title] }")
    assert shown[:3] == [len(view["tokens"]), written, 1], shown
    assert "surprise" in shown[3] and "nats" in shown[3], shown
    alice.eval("() => { document.querySelector('.agents .token-view').scrollIntoView(); return true }")
    alice.screenshot("agent-run-token-view")
    assert alice.eval("() => [document.querySelector('[data-action=run-agent]').disabled, "
                      "document.querySelector('[data-action=cancel-run]').disabled]") == [False, True]  # ready again

    # The agent wrote in steps (word-sized updates, at least FLUSH_EVERY_S apart): the log has
    # each one. How many depends on how fast the model was, so the browsers are held to what the
    # log shows: every step but the last was on screen, as a prefix of the final text, before the
    # panel reported the run done.
    entries = web.request("GET", f"/api/docs/{doc_id}/history?kind=agent", None, owner)[1]["entries"]
    assert all(e["author_id"] == "plain" and e["run_id"] == run["id"] for e in entries), entries
    steps = [e for e in entries if e["inserted"]]
    assert len(steps) >= 2, entries  # streamed, not written in one go at the end
    done_at = next(at for at, s in alice.eval("() => window.__rec.statuses") if s == "done")
    for p in (alice, bob):
        rec = p.eval("() => window.__rec")
        partial = {t for at, t in rec["texts"] if at < done_at and OPENING in t and len(OPENING) < len(t) < len(final)}
        assert len(partial) >= len(steps) - 1, (p.name, rec["texts"], steps)
        assert all(final.startswith(t) for t in partial), (p.name, partial)
        assert "Plain" in rec["agents"], (p.name, rec["agents"])  # its presence says kind: agent
        assert any("Plain" in li and "agent" in li for li in rec["listed"]), (p.name, rec["listed"])
    assert [s for _at, s in alice.eval("() => window.__rec.statuses")][-1] == "done"


def test_cancel_from_the_panel_stops_the_run(agent_web, pages):
    web = agent_web
    doc_id, owner = web.create_doc("Cancelled run")
    # seed 1 writes a paragraph of all 400 tokens here (1,677 characters): no blank line ends it
    # early, so the run is still writing when the cancel comes
    alice = pages.open("alice", doc_url(web, doc_id, owner, name="Alice"), init=seeded_runs(1))
    alice.wait_ready()
    alice.type_in_editor(OPENING)
    _open_agent_panel(alice, 400)
    status_js = "() => document.querySelector('.agents .run-status').dataset.status"
    before = alice.text()
    alice.click("[data-action=run-agent]")
    alice.wait("(before) => window.tinymorph.editor.view.state.doc.toString().length > before.length", before,
               "the agent's first words", timeout=AGENT_RUN_S)
    alice.click("[data-action=cancel-run]")
    status = alice.wait(f"() => {{ const s = ({status_js})(); return ['done', 'failed', 'cancelled'].includes(s) && s }}",
                        what="the run to end", timeout=60)
    assert status == "cancelled", alice.eval("() => document.querySelector('.agents .run-status').textContent")
    alice.screenshot("agent-run-cancelled")
    run = web.request("GET", f"/api/docs/{doc_id}/runs", None, owner)[1]["runs"][0]
    assert run["status"] == "cancelled", run
    assert run_row(web.data_dir, run["id"])["params"]["options"]["seed"] == 1
    # the document says so, the agent left, the text stopped well short of 400 tokens
    alice.wait("(id) => window.tinymorph.session.ydoc.getMap('agent_runs').get(id)?.status === 'cancelled'", run["id"],
               "the run marked cancelled in the document")
    alice.wait("() => !document.querySelector('.presence-item[data-kind=agent]')", what="the agent to leave")
    text = alice.text()
    assert text == web.request("GET", f"/api/docs/{doc_id}")[1]["text"]
    assert 0 < len(text) - len(before) < 1677 / 4, len(text) - len(before)  # a quarter: ~100 tokens
    assert alice.eval("() => [document.querySelector('[data-action=run-agent]').disabled, "
                      "document.querySelector('[data-action=cancel-run]').disabled]") == [False, True]


def test_a_new_style_from_examples_starts_building_from_the_panel(web, pages):
    """The agent panel's "New style from examples…": a one-sided pair gets the API's clear 400,
    good pairs start a build in a worker and the panel shows its progress (this hub runs no
    workers, so it stays building; a worker's build is tested in test_vectors_api.py)."""
    doc_id, owner = web.create_doc("Styles")
    alice = pages.open("alice", doc_url(web, doc_id, owner, name="Alice"))
    alice.wait_ready()
    alice.click(".side [data-tab=agents]")
    alice.wait("() => document.querySelector('.agents-banner')?.dataset.state === 'ready'", what="the agent panel")
    alice.click(".style-maker summary")
    alice.fill(".style-maker input[name=name]", "sunny")
    alice.fill(".style-maker textarea", "What a glorious morning! =>")
    alice.click("[data-action=build-style]")
    error = alice.wait("() => document.querySelector('.style-status.error')?.textContent", what="the refusal")
    assert "one-sided" in error, error
    alice.fill(".style-maker textarea", "What a glorious morning! => What a grey morning.\nI laughed all the way home. => I trudged home.")
    alice.click("[data-action=build-style]")
    status = alice.wait("() => document.querySelector('.style-status')?.dataset.status", what="the build to start")
    assert status == "building"
    assert alice.eval("() => document.querySelector('.style-maker progress').hidden") is False
    assert "Building “sunny”" in alice.eval("() => document.querySelector('.style-status').textContent")
    assert alice.eval(ACCESSIBLE_NAMES) == []
    status, body = web.request("GET", "/api/vectors/sunny")
    assert status == 200 and body["status"] == "building" and body["provenance"]["pairs"] == 2
    alice.screenshot("style-maker")
