"""Session history over the attributed log: a real concurrent trace, blame, versions, diff, revert."""

from __future__ import annotations

import asyncio

import pycrdt
import pytest

from collab.client import HubClient
from collab.updates import decode_state_vector
from collab.store import Store
from collab.testing import HUB_ONLY, HubProcess, apply_patches, load_trace

NAMES = {0: "Alice", 1: "Bob"}
FORK_CLIENT = {0: 1001, 1: 2002}  # one Yjs client per typist, as in the original session
# The first 4,000 of friendsforever's 26,078 transactions: already 313 hand-overs between the two
# typists and 511 merges of concurrent edits, several snapshots (one every 500 entries) and the
# versions, diff range and per-author statistics below; the whole trace took a minute to replay
# and exercised nothing more. (A prefix is causally closed: parents come before their children.)
FRIENDS_PREFIX = 4000


def fork_replay(trace: dict):
    """Yield ``(agent, update, clock_after)`` per transaction, typed on a fork of its parents,
    then ``(None, merged document, None)``: every branch merged (the end content for a whole trace).

    Every insertion is also tagged with a text attribute naming its typist, so the merged
    document itself tells us who typed each character, independently of the hub's log.
    """
    states: dict[int, bytes] = {}
    children = {i: t.get("numChildren", 1) for i, t in enumerate(trace["txns"])}
    for i, txn in enumerate(trace["txns"]):
        agent = txn["agent"]
        doc = pycrdt.Doc(client_id=FORK_CLIENT[agent])
        parents = txn["parents"]
        if parents:
            doc.apply_update(pycrdt.merge_updates(*(states[p] for p in parents)))
        for p in parents:
            children[p] -= 1
            if children[p] <= 0:
                del states[p]
        before = doc.get_state()
        text = doc.get("content", type=pycrdt.Text)
        with doc.transaction():
            apply_patches(text, txn["patches"], {"typist": NAMES[agent]})
        states[i] = doc.get_update()
        clock = decode_state_vector(doc.get_state()).get(FORK_CLIENT[agent], 0)
        yield agent, doc.get_update(before), clock
    final = pycrdt.Doc()
    final.apply_update(pycrdt.merge_updates(*states.values()))
    yield None, final, None


def clock_of(client: HubClient, yjs_client: int) -> int:
    return decode_state_vector(client.doc.get_state()).get(yjs_client, 0)


@pytest.fixture(scope="module")
def history_hub(tmp_path_factory):
    """One hub for the module: the replayed trace and the revert tests each have their own document."""
    hub = HubProcess(tmp_path_factory.mktemp("history"), env=HUB_ONLY)
    try:
        yield hub.start()
    finally:
        hub.stop()
    hub.assert_clean()


@pytest.fixture
def hub(history_hub):
    return history_hub


@pytest.fixture(scope="module")
def friends(history_hub):
    """A prefix of concurrent-friendsforever replayed through the hub by two authenticated writers."""
    trace = load_trace("concurrent-friendsforever.json.gz")
    trace = {**trace, "txns": trace["txns"][:FRIENDS_PREFIX]}
    hub = history_hub
    doc_id, _ = hub.create_doc("friends forever")
    tokens = {a: hub.token(doc_id, "editor", name, user_id=name.lower()) for a, name in NAMES.items()}

    async def replay():
        writers = {a: HubClient(hub.ws_url, doc_id, token=tokens[a]) for a in NAMES}
        for w in writers.values():
            await w.connect()
            await w.synced()
        sent_clock = {a: 0 for a in NAMES}
        prev = None
        final = None
        for agent, update, clock in fork_replay(trace):
            if agent is None:
                final = update
                break
            w = writers[agent]
            if prev is not None and agent != prev:
                # causality: this writer must have received the other's edits from the hub first,
                # so the log holds every transaction after its parents.
                await w.wait_for(lambda: clock_of(w, FORK_CLIENT[prev]) >= sent_clock[prev], timeout=60)
            w.doc.apply_update(update)  # edits on the writer's doc go to the hub as its own
            sent_clock[agent] = clock
            prev = agent
        for w in writers.values():
            await w.flush()
        other = writers[1 - prev]
        await other.wait_for(lambda: clock_of(other, FORK_CLIENT[prev]) >= sent_clock[prev], timeout=60)
        for w in writers.values():
            await w.close()
        return final

    final = asyncio.run(replay())
    # what the typists' merged branches say the text is: the trace's end content for a prefix
    trace["endContent"] = str(final.get("content", type=pycrdt.Text))
    return hub, doc_id, trace, final


