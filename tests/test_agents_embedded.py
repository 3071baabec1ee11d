"""Agents on the embedded default: the Celery worker runs inside the hub process (in-memory
broker), the real SmolLM2 model generates, and the agent writes through the hub as a Yjs peer."""

from __future__ import annotations

import pytest
from pycrdt import Map

from agents.anchors import relative_position, resolve
from collab.client import HubClient
from collab.testing import HubProcess

from agents_support import (INLINE_STEERING, agent_presences, await_until, get_run, log_entries, run_finished,
                            start_run)

pytestmark = pytest.mark.model  # not in `make test-fast`

OPENING = "The old lighthouse keeper climbed the stairs every night."


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    proc = HubProcess(tmp_path_factory.mktemp("agents") / "hub", env={"TINYMORPH_GRAPH_ENABLED": "false"})
    proc.start()
    yield proc
    proc.stop()


async def _doc_with(hub: HubProcess, text: str) -> tuple[str, str, HubClient]:
    doc_id, owner = hub.create_doc("agents")
    client = HubClient(hub.ws_url, doc_id, token=owner, presence={"user": {"name": "Ann", "kind": "human"}})
    await client.connect()
    await client.synced()
    client.text += text
    await client.flush()
    status, body = hub.request("GET", f"/api/docs/{doc_id}", None, owner)
    await await_until(lambda: hub.request("GET", f"/api/docs/{doc_id}", None, owner)[1]["text"] == text, "the text to commit")
    return doc_id, owner, client


def test_personas_are_listed_created_and_patched(hub):
    status, body = hub.request("GET", "/api/agents")
    assert status == 200
    by_id = {a["id"]: a for a in body["agents"]}
    assert {"editor", "scribe", "muse", "plain"} <= set(by_id)
    formal = by_id["scribe"]["steering"][0]
    assert formal["source"] == "caa:formal" and formal["kind"] == "vector" and formal["id"] == "formal"

    status, made = hub.request("POST", "/api/agents", {"name": "Poet", "prompt": "Write verse.",
                                                       "steering": [{"kind": "vector", "id": "joyful", "strength": 0.5}]})
    assert status == 201, made
    assert made["id"] == "poet" and made["steering"][0]["source"] == "caa:joyful"
    status, patched = hub.request("PATCH", "/api/agents/poet", {"prompt": "Write haiku.", "color": "#112233"})
    assert status == 200 and patched["prompt"] == "Write haiku." and patched["color"] == "#112233"
    assert {a["id"]: a for a in hub.request("GET", "/api/agents")[1]["agents"]}["poet"]["prompt"] == "Write haiku."

    for method, path, payload, code in [
        ("POST", "/api/agents", {"name": "Bad", "steering": [{"kind": "vector", "id": "no-such-vector"}]}, 400),
        ("POST", "/api/agents", {"name": "Bad", "steering": [{"source": "caa:formal", "strength": 1e9}]}, 400),
        ("POST", "/api/agents", {"name": "Bad", "color": "red"}, 400),
        ("POST", "/api/agents", {"name": "Poet"}, 400),  # exists
        ("PATCH", "/api/agents/nobody", {"prompt": "x"}, 404),
    ]:
        status, err = hub.request(method, path, payload)
        assert status == code, (payload, status, err)
        assert set(err["error"]) == {"type", "message"} and err["error"]["message"]


