"""Steering vectors over REST (issue 16, requirement 3): a writer posts example pairs, a worker
builds the vector with the real model while the API reports progress, and the vector steers
generation by name; bad requests get a clear 400, and the vector exports as a llama.cpp file."""

from __future__ import annotations

import json
import time

import pytest
from gguf import GGUFReader

from agents.exceptions import InvalidVectorRequest
from agents.vector_jobs import MAX_PAIRS, MAX_TEXT_CHARS, VectorRequest, voice_units
from collab.testing import HubProcess

PAIRS = [["What a glorious, sunlit morning; everything hums with delight!", "What a grey, heavy morning; nothing matters."],
         ["I laughed all the way home, the world felt kind.", "I trudged home; the world felt cold and empty."],
         ["The garden burst with colour and birdsong.", "The garden lay bare and silent."]]


@pytest.mark.parametrize("body, says", [
    ({"pairs": PAIRS}, "name"),
    ({"name": "a b", "pairs": PAIRS}, "name"),
    ({"name": "x", "pairs": []}, "non-empty"),
    ({"name": "x", "pairs": [["only one side"]]}, "pairs[0]"),
    ({"name": "x", "pairs": [["positive", "   "]]}, "one-sided"),
    ({"name": "x", "pairs": [["same", "same"]]}, "same text"),
    ({"name": "x", "pairs": [["x" * (MAX_TEXT_CHARS + 1), "y"]]}, "at most"),
    ({"name": "x", "pairs": [["a", "b"]] * (MAX_PAIRS + 1)}, "at most"),
    ({"name": "x", "pairs": [["a", "b"]], "layers": [True]}, "layers"),
    ({"name": "x", "pairs": [["a", "b"]], "layers": [0]}, "layers"),
    ({"name": "x", "pairs": [["a", "b"]], "voice": {"doc_ids": ["d"]}}, "got pairs and voice"),
    ({"name": "x", "voice": {"doc_ids": []}}, "voice.doc_ids"),
    ({"name": "x"}, "got none"),
    ({"name": "x", "instruction": "  "}, "instruction"),
    ({"name": "x", "instruction": "write about winter", "pairs": [["a", "b"]]}, "got pairs and instruction"),
    ({"name": "x", "instruction": "write about winter", "layers": [3, 4]}, "one layer"),
    ({"name": "x", "voice": {"doc_ids": ["d"], "author_id": 7}}, "voice.author_id"),
])
def test_bad_requests_say_what_is_wrong(body, says):
    with pytest.raises(InvalidVectorRequest, match=says.replace("[", "\\[").replace("]", "\\]")):
        VectorRequest.from_json(body)


def test_a_good_request_is_cleaned():
    req = VectorRequest.from_json({"name": "cheer-up", "pairs": [[" happy ", "sad"]], "layers": [12, 8, 8]})
    assert req.pairs == [("happy", "sad")] and req.layers == [8, 12]


def test_a_voice_is_rewritten_sentence_by_sentence_across_all_paragraphs():
    """Sentences of 40+ characters (fragments left out; a paragraph without one goes whole), each
    paragraph's first before any paragraph's second, so a cap keeps every paragraph."""
    paragraphs = ['Rain again. The gutters talk all night, and I lie awake listening to them. "Stop," I say to '
                  'them, and they do not stop for anyone.', "Short one, no full stop but long enough to count here",
                  "Numbers first. 3 ships came in on Tuesday, and two of them carried nothing but salt and rope."]
    assert voice_units(paragraphs) == [
        "The gutters talk all night, and I lie awake listening to them.",
        "Short one, no full stop but long enough to count here",
        "3 ships came in on Tuesday, and two of them carried nothing but salt and rope.",
        '"Stop," I say to them, and they do not stop for anyone.']
    assert voice_units(paragraphs, limit=3) == voice_units(paragraphs)[:3]


