"""The guard around the websocket fast path: every uvicorn/websockets internal it uses is checked,
a missing one is named and the hub serves with uvicorn's stock protocol, which syncs as well."""

from __future__ import annotations

import logging

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from collab import wsprotocol
from collab.client import HubClient
from collab.exceptions import ConfigError
from collab.server import choose_protocol
from collab.testing import HUB_ONLY, HubProcess
from collab.wsprotocol import Internal, missing_private_api


class Fake:
    """Stands in for a class whose instances get their attributes in ``__init__``."""

    def __init__(self) -> None:
        self.present: int = 1


def test_the_installed_versions_have_everything_the_fast_path_uses():
    # pyproject pins uvicorn and websockets to the versions this holds for
    assert wsprotocol.MISSING == () and missing_private_api() == []
    from collab._wsprotocol import HubWebSocketProtocol

    assert choose_protocol() is HubWebSocketProtocol


def test_a_missing_method_is_named(monkeypatch):
    monkeypatch.delattr(WebSocketsSansIOProtocol, "send_receive_event_to_app")
    assert missing_private_api() == [
        "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol.send_receive_event_to_app"
    ]


def test_instance_attributes_are_found_in_the_source_and_a_missing_one_is_named():
    here = Fake.__module__
    assert missing_private_api([Internal(here, "Fake.present", instance=True)]) == []
    assert missing_private_api([Internal(here, "Fake.absent", instance=True)]) == [f"{here}.Fake.absent"]
    # on the real classes: set in __init__ (uvicorn), in a base class's __init__ (websockets)
    sansio = "uvicorn.protocols.websockets.websockets_sansio_impl"
    assert missing_private_api([Internal(sansio, "WebSocketsSansIOProtocol.read_paused", instance=True),
                                Internal("websockets.server", "ServerProtocol.current_size", instance=True)]) == []
    assert missing_private_api([Internal(sansio, "WebSocketsSansIOProtocol.read_pausd", instance=True)]) == [
        f"{sansio}.WebSocketsSansIOProtocol.read_pausd"
    ]
    # without instance=True an attribute must be on the class itself
    assert missing_private_api([Internal(here, "Fake.present")]) == [f"{here}.Fake.present"]


def test_missing_modules_and_names_are_named():
    assert missing_private_api([Internal("no_such_module_here", "Thing"), Internal("websockets.frames", "nope"),
                                Internal("websockets.frames", "apply_mask")]) == [
        "no_such_module_here.Thing", "websockets.frames.nope"
    ]


def test_a_missing_internal_means_the_stock_protocol_and_a_warning_naming_it(caplog):
    with caplog.at_level(logging.WARNING, logger="tinymorph.server"):
        chosen = choose_protocol("fast", missing=["uvicorn.x.Y.z"])
    assert chosen == wsprotocol.STOCK_PROTOCOL == "websockets-sansio"
    assert "uvicorn.x.Y.z" in caplog.text
    assert choose_protocol("stock") == "websockets-sansio"
    with pytest.raises(ConfigError):
        choose_protocol("fastest")


async def test_the_hub_syncs_on_the_stock_protocol(tmp_path):
    """Forced onto uvicorn's own protocol (no SEND_NOWAIT / RECEIVE_DIRECT), the hub still syncs,
    relays, keeps what it was sent, and closes on bad input with the same code."""
    hub = HubProcess(tmp_path / "hub", env={**HUB_ONLY, "TINYMORPH_WS_PROTOCOL": "stock"})
    try:
        hub.start()
        assert "websockets-sansio protocol, as asked" in hub.log()
        doc_id, _ = hub.create_doc("stock")
        a = HubClient(hub.ws_url, doc_id)
        b = HubClient(hub.ws_url, doc_id)
        await a.connect()
        await b.connect()
        await a.synced()
        await b.synced()
        for i, word in enumerate(["hello", " ", "stock", " ", "protocol"]):
            a.text.insert(len(a.text), word)
            if i % 2:
                await a.flush()
        await b.wait_for(lambda: str(b.text) == "hello stock protocol")
        await a.close()
        await b.close()
        late = HubClient(hub.ws_url, doc_id)  # a newcomer gets it all through sync
        await late.connect()
        await late.synced()
        assert str(late.text) == "hello stock protocol"
        await late.send_raw(b"\x00\x02\x05ab")  # truncated: closes this socket only, with 4400
        await late.wait_closed()
        assert late.close_code == 4400
        await late.close()
    finally:
        hub.stop()
    hub.assert_clean()
