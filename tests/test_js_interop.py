"""Interop with the real JavaScript Yjs stack: npm yjs + y-websocket's stock WebsocketProvider.

Each JS client is its own node process (tests/js/client.mjs), so nothing can sync behind the
hub's back; the Python side is collab.client.HubClient on pycrdt. Every wait is on a condition
with a generous timeout — no sleeps, no timed assertions. Tests share one hub per auth mode, each
on its own document; the restart test has its own.

Needs node and the npm packages from `make test` (tests/js/package-lock.json); skipped without
them, except when CI=true, where that is a failure.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests._jshelpers import DEFAULT_TIMEOUT, JsClients, node_or_skip, presence_names

pytestmark = pytest.mark.node

WORDS = {"ann": "alpha😀 ", "bob": "béta ", "cyd": "gamma "}  # non-ASCII on purpose: UTF-16 vs UTF-8


@pytest.fixture
def js():
    node_or_skip()
    clients = JsClients()
    yield clients
    clients.close_all()


async def until(predicate, what: str, timeout: float = DEFAULT_TIMEOUT):
    """Wait in the event loop (so the pycrdt client keeps receiving) until predicate() holds."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)
    return result


def wait_js(client, predicate, what: str):
    """A JsClient wait that doesn't block the event loop."""
    return asyncio.to_thread(client.wait_for, predicate, what)


def removed_by_server(client, departed_id: int) -> bool:
    """True once `client` saw `departed_id` removed by a message from the server.

    The awareness protocol also expires silent peers on its own after 30 s (origin 'timeout');
    that must not count as the hub having signalled the departure.
    """
    return any(e.get("ev") == "awareness" and e.get("origin") == "remote" and departed_id in e.get("removed", [])
               for e in client.events)


def test_two_js_clients_and_pycrdt_converge_and_share_presence(shared_hub_tokens, js):
    from collab.client import HubClient

    hub = shared_hub_tokens
    doc_id, _owner = hub.create_doc("js interop", token=hub.user_token)
    tok = {n: hub.token(doc_id, "editor", n) for n in ("ann", "bob", "cyd", "dan")}

    # Stock WebsocketProvider('ws://host:port/ws', docId, doc, {params: {token}}).
    ann = js(hub.ws_url, doc_id, token=tok["ann"], name="ann")
    bob = js(hub.ws_url, doc_id, token=tok["bob"], name="bob")
    ann.wait_synced()
    bob.wait_synced()

    async def scenario():
        async with HubClient(hub.ws_url, doc_id, token=tok["cyd"], presence={"user": {"name": "cyd"}}) as cyd:
            await cyd.synced(DEFAULT_TIMEOUT)

            # Concurrent edits from all three before anyone has seen the others'.
            ann.insert(0, WORDS["ann"])
            bob.insert(0, WORDS["bob"])
            cyd.text.insert(0, WORDS["cyd"])

            def has_all(t):
                return t is not None and all(w in t for w in WORDS.values())

            await wait_js(ann, lambda c: has_all(c.text), "all three words at ann")
            await wait_js(bob, lambda c: has_all(c.text), "all three words at bob")
            await until(lambda: has_all(str(cyd.text)), "all three words at the pycrdt client")
            # Converged: the same interleaving everywhere, nothing lost or doubled.
            assert ann.text == bob.text == str(cyd.text)
            assert len(ann.text) == sum(len(w) for w in WORDS.values())

            # Presence: everyone sees everyone.
            everyone = {"ann", "bob", "cyd"}
            await wait_js(ann, lambda c: presence_names(c.states) >= everyone, "ann sees all presence")
            await wait_js(bob, lambda c: presence_names(c.states) >= everyone, "bob sees all presence")
            await until(lambda: presence_names(cyd.awareness.states) >= everyone, "cyd sees all presence")

            # Bob vanishes without a goodbye: the hub must clear his presence for the others.
            bob_id = bob.client_id
            bob.kill()
            await wait_js(ann, lambda c: "bob" not in presence_names(c.states), "bob's presence to vanish at ann")
            await until(lambda: "bob" not in presence_names(cyd.awareness.states),
                        "bob's presence to vanish at cyd")
            assert bob_id not in cyd.awareness.states or not cyd.awareness.states[bob_id]
            assert removed_by_server(ann, bob_id), "bob's presence expired by timeout, not removed by the hub"
            # Only bob's own presence goes: the stock provider re-broadcasts every awareness change
            # it applies (others' entries included), so the hub must not treat those as bob's.
            # (The hub clears a departed socket's ids in one message, so this check cannot race.)
            assert presence_names(ann.states) == {"ann", "cyd"}, "bob's departure took others' presence"

            # Ann leaves politely (provider.destroy()); her presence goes too, her text stays.
            ann.quit()
            await until(lambda: "ann" not in presence_names(cyd.awareness.states),
                        "ann's presence to vanish at cyd")
            final = str(cyd.text)

            # A late JS joiner gets the whole document from the hub and sees cyd's presence.
            dan = js(hub.ws_url, doc_id, token=tok["dan"], name="dan")
            await wait_js(dan, lambda c: c.synced and c.text == final, "dan to sync the final text")
            await wait_js(dan, lambda c: "cyd" in presence_names(c.states), "dan to see cyd's presence")
            assert presence_names(dan.states) & {"ann", "bob"} == set()

            # And dan's edit reaches the pycrdt client.
            dan.insert(0, "delta ")
            await until(lambda: str(cyd.text) == "delta " + final, "dan's edit at cyd")

    asyncio.run(scenario())