#: Strength calibration after a build, made small for the suite (the default ladder: calibration.py).
TINY_LADDER = {"strengths": [0.1, 0.3], "openings": ["The weather today was", "When we met, she"], "seeds": [0],
               "max_tokens": 12}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    proc = HubProcess(tmp_path_factory.mktemp("vectors") / "hub", auth_mode="tokens",
                      env={"TINYMORPH_GRAPH_ENABLED": "false", "TINYMORPH_CALIBRATION": json.dumps(TINY_LADDER)}).start()
    proc.user_token = proc.issue_token("alice", "Alice")
    yield proc
    assert proc.stop() == 0
    proc.assert_clean()


def test_routes_need_a_token_and_bad_pairs_get_400(hub):
    doc_id, owner = hub.create_doc("vectors", token=hub.user_token)
    assert hub.request("GET", "/api/vectors")[0] == 401
    status, body = hub.request("POST", "/api/vectors", {"name": "x", "pairs": [["one side", ""]]}, owner)
    assert status == 400 and "one-sided" in body["error"]["message"]
    status, body = hub.request("POST", "/api/vectors", {"name": "joyful", "pairs": PAIRS}, owner)
    assert status == 409  # a shipped vector's name
    viewer = hub.token(doc_id, "viewer", "Vic")
    assert hub.request("POST", "/api/vectors", {"name": "mine", "pairs": PAIRS}, viewer)[0] == 403
    assert hub.request("GET", "/api/vectors/nope", None, owner)[0] == 404


@pytest.mark.model
def test_a_vector_from_examples_builds_in_a_worker_and_steers_by_name(hub, tmp_path):
    doc_id, owner = hub.create_doc("vectors", token=hub.user_token)
    status, first = hub.request("POST", "/api/vectors", {"name": "sunny", "pairs": PAIRS, "layers": [10]}, owner)
    assert status == 202 and first["status"] == "building", first
    assert hub.request("POST", "/api/vectors", {"name": "sunny", "pairs": PAIRS}, owner)[0] == 409  # one build at a time
    seen, deadline = [], time.monotonic() + 240
    while time.monotonic() < deadline:
        status, now = hub.request("GET", "/api/vectors/sunny", None, owner)
        assert status == 200, now
        seen.append((now["status"], now["progress"]))
        if now["status"] != "building":
            break
        time.sleep(0.5)
    assert now["status"] == "ready", (now, seen)
    assert now["layers"] == [10] and now["progress"] == 1.0
    assert now["provenance"]["pairs"] == 3 and now["provenance"]["method"] == "caa"
    lo, hi = now["recommended"]
    assert 0 < lo <= now["default_strength"] <= hi  # strength guidance served with it
    # ... measured on this vector by the worker (the ladder from the strength 0 up), stored with it
    assert now["strength_basis"].startswith("calibrated"), now
    points = now["provenance"]["strength"]["points"]
    assert points[0]["strength"] == 0 and len(points) >= 2 and now["default_strength"] in TINY_LADDER["strengths"]
    assert [p for _, p in seen] == sorted(p for _, p in seen)  # progress only goes up
    listed = {v["name"]: v for v in hub.request("GET", "/api/vectors", None, owner)[1]["vectors"]}
    assert listed["sunny"]["status"] == "ready" and listed["joyful"]["shipped"] is True

    # By name, without a strength: the served default applies (same text with it spelled out).
    def complete(steering):
        status, out = hub.request("POST", "/v1/completions", {
            "prompt": "The weather today", "max_tokens": 12, "temperature": 0, "steering": steering}, owner)
        assert status == 200, out
        return out["choices"][0]["text"]

    implicit = complete([{"source": "caa:sunny"}])
    explicit = complete([{"source": "caa:sunny", "strength": now["default_strength"]}])
    assert implicit == explicit
    assert complete([{"source": "caa:sunny", "strength": 4 * hi}]) != complete([])  # it does steer

    status, data = _get_bytes(hub, "/api/vectors/sunny/gguf", owner)
    assert status == 200
    path = tmp_path / "sunny.gguf"
    path.write_bytes(data)
    names = [t.name for t in GGUFReader(path).tensors]
    assert len(names) == 1 and names[0].startswith("direction.")

    assert hub.request("DELETE", "/api/vectors/sunny", None, owner)[0] == 200
    assert hub.request("GET", "/api/vectors/sunny", None, owner)[0] == 404


