"""README promises of the review endpoints on PostgreSQL (history, versions, diff, blame, sessions,
revert by author and by time, export errors, suggestion counts) and of what the extensions mount
in a hub (``/api/sae``, ``/v1`` errors beyond chat). One hub on one PostgreSQL database for the
module; each test its own document."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest
from promises_support import HUB_ONLY, committed, pg_database, until
from pycrdt import Map

from collab.client import HubClient
from collab.testing import HubProcess

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with pg_database() as url:
        proc = HubProcess(tmp_path_factory.mktemp("promises-review") / "hub", db=url, env=HUB_ONLY)
        proc.start(timeout=60)
        try:
            yield proc
        finally:
            proc.stop()


async def _writers(hub: HubProcess, doc_id: str, *names: str) -> list[HubClient]:
    """An editor per name, its user id the name in lower case."""
    out = []
    for name in names:
        c = HubClient(hub.ws_url, doc_id, token=hub.token(doc_id, "editor", name, user_id=name.lower()))
        await c.connect()
        await c.synced()
        out.append(c)
    return out


def _get(hub: HubProcess, path: str, token: str | None = None):
    status, body = hub.request("GET", path, None, token)
    assert status == 200, (path, status, body)
    return body


WHO = ("seq", "author_id", "author_name", "kind", "inserted", "deleted")


async def test_history_versions_diff_blame_sessions_and_revert_on_postgresql(hub):
    """Ann writes "Hello world.", Bob appends " Nice day.", Ann deletes "Nice ": every review
    endpoint's exact answer, then Bob's changes reverted as one system edit."""
    doc_id, owner = hub.create_doc("review on postgres")
    ann, bob = await _writers(hub, doc_id, "Ann", "Bob")
    try:
        ann.text.insert(0, "Hello world.")
        await bob.wait_for(lambda: str(bob.text) == "Hello world.")
        bob.text.insert(len(bob.text), " Nice day.")
        await ann.wait_for(lambda: str(ann.text) == "Hello world. Nice day.")
        del ann.text[13:18]
        await bob.wait_for(lambda: str(bob.text) == "Hello world. day.")
        await committed(hub, doc_id, 3)
        d = f"/api/docs/{doc_id}"

        entries = _get(hub, f"{d}/history")["entries"]
        assert [tuple(e[k] for k in WHO) for e in entries] == [
            (1, "ann", "Ann", "human", "Hello world.", ""),
            (2, "bob", "Bob", "human", " Nice day.", ""),
            (3, "ann", "Ann", "human", "", "Nice "),
        ]
        assert all(datetime.fromisoformat(e["at"]).tzinfo is not None for e in entries)
        assert [e["seq"] for e in _get(hub, f"{d}/history?author=bob")["entries"]] == [2]
        assert [e["seq"] for e in _get(hub, f"{d}/history?author=Ann")["entries"]] == [1, 3]
        assert [e["seq"] for e in _get(hub, f"{d}/history?kind=human&limit=2")["entries"]] == [1, 2]
        assert [e["seq"] for e in _get(hub, f"{d}/history?from=2&to=3")["entries"]] == [2, 3]
        assert _get(hub, f"{d}/history?kind=agent")["entries"] == []

        assert [_get(hub, f"{d}/versions/{n}") for n in (1, 2, 3)] == [
            {"seq": 1, "text": "Hello world."}, {"seq": 2, "text": "Hello world. Nice day."},
            {"seq": 3, "text": "Hello world. day."}]
        at2 = entries[1]["at"].replace("+", "%2B")
        assert _get(hub, f"{d}/versions/{at2}") == {"seq": 2, "text": "Hello world. Nice day."}

        bob_id = {"author_id": "bob", "author_name": "Bob", "kind": "human"}
        assert _get(hub, f"{d}/diff?from=1&to=3")["ops"] == [
            {"op": "equal", "text": "Hello world."}, {"op": "insert", "text": " day.", **bob_id}]
        # a deletion is attributed to the characters' writer (Bob wrote "Nice ")
        assert _get(hub, f"{d}/diff?from=2&to=3")["ops"] == [
            {"op": "equal", "text": "Hello world."}, {"op": "equal", "text": " "},
            {"op": "delete", "text": "Nice ", **bob_id}, {"op": "equal", "text": "day."}]

        blame = _get(hub, f"{d}/blame")
        assert blame == {"seq": 3, "spans": [
            {"text": "Hello world.", "seq": 1, "author_id": "ann", "author_name": "Ann", "kind": "human"},
            {"text": " day.", "seq": 2, **bob_id}]}
        assert _get(hub, f"{d}/blame?at=2")["spans"][-1]["text"] == " Nice day."

        sessions = _get(hub, f"{d}/sessions")
        assert len(sessions["sessions"]) == 1 and sessions["suggestions"] == {}
        session = sessions["sessions"][0]
        assert session["entries"] == 3 and session["start"] == entries[0]["at"] and session["end"] == entries[2]["at"]
        stats = {"suggestions_accepted": 0, "suggestions_rejected": 0}
        assert session["authors"] == [
            {"author_id": "ann", "author_name": "Ann", "kind": "human", "written": 12, "kept": 12, "deleted": 5,
             "entries": 2, **stats},
            {**bob_id, "written": 10, "kept": 5, "deleted": 0, "entries": 1, **stats}]

        viewer = hub.token(doc_id, "viewer", "Vera")
        assert hub.request("POST", f"{d}/revert", {"author_id": "bob"}, viewer)[0] == 403
        status, done = hub.request("POST", f"{d}/revert", {"author_id": "bob"}, owner)
        assert status == 200, done
        assert done == {"seq": 4, "removed": 5, "restored": 0, "reverted": [2]}
        await ann.wait_for(lambda: str(ann.text) == "Hello world.")
        last = _get(hub, f"{d}/history?from=4")["entries"]
        assert [(e["seq"], e["kind"], e["inserted"], e["deleted"]) for e in last] == [(4, "system", "", " day.")]
        assert _get(hub, f"{d}/versions/4") == {"seq": 4, "text": "Hello world."}
        assert _get(hub, f"{d}/versions/3")["text"] == "Hello world. day."  # history is kept
    finally:
        for c in (ann, bob):
            await c.close()


async def _three_timed_edits(hub: HubProcess, doc_id: str) -> tuple[list[HubClient], list[dict]]:
    """Ann "one ", Bob "two ", Ann "three", a good half second apart; the history entries."""
    ann, bob = await _writers(hub, doc_id, "Ann", "Bob")
    for i, (who, piece) in enumerate([(ann, "one "), (bob, "two "), (ann, "three")]):
        before = "".join(["one ", "two ", "three"][:i])
        await until(lambda w=who, b=before: str(w.text) == b, "the other's edit")
        who.text.insert(len(who.text), piece)
        await committed(hub, doc_id, i + 1)
        await asyncio.sleep(0.6)
    entries = _get(hub, f"/api/docs/{doc_id}/history")["entries"]
    assert [e["inserted"] for e in entries] == ["one ", "two ", "three"]
    return [ann, bob], entries


def _between(a: str, b: str) -> str:
    ta, tb = datetime.fromisoformat(a), datetime.fromisoformat(b)
    return (ta + (tb - ta) / 2).astimezone(UTC).isoformat()


async def test_revert_by_time_with_iso_8601_times_from_the_timeline(hub):
    doc_id, owner = hub.create_doc("revert by time")
    clients, entries = await _three_timed_edits(hub, doc_id)
    try:
        # sessions split at idle gaps: the edits are 0.6 s apart
        assert [s["entries"] for s in _get(hub, f"/api/docs/{doc_id}/sessions?gap=0.3")["sessions"]] == [1, 1, 1]
        assert [s["entries"] for s in _get(hub, f"/api/docs/{doc_id}/sessions?gap=60")["sessions"]] == [3]
        at = entries[1]["at"]  # Bob's entry, from..to its own time
        status, done = hub.request("POST", f"/api/docs/{doc_id}/revert", {"from": at, "to": at}, owner)
        assert status == 200, done
        assert (done["reverted"], done["removed"], done["restored"]) == ([2], 4, 0)
        await clients[0].wait_for(lambda: str(clients[0].text) == "one three")
        status, err = hub.request("POST", f"/api/docs/{doc_id}/revert", {"from": "last tuesday", "to": at}, owner)
        assert status == 400 and err["error"]["type"] == "InvalidRequest"
    finally:
        for c in clients:
            await c.close()


async def test_revert_by_a_time_window_undoes_only_the_changes_made_within_it(hub):
    doc_id, owner = hub.create_doc("revert a time window")
    clients, entries = await _three_timed_edits(hub, doc_id)
    try:
        window = {"from": _between(entries[0]["at"], entries[1]["at"]),
                  "to": _between(entries[1]["at"], entries[2]["at"])}  # only Bob's "two " is inside
        status, done = hub.request("POST", f"/api/docs/{doc_id}/revert", window, owner)
        assert status == 200, done
        assert done["reverted"] == [2], done
    finally:
        for c in clients:
            await c.close()


async def test_sessions_count_each_agents_accepted_and_rejected_suggestions(hub):
    """An agent peer (an ``agent`` token, as a run's) leaves three suggestions in the ``suggestions``
    map; a person rejects one and accepts one: ``/sessions`` counts them for that agent."""
    doc_id, _owner = hub.create_doc("suggestions")
    (ann,) = await _writers(hub, doc_id, "Ann")
    agent = HubClient(hub.ws_url, doc_id, token=hub.token(doc_id, "agent", "Editor", user_id="editor",
                                                          meta={"run_id": "run-s"}))
    await agent.connect()
    await agent.synced()
    try:
        ann.text.insert(0, "The cat sat.")
        await agent.wait_for(lambda: str(agent.text) == "The cat sat.")
        sug = agent.doc.get("suggestions", type=Map)
        with agent.doc.transaction():
            for key, text in (("s1", "The cat sat down."), ("s2", "A cat sat."), ("s3", "The cat slept.")):
                sug[key] = Map({"kind": "rewrite", "text": text, "agent": "Editor", "agent_id": "editor",
                                "run_id": "run-s", "status": "pending", "streaming": False})
        mine = ann.doc.get("suggestions", type=Map)
        await ann.wait_for(lambda: len(mine) == 3)
        mine["s1"]["status"] = "rejected"
        await ann.flush()
        with ann.doc.transaction():  # accepting applies the text and sets the status together
            ann.text[0:len(ann.text)] = ""
            ann.text.insert(0, "A cat sat.")
            mine["s2"]["status"] = "accepted"
        await ann.flush()
        # the hub stamps who decided (agents/reviews.py): then both decisions are in the log
        await ann.wait_for(lambda: all("decided_by" in mine[k] for k in ("s1", "s2")), timeout=30)
        body = _get(hub, f"/api/docs/{doc_id}/sessions")
        assert body["suggestions"] == {"Editor": {"accepted": 1, "rejected": 1, "pending": 1}}
        authors = {a["author_id"]: a for s in body["sessions"] for a in s["authors"]}
        assert authors["editor"]["kind"] == "agent"
        assert (authors["editor"]["suggestions_accepted"], authors["editor"]["suggestions_rejected"]) == (1, 1)
        assert (authors["ann"]["suggestions_accepted"], authors["ann"]["suggestions_rejected"]) == (0, 0)
        assert mine["s1"]["decided_by"]["user_id"] == "ann" and "accepted_by" not in mine["s1"]
        assert mine["s2"]["accepted_by"]["user_id"] == "ann"
    finally:
        for c in (ann, agent):
            await c.close()


def _raw(hub: HubProcess, method: str, path: str, data: bytes | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(hub.url + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("content-type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read().decode()


def test_export_errors_are_the_hubs_error_json(hub):
    doc_id, _ = hub.create_doc("export")
    status, kind, body = _raw(hub, "GET", f"/api/docs/{doc_id}/export?format=pdf")
    assert (status, kind) == (400, "application/json")
    assert json.loads(body) == {"error": {"type": "InvalidRequest", "message": "format must be md or json"}}
    for fmt in ("md", "json"):
        status, kind, body = _raw(hub, "GET", f"/api/docs/no-such-doc/export?format={fmt}")
        assert (status, kind) == (404, "application/json")
        assert json.loads(body) == {"error": {"type": "UnknownDocument", "message": "unknown document 'no-such-doc'"}}
    assert _raw(hub, "GET", f"/api/docs/{doc_id}/export?format=md")[:2] == (200, "text/markdown; charset=utf-8")


def test_api_sae_is_mounted_in_the_hub(hub):
    status, body = hub.request("GET", "/api/sae")
    assert status == 200 and body == {"saes": []}  # a list; nothing trained in this database
    status, body = hub.request("GET", "/api/sae/features?sae=no-such-sae")
    assert status == 404 and body["error"]["code"] == "sae_not_found", body


def _openai_error(status: int, body: str, code: int, param: str | None, err_code: str) -> None:
    assert status == code, (status, body)
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", param, err_code), err


@pytest.mark.parametrize("path, payload, status, param, code", [
    ("/v1/completions", {"prompt": 42}, 400, "prompt", "invalid_request"),
    ("/v1/completions", {"messages": [{"role": "user", "content": "hi"}]}, 400, "prompt", "invalid_request"),
    ("/v1/completions", {"prompt": "Once", "n": 2}, 400, "n", "invalid_request"),
    ("/v1/completions", ["not", "an", "object"], 400, None, "invalid_request"),
    ("/v1/completions", {"model": "gpt-4", "prompt": "Once"}, 404, "model", "model_not_found"),
    ("/v1/embeddings", {}, 400, "input", "invalid_request"),
    ("/v1/embeddings", {"input": []}, 400, "input", "invalid_request"),
    ("/v1/embeddings", {"input": [1, 2]}, 400, "input", "invalid_request"),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"}, 404, "model", "model_not_found"),
    ("/v1/steer/compare", {"prompt": "Once"}, 400, "steering", "invalid_request"),
], ids=["prompt-not-text", "completions-without-prompt", "n-2", "body-not-object", "unknown-model",
        "embeddings-without-input", "empty-input", "input-not-text", "unknown-embedding-model", "compare-unsteered"])
def test_v1_bad_requests_beyond_chat_are_openai_errors(hub, path, payload, status, param, code):
    got, _kind, body = _raw(hub, "POST", path, json.dumps(payload).encode())
    _openai_error(got, body, status, param, code)


def test_v1_body_that_is_not_json_is_an_openai_error(hub):
    for path in ("/v1/completions", "/v1/embeddings"):
        got, _kind, body = _raw(hub, "POST", path, b"{not json")
        _openai_error(got, body, 400, None, "invalid_request")