async def test_bad_run_requests_get_clear_errors(hub):
    doc_id, owner, client = await _doc_with(hub, OPENING)
    try:
        viewer = hub.token(doc_id, "viewer", "Vic")
        sel = {"from": relative_position(client.doc, 4, 0), "to": relative_position(client.doc, 7, 0)}
        cases = [
            (doc_id, {"agent": "nobody", "task": "continue"}, owner, 404, "UnknownAgent"),
            (doc_id, {"agent": "plain", "task": "summarise"}, owner, 400, "InvalidTask"),
            (doc_id, {"agent": "plain", "task": "continue", "mode": "loud"}, owner, 400, "InvalidTask"),
            (doc_id, {"agent": "plain", "task": "rewrite", "mode": "direct"}, owner, 400, "InvalidTask"),
            (doc_id, {"agent": "plain", "task": "continue", "options": {"steering": [{"source": "caa:formal", "strength": "x"}]}},
             owner, 400, "InvalidSteeringSpec"),
            (doc_id, {"agent": "plain", "task": "continue", "anchor": {"item": {"client": 1, "clock": 99}}}, owner, 400, "InvalidAnchor"),
            (doc_id, {"agent": "plain", "task": "continue", "anchor": "start"}, owner, 400, "InvalidAnchor"),
            (doc_id, {"agent": "plain", "task": "continue", "options": {"max_tokens": 16, "min_tokens": 17}},
             owner, 400, "InvalidRequest"),
            (doc_id, {"agent": "plain", "task": "continue", "options": {"min_tokens": "half"}}, owner, 400, "InvalidRequest"),
            (doc_id, {"agent": "plain", "task": "rewrite", "range": sel}, viewer, 403, "PermissionDenied"),
            ("no-such-doc", {"agent": "plain", "task": "continue"}, None, 404, "UnknownDocument"),
        ]
        for target, body, token, code, kind in cases:
            status, err = hub.request("POST", f"/api/docs/{target}/runs", body, token)
            assert (status, err["error"]["type"]) == (code, kind), (body, status, err)
        status, err = hub.request("GET", f"/api/docs/{doc_id}/runs/nope", None, owner)
        assert status == 404 and err["error"]["type"] == "UnknownRun"
        status, err = hub.request("DELETE", f"/api/docs/{doc_id}/runs/nope", None, viewer)
        assert status == 403
    finally:
        await client.close()


async def test_continue_streams_live_attributed_and_anchored(hub):
    doc_id, owner, client = await _doc_with(hub, OPENING)
    versions: list[str] = []
    sub = client.text.observe(lambda _e: versions.append(str(client.text)))  # noqa: F841 - kept alive
    seen_agents: list[dict] = []  # every agent presence the person's client was shown, in order
    client.awareness.observe(lambda topic, _c: topic == "change" and seen_agents.extend(agent_presences(client.peers)))
    try:
        run_id = start_run(hub, doc_id, {"agent": "plain", "task": "continue", "mode": "direct",
                                         "anchor": relative_position(client.doc, len(OPENING), 0),
                                         "options": {"max_tokens": 32, "seed": 1, "steering": INLINE_STEERING}})
        # while the agent writes, a person types at the start of the document
        await await_until(lambda: len(versions) > 0, "the agent's first words", 120)
        client.text.insert(0, "Prologue. ")
        await client.flush()
        run = await run_finished(hub, doc_id, run_id)
        assert run["status"] == "done", run
        written = run["result"]["text"]
        assert written.strip(), run
        await await_until(lambda: str(client.text) == "Prologue. " + OPENING + written, "the final text", 30)
    finally:
        await client.close()

    # Every version the person saw is the opening (after the prologue, once typed) followed by a
    # prefix of what the agent wrote: its words stayed anchored after the opening and arrived in
    # order; at least one of them was a part of its text, shown before the rest (streamed).
    shown = []
    for v in versions:
        body = v.removeprefix("Prologue. ")
        assert body.startswith(OPENING), v
        shown.append(body[len(OPENING):])
    assert all(written.startswith(part) for part in shown), (shown, written)
    assert any(0 < len(part) < len(written) for part in shown), ("the text arrived in one piece", shown)
    assert seen_agents and seen_agents[0]["user"]["name"] == "Plain" and seen_agents[0]["status"] in ("thinking", "writing")
    assert {s["status"] for s in seen_agents} & {"writing", "done"}, seen_agents  # its presence followed its work
    agent_entries = [e for e in log_entries(hub.data_dir, doc_id) if e["author_kind"] == "agent"]
    assert len(agent_entries) >= 2
    for e in agent_entries:
        assert e["author_id"] == "plain"
        assert e["meta"]["run_id"] == run_id and e["meta"]["requested_by"] == "guest"
        assert e["meta"]["steering"][0]["source"] == "inline" and e["meta"]["model"]


