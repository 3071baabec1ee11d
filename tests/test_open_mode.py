"""Open mode is a local hub: other sites' pages and other host names (DNS rebinding) are refused."""

from __future__ import annotations

import asyncio
import http.client

import pytest
import websockets
from websockets.asyncio.client import connect

from collab.testing import HubProcess

ENV = {"TINYMORPH_GRAPH_ENABLED": "false", "TINYMORPH_WORKER_EMBEDDED": "false",
       "TINYMORPH_ALLOWED_ORIGINS": "https://notes.example.org"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    proc = HubProcess(tmp_path_factory.mktemp("open") / "hub", env=ENV).start()
    yield proc
    assert proc.stop() == 0
    proc.assert_clean()


def get(hub: HubProcess, path: str, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize("headers, status", [
    ({}, 200),                                                    # curl, scripts: no Origin
    ({"Origin": "http://127.0.0.1:{port}"}, 200),                 # the hub's own pages
    ({"Origin": "https://notes.example.org"}, 200),               # allowed_origins
    ({"Origin": "https://evil.example"}, 403),                    # another site's page
    ({"Host": "evil.example:{port}"}, 403),                       # DNS rebinding
    ({"Host": "localhost:{port}"}, 200),
])
def test_rest_requests_from_other_sites_or_hosts_are_refused(hub, headers, status):
    headers = {k: v.format(port=hub.port) for k, v in headers.items()}
    assert get(hub, "/api/docs", headers) == status


@pytest.mark.parametrize("origin, refused", [(None, False), ("https://evil.example", True)])
def test_websockets_from_other_sites_are_refused(hub, origin, refused):
    doc_id, _owner = hub.create_doc("guarded")

    async def open_socket() -> None:
        headers = {"Origin": origin} if origin else {}
        async with connect(f"{hub.ws_url}/{doc_id}", additional_headers=headers) as ws:
            await ws.recv()  # the hub's sync step 1

    if refused:
        with pytest.raises(websockets.InvalidStatus) as err:
            asyncio.run(open_socket())
        assert err.value.response.status_code == 403
    else:
        asyncio.run(open_socket())


def test_the_hubs_socket_route_skips_the_middleware_stack_and_keeps_the_guard(tmp_path, monkeypatch):
    """``/ws/{doc}`` is served first-hand (``app.HubApplication``): the endpoint runs without
    Starlette's middleware stack in between, and open mode's guard still refuses another site.
    Any other websocket (an extension's) takes the ordinary way, guard and middleware included."""
    from starlette.middleware.exceptions import ExceptionMiddleware
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from collab.app import create_app
    from collab.config import Settings

    through_stack: list[str] = []
    call = ExceptionMiddleware.__call__

    async def counted(self, scope, receive, send):
        if scope["type"] == "websocket":
            through_stack.append(scope["path"])
        await call(self, scope, receive, send)

    monkeypatch.setattr(ExceptionMiddleware, "__call__", counted)

    async def probe(websocket) -> None:
        await websocket.accept()
        await websocket.send_text("probe")
        await websocket.close()

    class Probe:
        name = "probe"

        def routes(self, context):
            return [WebSocketRoute("/probe", probe)]

    cfg = Settings(data_dir=tmp_path, auto_create_docs=True, worker_embedded=False, graph_enabled=False)
    app = create_app(cfg, extensions=[Probe()])
    host = {"host": f"127.0.0.1:{cfg.port}"}  # the test client's own name is no host of the hub's
    with TestClient(app) as client:
        with client.websocket_connect("/ws/first-hand", headers=host) as ws:
            assert ws.receive_bytes()[:2] == bytes((0, 0))  # the hub's sync step 1
        with client.websocket_connect("/probe", headers=host) as ws:
            assert ws.receive_text() == "probe"
        assert through_stack == ["/probe"]
        for path in ("/ws/first-hand", "/probe"):
            with pytest.raises(WebSocketDisconnect) as refused:
                with client.websocket_connect(path, headers={**host, "origin": "https://evil.example"}):
                    pass
            assert refused.value.code == 4403, path