def test_viewer_writes_are_refused(shared_hub_tokens, js):
    hub = shared_hub_tokens
    doc_id, _owner = hub.create_doc("viewer", token=hub.user_token)
    editor = js(hub.ws_url, doc_id, token=hub.token(doc_id, "editor", "ed"), name="ed")
    viewer = js(hub.ws_url, doc_id, token=hub.token(doc_id, "viewer", "vi"), name="vi")
    editor.wait_synced()
    viewer.wait_synced()

    editor.insert(0, "visible ")
    viewer.wait_for(lambda c: c.text is not None and "visible " in c.text, "a viewer still reads edits")
    # Syncing (its empty sync step 2) is not a write: no denial before the viewer edits.
    assert viewer.event("permission-denied") is None

    viewer.insert(0, "SECRET ")
    ev = viewer.wait_for(lambda c: c.event("permission-denied"), "the y-websocket auth message")
    # y-protocols/auth: [2, 0 = permission denied, varString reason]; the reason is free text.
    assert ev["authType"] == 0
    assert ev["reason"].strip()

    # A later editor write is a barrier: once it has arrived, the viewer's earlier write would have too.
    editor.insert(-1, "after")
    viewer.wait_for(lambda c: "after" in (c.text or ""), "the editor's second write at the viewer")
    assert editor.text == "visible after"

    # Nothing of it in the hub's copy either: a fresh client syncs without it.
    fresh = js(hub.ws_url, doc_id, token=hub.token(doc_id, "editor", "fresh"), name="fresh")
    fresh.wait_for(lambda c: c.synced and c.text == "visible after", "a fresh client to sync the doc")
    assert "SECRET" not in editor.text and "SECRET" not in fresh.text


def test_stock_provider_without_token_in_open_mode(shared_hub, js):
    hub = shared_hub
    doc_id, _owner = hub.create_doc("open")
    a = js(hub.ws_url, doc_id, name="a")
    b = js(hub.ws_url, doc_id, name="b")
    a.wait_synced()
    b.wait_synced()
    a.insert(0, "open door")
    b.wait_for(lambda c: c.text == "open door", "a's edit at b")


def test_unknown_document_is_refused_with_4404(shared_hub, js):
    hub = shared_hub
    ghost = js(hub.ws_url, "no-such-doc-" + uuid.uuid4().hex, name="ghost")
    closed = ghost.wait_for(lambda c: c.event("closed"), "the provider's terminal close")
    # The stock provider stops reconnecting on 4400-4499 and reports the code it got.
    assert closed["code"] == 4404
    assert not ghost.synced and ghost.event("synced") is None


def test_js_client_resyncs_after_hub_restart(hub_tokens, js):
    hub = hub_tokens  # its own hub: this test restarts it
    doc_id, _owner = hub.create_doc("restart", token=hub.user_token)
    token = hub.token(doc_id, "editor", "w")
    writer = js(hub.ws_url, doc_id, token=token, name="w")
    writer.wait_synced()
    writer.insert(0, "durable ✓")
    # A second client seeing it means the hub has processed (and logged) the update.
    probe = js(hub.ws_url, doc_id, token=hub.token(doc_id, "editor", "p"), name="p")
    probe.wait_for(lambda c: c.synced and c.text == "durable ✓", "the edit at a second client")
    writer.quit()
    probe.quit()

    assert hub.stop() == 0, hub.log()
    hub.start()
    again = js(hub.ws_url, doc_id, token=token, name="w2")
    again.wait_for(lambda c: c.synced and c.text == "durable ✓", "the text after a restart")