async def test_suggested_rewrite_is_accepted_by_a_person(hub):
    doc_id, owner, client = await _doc_with(hub, OPENING)
    try:
        lo, hi = OPENING.index("climbed"), len(OPENING)
        rng = {"from": relative_position(client.doc, lo, 0), "to": relative_position(client.doc, hi, 0)}
        run_id = start_run(hub, doc_id, {"agent": "editor", "task": "rewrite", "mode": "suggest", "range": rng,
                                         "options": {"max_tokens": 24, "seed": 1, "steering": INLINE_STEERING}})
        run = await run_finished(hub, doc_id, run_id)
        assert run["status"] == "done", run
        suggestions = client.doc.get("suggestions", type=Map)
        await await_until(lambda: run_id in suggestions and not suggestions[run_id]["streaming"], "the suggestion", 30)
        s = suggestions[run_id].to_py()
        assert s["status"] == "pending" and s["agent"] == "Editor" and s["run_id"] == run_id and s["kind"] == "rewrite"
        assert s["text"] == run["result"]["text"] and s["text"]
        assert str(client.text) == OPENING  # suggest mode leaves the text alone

        # accept it the way the browser does: apply the edit and set the status in one transaction
        with client.doc.transaction():
            client.text[lo:hi] = ""
            client.text.insert(lo, s["text"])
            suggestions[run_id]["status"] = "accepted"
        await client.flush()
        await await_until(lambda: "accepted_by" in suggestions[run_id], "the hub to stamp the acceptance", 30)
        assert suggestions[run_id]["accepted_by"]["user_id"] == "guest"
        assert str(client.text) == OPENING[:lo] + s["text"]
    finally:
        await client.close()
    log = log_entries(hub.data_dir, doc_id)
    assert any(e["author_kind"] == "agent" and e["meta"].get("run_id") == run_id for e in log)
    assert any(e["author_kind"] == "human" for e in log[-3:])


async def test_cancel_stops_the_run(hub):
    opening = OPENING + " Each time, he"  # mid-sentence: the model does not stop at a blank line first
    doc_id, owner, client = await _doc_with(hub, opening)
    try:
        # Seed 2 writes one long paragraph here: uncancelled, all 400 tokens (1,683 characters),
        # no blank line ends it early. So the run is still writing when the cancel comes, and
        # what a cancelled run leaves is far shorter than what it would have written.
        run_id = start_run(hub, doc_id, {"agent": "plain", "task": "continue", "mode": "direct",
                                         "options": {"max_tokens": 400, "temperature": 1.0, "seed": 2}})
        await await_until(lambda: len(str(client.text)) > len(opening), "the agent to start writing", 120)
        presences = agent_presences(client.peers)
        status, body = hub.request("DELETE", f"/api/docs/{doc_id}/runs/{run_id}", None, owner)
        assert status == 202, body  # accepted while it runs
        run = await run_finished(hub, doc_id, run_id, timeout=60)
        assert run["status"] == "cancelled", run
        assert presences
        # the agent leaves; once its socket is gone nothing more of it can arrive
        await await_until(lambda: not agent_presences(client.peers), "the agent to leave", 30)
        entry = client.doc.get("agent_runs", type=Map)[run_id]
        assert entry["status"] == "cancelled"
        text = str(client.text)
        assert text.startswith(opening)
        written = text[len(opening):]
        # generation stopped soon after the cancel: well short of the run's uncancelled paragraph
        # (generous: a quarter of it, ~100 tokens, on the slowest machine)
        assert 0 < len(written) < 1683 / 4, (len(written), written)
        status, history = hub.request("GET", f"/api/docs/{doc_id}/history?kind=agent", None, owner)
        assert status == 200 and history["entries"], history
        assert "".join(e["inserted"] for e in history["entries"]) == written  # the log holds exactly that
        status, err = hub.request("DELETE", f"/api/docs/{doc_id}/runs/{run_id}", None, owner)
        assert status == 409 and err["error"]["type"] == "RunNotCancellable"
    finally:
        await client.close()


