"""A stock JavaScript client (yjs + y-websocket) sees an agent's text and its presence."""

from __future__ import annotations

import pytest

from collab.testing import HubProcess

from _jshelpers import JsClients
from agents_support import agent_presences, run_finished, start_run

pytestmark = pytest.mark.node


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
                                         "options": {"max_tokens": 24}})
        agent = browser.wait_for(lambda c: agent_presences(c.states), "the agent's presence", 120)[0]
        assert agent["user"]["name"] == "Plain" and agent["user"]["color"].startswith("#")
        assert agent["status"] in ("thinking", "writing", "done")
        run = await run_finished(hub, doc_id, run_id)
        assert run["status"] == "done", run
        browser.wait_for(lambda c: c.text == "Snow covered the quiet village." + run["result"]["text"],
                         "the agent's text in the JS client")
        writing = [e for e in browser.events if e.get("ev") == "awareness" and any(
            s.get("status") in ("writing", "done") and (s.get("cursor") or {}).get("anchor") for s in agent_presences(e["states"]))]
        statuses = {s.get("status") for e in browser.events if e.get("ev") == "awareness" for s in agent_presences(e["states"])}
        assert writing, f"the JS client saw the agent's cursor where it writes (statuses seen: {statuses})"
        assert writing[-1] and "thinking" in statuses
        browser.wait_for(lambda c: not agent_presences(c.states), "the agent to leave")
    finally:
        hub.stop()