def _get_bytes(hub: HubProcess, path: str, token: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(hub.url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


VOICE = ["Rain again. The gutters talk all night, and I lie awake listening to them argue about nothing.",
         "My grandmother kept her buttons in a biscuit tin. Nobody ever sewed with them. They were for counting.",
         "The bus was late, so I walked. Walking, I noticed the bakery had changed its sign, badly.",
         "Some mornings the sea is a sheet of tin; some mornings it is a dog that will not settle."]


@pytest.mark.model
def test_in_my_voice_builds_from_the_writers_own_paragraphs(hub):
    import asyncio

    from collab.client import HubClient

    doc_id, owner = hub.create_doc("voice", token=hub.user_token)
    other = hub.token(doc_id, "editor", "Bob")

    async def write() -> None:
        async with HubClient(hub.ws_url, doc_id, token=owner) as alice:
            await alice.synced()
            alice.text.insert(0, "\n\n".join(VOICE))
            await alice.flush()
        async with HubClient(hub.ws_url, doc_id, token=other) as bob:  # not Alice's: left out
            await bob.synced()
            bob.text.insert(len(bob.text), "\n\nBob writes a paragraph of his own here, long enough to count.")
            await bob.flush()

    asyncio.run(write())
    stranger = hub.issue_token("mallory", "Mallory")
    status, body = hub.request("POST", "/api/vectors", {"name": "theirs", "voice": {"doc_ids": [doc_id]}}, stranger)
    assert status == 403, body  # only writing the caller may read
    status, body = hub.request("POST", "/api/vectors", {"name": "mine", "voice": {"doc_ids": [doc_id]}}, owner)
    assert status == 202, body
    deadline = time.monotonic() + 300
    while (now := hub.request("GET", "/api/vectors/mine", None, owner)[1])["status"] == "building":
        assert time.monotonic() < deadline, now
        time.sleep(1)
    assert now["status"] == "ready", now
    assert now["provenance"]["voice"]["paragraphs"] == len(VOICE)  # Alice's four paragraphs, not Bob's
    # their sentences of 40+ characters (one in each), each against the model's rewrite of it
    assert 3 <= now["provenance"]["pairs"] <= 4
    assert now["provenance"]["source"] == "voice:alice"
    # A persona writes in that voice: steering by name, at the strength the build measured.
    status, persona = hub.request("POST", "/api/agents", {"name": "Alice's voice", "steering": [{"source": "caa:mine"}]},
                                  owner)
    assert status == 201, persona
    term = persona["steering"][0]
    assert term["source"] == "caa:mine" and term["default_strength"] == now["default_strength"]
    assert term["recommended"] == now["recommended"]


@pytest.mark.model
def test_a_voice_from_too_little_writing_fails_with_its_reason(hub):
    """Two paragraphs are too few to tell a voice from: the job ends "failed" saying so, and
    builds nothing (the vector list is as it was)."""
    import asyncio

    from collab.client import HubClient

    doc_id, owner = hub.create_doc("thin voice", token=hub.user_token)

    async def write() -> None:
        async with HubClient(hub.ws_url, doc_id, token=owner) as alice:
            await alice.synced()
            alice.text.insert(0, "\n\n".join(VOICE[:2]))
            await alice.flush()

    asyncio.run(write())
    before = {v["name"] for v in hub.request("GET", "/api/vectors", None, owner)[1]["vectors"]}
    status, body = hub.request("POST", "/api/vectors", {"name": "thin", "voice": {"doc_ids": [doc_id]}}, owner)
    assert status == 202, body
    deadline = time.monotonic() + 120
    while (now := hub.request("GET", "/api/vectors/thin", None, owner)[1])["status"] == "building":
        assert time.monotonic() < deadline, now
        time.sleep(0.5)
    assert now["status"] == "failed" and "2 paragraphs written by alice" in now["error"], now
    assert "at least 3 are needed" in now["error"] and now["models"] == []
    after = {v["name"] for v in hub.request("GET", "/api/vectors", None, owner)[1]["vectors"]}
    assert after - before <= {"thin"} and before <= after