async def test_a_yjs_client_requests_a_run_through_the_requests_map(hub):
    doc_id, owner, client = await _doc_with(hub, OPENING)
    try:
        requests = client.doc.get("requests", type=Map)
        requests["r1"] = {"agent": "plain", "task": "margin_note", "mode": "direct",
                          "range": {"from": relative_position(client.doc, 0, 0),
                                    "to": relative_position(client.doc, len(OPENING), 0)},
                          "options": {"max_tokens": 16, "seed": 1}}
        requests["r2"] = {"agent": "nobody", "task": "continue"}
        await client.flush()
        await await_until(lambda: (requests.get("r1") or {}).get("status") == "done", "the request to be served", 180)
        await await_until(lambda: (requests.get("r2") or {}).get("status") == "failed", "the bad request to fail", 30)
        run_id = requests["r1"]["run_id"]
        assert get_run(hub, doc_id, run_id)["status"] == "done"
        assert "unknown agent" in requests["r2"]["error"]
        note = client.doc.get("suggestions", type=Map)[run_id]
        assert note["kind"] == "margin_note" and note["note"] and note["status"] == "pending"
        assert str(client.text) == OPENING  # a note never edits the text
        run = get_run(hub, doc_id, run_id)
        assert run["requested_by"] == "guest"
    finally:
        await client.close()


async def test_a_failing_model_call_fails_the_run_with_the_reason(hub):
    doc_id, owner, client = await _doc_with(hub, OPENING)
    try:
        bad = [{"source": "inline", "vector": [1.0, 2.0, 3.0], "layers": [5], "strength": 0.5}]
        run_id = start_run(hub, doc_id, {"agent": "plain", "task": "continue", "options": {"steering": bad}})
        run = await run_finished(hub, doc_id, run_id, timeout=120)
        assert run["status"] == "failed"
        assert "model call failed" in run["error"] and "576" in run["error"]
        assert str(client.text) == OPENING
    finally:
        await client.close()


async def test_define_in_direct_mode_adds_a_parenthesis_after_the_term(hub):
    text = "The keeper trimmed the wick of the lamp."
    doc_id, owner, client = await _doc_with(hub, text)
    try:
        lo = text.index("wick")
        rng = {"from": relative_position(client.doc, lo, 0), "to": relative_position(client.doc, lo + 4, 0)}
        run_id = start_run(hub, doc_id, {"agent": "plain", "task": "define", "mode": "direct", "range": rng,
                                         "options": {"max_tokens": 16, "seed": 1}})
        run = await run_finished(hub, doc_id, run_id)
        assert run["status"] == "done", run
        # the run is done once its last write is committed; the client may still be receiving it
        await await_until(lambda: str(client.text).endswith(")" + text[lo + 4:]), "the whole definition", 30)
        got = str(client.text)
        assert got.startswith(text[: lo + 4] + " (") and got.endswith(")" + text[lo + 4:]), got
    finally:
        await client.close()