@pytest.mark.slow  # the friends trace's replay
def test_concurrent_trace_converges_to_the_merged_text(friends):
    hub, doc_id, trace, _final = friends
    assert len(trace["endContent"]) > 1000
    status, body = hub.request("GET", f"/api/docs/{doc_id}")
    assert status == 200 and body["text"] == trace["endContent"]
    assert body["seq"] == FRIENDS_PREFIX  # one log entry per transaction


@pytest.mark.slow  # the friends trace's replay
def test_blame_gives_every_character_to_its_typist(friends):
    hub, doc_id, trace, final = friends
    expected = "".join(
        attrs["typist"][0] * len(chunk) for chunk, attrs in final.get("content", type=pycrdt.Text).diff()
    )
    status, body = hub.request("GET", f"/api/docs/{doc_id}/blame")
    assert status == 200
    spans = body["spans"]
    assert "".join(s["text"] for s in spans) == trace["endContent"]
    got = "".join(s["author_name"][0] * len(s["text"]) for s in spans)
    assert got == expected
    assert {s["author_id"] for s in spans} == {"alice", "bob"}
    assert {s["kind"] for s in spans} == {"human"}


@pytest.mark.slow  # the friends trace's replay
def test_version_at_n_equals_replaying_first_n_updates(friends):
    hub, doc_id, _trace, _final = friends
    store = Store(f"sqlite:///{hub.data_dir / 'tinymorph.db'}")
    rows = list(store.updates(doc_id))
    store.close()
    assert len(rows) > 1000
    doc = pycrdt.Doc()
    text = doc.get("content", type=pycrdt.Text)
    checkpoints = {1, 499, 500, 501, 1234, len(rows) // 2, len(rows)}
    for row in rows:
        doc.apply_update(row.data)
        if row.seq in checkpoints:
            status, body = hub.request("GET", f"/api/docs/{doc_id}/versions/{row.seq}")
            assert status == 200 and body["seq"] == row.seq
            assert body["text"] == str(text), row.seq
    # by time as well: the newest version at the last entry's timestamp is the whole document
    at = rows[-1].created_at.isoformat()
    status, body = hub.request("GET", f"/api/docs/{doc_id}/versions/{at.replace('+', '%2B')}")
    assert status == 200 and body["text"] == str(text)


@pytest.mark.slow  # the friends trace's replay
def test_diff_between_versions_is_attributed(friends):
    hub, doc_id, _trace, _final = friends
    lo, hi = 2000, 2600
    a = hub.request("GET", f"/api/docs/{doc_id}/versions/{lo}")[1]["text"]
    b = hub.request("GET", f"/api/docs/{doc_id}/versions/{hi}")[1]["text"]
    status, body = hub.request("GET", f"/api/docs/{doc_id}/diff?from={lo}&to={hi}")
    assert status == 200
    ops = body["ops"]
    assert "".join(o["text"] for o in ops if o["op"] != "insert") == a
    assert "".join(o["text"] for o in ops if o["op"] != "delete") == b
    changed = [o for o in ops if o["op"] != "equal"]
    assert changed and all(o["author_name"] in ("Alice", "Bob") for o in changed)


@pytest.mark.slow  # the friends trace's replay
def test_history_sessions_export(friends):
    hub, doc_id, _trace, _final = friends
    status, body = hub.request("GET", f"/api/docs/{doc_id}/history?from=10&to=20")
    assert status == 200
    assert [e["seq"] for e in body["entries"]] == list(range(10, 21))
    assert all(e["author_name"] in ("Alice", "Bob") and e["kind"] == "human" for e in body["entries"])
    status, body = hub.request("GET", f"/api/docs/{doc_id}/history?author=bob&limit=5")
    assert len(body["entries"]) == 5 and {e["author_name"] for e in body["entries"]} == {"Bob"}
    status, body = hub.request("GET", f"/api/docs/{doc_id}/sessions")
    assert status == 200
    authors = {a["author_name"]: a for s in body["sessions"] for a in s["authors"]}
    assert set(authors) == {"Alice", "Bob"}
    blame = hub.request("GET", f"/api/docs/{doc_id}/blame")[1]["spans"]
    for name, stats in authors.items():
        kept = sum(len(s["text"]) for s in blame if s["author_name"] == name)
        assert stats["kept"] == kept <= stats["written"]
    import json
    import urllib.request

    with urllib.request.urlopen(f"{hub.url}/api/docs/{doc_id}/export?format=md") as r:
        assert r.read().decode() == _trace["endContent"]
    with urllib.request.urlopen(f"{hub.url}/api/docs/{doc_id}/export?format=json") as r:
        session = json.load(r)
    assert session["text"] == _trace["endContent"] and len(session["entries"]) == session["seq"]


async def test_revert_a_run_as_a_new_attributed_edit(hub):
    doc_id, owner = hub.create_doc("revert")
    agent_token = hub.token(doc_id, "agent", "Muse", meta={"run_id": "run-1", "model": "smollm2", "steering": [{"source": "caa:formal"}]})
    viewer_token = hub.token(doc_id, "viewer", "Reviewer")
    human = HubClient(hub.ws_url, doc_id, token=hub.token(doc_id, "editor", "Ann"))
    agent = HubClient(hub.ws_url, doc_id, token=agent_token)
    for c in (human, agent):
        await c.connect()
        await c.synced()
    human.text.insert(0, "The cat sat. ")
    await agent.wait_for(lambda: str(agent.text) == "The cat sat. ")
    agent.text.insert(len(agent.text), "It purred, content and warm. ")
    del agent.text[4:8]  # the agent also deleted "cat "
    await human.wait_for(lambda: str(human.text) == "The sat. It purred, content and warm. ")
    human.text.insert(len(human.text), "The end.")
    await agent.wait_for(lambda: str(agent.text).endswith("The end."))

    blame = hub.request("GET", f"/api/docs/{doc_id}/blame", token=viewer_token)[1]["spans"]
    agent_spans = [s for s in blame if s["kind"] == "agent"]
    assert "".join(s["text"] for s in agent_spans) == "It purred, content and warm. "
    assert agent_spans[0]["run_id"] == "run-1" and agent_spans[0]["steering"] == [{"source": "caa:formal"}]

    assert hub.request("POST", f"/api/docs/{doc_id}/revert", {"run_id": "run-1"}, viewer_token)[0] == 403
    status, body = hub.request("POST", f"/api/docs/{doc_id}/revert", {"run_id": "run-1"}, owner)
    assert status == 200, body
    assert body["removed"] == len("It purred, content and warm. ") and body["restored"] == len("cat ")
    expected = "The cat sat. The end."
    await human.wait_for(lambda: str(human.text) == expected)
    await agent.wait_for(lambda: str(agent.text) == expected)
    last = hub.request("GET", f"/api/docs/{doc_id}/history?from={body['seq']}")[1]["entries"]
    assert last[0]["kind"] == "system" and last[0]["inserted"] == "cat "
    assert hub.request("POST", f"/api/docs/{doc_id}/revert", {}, owner)[0] == 400
    assert hub.request("GET", f"/api/docs/{doc_id}/versions/yesterday")[0] == 400
    for c in (human, agent):
        await c.close()


async def test_revert_by_author_and_by_range(hub):
    doc_id, owner = hub.create_doc("revert-2")
    ann = HubClient(hub.ws_url, doc_id, token=hub.token(doc_id, "editor", "Ann", user_id="ann"))
    bob = HubClient(hub.ws_url, doc_id, token=hub.token(doc_id, "editor", "Bob", user_id="bob"))
    for c in (ann, bob):
        await c.connect()
        await c.synced()
    ann.text.insert(0, "one ")
    await bob.wait_for(lambda: str(bob.text) == "one ")
    bob.text.insert(len(bob.text), "two ")
    await ann.wait_for(lambda: str(ann.text) == "one two ")
    ann.text.insert(len(ann.text), "three")
    await bob.wait_for(lambda: str(bob.text) == "one two three")

    status, body = hub.request("POST", f"/api/docs/{doc_id}/revert", {"author_id": "bob"}, owner)
    assert status == 200 and body["removed"] == 4
    await ann.wait_for(lambda: str(ann.text) == "one three")
    # the range covering only Ann's last entry ("three")
    seq_three = next(e["seq"] for e in hub.request("GET", f"/api/docs/{doc_id}/history")[1]["entries"]
                     if e["inserted"] == "three")
    status, body = hub.request("POST", f"/api/docs/{doc_id}/revert", {"from": seq_three, "to": seq_three}, owner)
    assert status == 200 and body["reverted"] == [seq_three]
    await bob.wait_for(lambda: str(bob.text) == "one ")
    for c in (ann, bob):
        await c.close()
