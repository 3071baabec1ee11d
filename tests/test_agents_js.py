"""A stock JavaScript client (yjs + y-websocket) sees an agent's text and its presence."""

from __future__ import annotations

import pytest

from agents.anchors import resolve
from collab.client import HubClient
from collab.testing import HubProcess

from _jshelpers import JsClients
from agents_support import agent_presences, run_finished, start_run

pytestmark = [pytest.mark.node, pytest.mark.model]  # a model: not in `make test-fast`


@pytest.fixture
def js():
    clients = JsClients()
    yield clients
    for c in clients.clients:
        c.close()


async def test_js_client_sees_agent_text_and_presence(tmp_path, js):
    hub = HubProcess(tmp_path / "hub", env={"TINYMORPH_GRAPH_ENABLED": "false"}).start()
    try:
        doc_id, owner = hub.create_doc("js")
        browser = js(hub.ws_url, doc_id, token=owner, name="Bea")
        browser.wait_synced()
        browser.insert(0, "Snow covered the quiet village.")
        browser.wait_for(lambda c: c.text == "Snow covered the quiet village.", "own text")
        run_id = start_run(hub, doc_id, {"agent": "plain", "task": "continue", "mode": "direct",
                                         "options": {"max_tokens": 24, "seed": 1}})
        agent = browser.wait_for(lambda c: agent_presences(c.states), "the agent's presence", 120)[0]
        assert agent["user"]["name"] == "Plain" and agent["user"]["color"].startswith("#")
        assert agent["status"] in ("thinking", "writing", "done")
        run = await run_finished(hub, doc_id, run_id)
        assert run["status"] == "done", run
        browser.wait_for(lambda c: c.text == "Snow covered the quiet village." + run["result"]["text"],
                         "the agent's text in the JS client")
        seen = [s for e in browser.events if e.get("ev") == "awareness" for s in agent_presences(e["states"])]
        statuses = [s.get("status") for s in seen]
        writing = [s for s in seen if s.get("status") in ("writing", "done") and (s.get("cursor") or {}).get("anchor")]
        assert writing, f"the JS client saw the agent's cursor where it writes (statuses seen: {statuses})"
        assert "thinking" in statuses and statuses.index("thinking") < statuses.index(writing[0]["status"]), statuses
        # the last cursor it was shown is where the agent's text ends (a Yjs relative position
        # the stock client received as-is; resolved here in a copy of the document)
        final = "Snow covered the quiet village." + run["result"]["text"]
        async with HubClient(hub.ws_url, doc_id, token=owner) as reader:
            await reader.synced()
            await reader.wait_for(lambda: str(reader.text) == final, 30)
            assert resolve(reader.doc, writing[-1]["cursor"]["anchor"]) == len(final), writing[-1]
        browser.wait_for(lambda c: not agent_presences(c.states), "the agent to leave")
    finally:
        hub.stop()