async def test_expand_and_contract_change_the_targeted_text_in_the_right_direction(hub):
    short = "The keeper lit the lamp."
    wordy = ("It is a fact that is widely known and very often repeated by many people in many places that the "
             "old keeper of the lighthouse, who had been the keeper of that very same lighthouse for a great many "
             "long years, always, without fail and without any exception whatsoever, climbed all of the many "
             "stairs of the tall lighthouse each and every single night of the year.")
    doc_id, owner, client = await _doc_with(hub, short + "\n\n" + wordy)
    try:
        def span(lo: int, hi: int) -> dict:
            return {"from": relative_position(client.doc, lo, 0), "to": relative_position(client.doc, hi, 0)}
        # seeded: which text is sampled is fixed; that it is longer (shorter) is the property
        expand = start_run(hub, doc_id, {"agent": "plain", "task": "expand", "mode": "direct",
                                         "range": span(0, len(short)), "options": {"seed": 1}})
        contract = start_run(hub, doc_id, {"agent": "plain", "task": "contract", "mode": "suggest",
                                           "range": span(len(short) + 2, len(short) + 2 + len(wordy)),
                                           "options": {"seed": 1}})
        for run_id in (expand, contract):
            run = await run_finished(hub, doc_id, run_id)
            assert run["status"] == "done", run
        grown = get_run(hub, doc_id, expand)["result"]["text"]
        # expand, direct: the sentence was replaced by a longer text; the paragraph after it kept
        await await_until(lambda: str(client.text) == grown + "\n\n" + wordy, "the expanded sentence", 30)
        assert len(grown) > len(short), grown
        # contract, suggested: a shorter version of the paragraph waits in the suggestions map
        suggestions = client.doc.get("suggestions", type=Map)
        await await_until(lambda: contract in suggestions and not suggestions[contract]["streaming"], "the suggestion", 30)
        s = suggestions[contract].to_py()
        assert s["kind"] == "contract" and s["status"] == "pending"
        assert s["text"].strip() and len(s["text"]) < len(wordy), s["text"]
    finally:
        await client.close()


@pytest.fixture(scope="module")
def watched_hub(tmp_path_factory):
    """A hub with the watcher on, a short pause, and the unsteered persona (no vector to build)."""
    proc = HubProcess(tmp_path_factory.mktemp("watcher") / "hub",
                      env={"TINYMORPH_GRAPH_ENABLED": "false", "TINYMORPH_WATCHER_ENABLED": "true",
                           "TINYMORPH_WATCHER_DEBOUNCE_S": "1.5", "TINYMORPH_WATCHER_AGENT": "plain"})
    proc.start()
    yield proc
    proc.stop()


async def test_the_watcher_proposes_a_margin_note_after_a_pause(watched_hub):
    hub = watched_hub
    doc_id, owner = hub.create_doc("watched")
    async with HubClient(hub.ws_url, doc_id, token=owner, presence={"user": {"name": "Ann", "kind": "human"}}) as client:
        await client.synced()
        for piece in ("The tide came in. ", "The boats rose with it.", "\n\nThe keeper ", "watched from the tower."):
            client.text += piece  # a burst of edits, closer together than the watcher's pause
            await client.flush()
        suggestions = client.doc.get("suggestions", type=Map)
        await await_until(lambda: any(not v["streaming"] for v in suggestions.values()), "the watcher's margin note", 240)
        (run_id, note), = ((k, v.to_py()) for k, v in suggestions.items())
        assert note["kind"] == "margin_note" and note["status"] == "pending" and note["note"].strip(), note
        assert note["agent_id"] == "plain" and note["run_id"] == run_id
        assert str(client.text) == "The tide came in. The boats rose with it.\n\nThe keeper watched from the tower."
        runs = hub.request("GET", f"/api/docs/{doc_id}/runs", None, owner)[1]["runs"]
        assert [(r["id"], r["task"], r["mode"]) for r in runs] == [(run_id, "margin_note", "suggest")]  # one pause, one run
        run = await run_finished(hub, doc_id, run_id)
        assert run["status"] == "done" and run["requested_by"] == "guest"  # on behalf of the writer
        # the note is anchored to the last paragraph
        assert (resolve(client.doc, note["from"]), resolve(client.doc, note["to"])) == (len("The tide came in. The boats rose with it.\n\n"), len(str(client.text)))
