"""SIGTERM in the middle of a burst loses nothing that was accepted."""

from __future__ import annotations

import asyncio
import signal

from collab.client import HubClient
from collab.store import Store, content_text
from collab.testing import HUB_ONLY, HubProcess


def _stored_text(hub: HubProcess, doc_id: str) -> str:
    store = Store(f"sqlite:///{hub.data_dir / 'tinymorph.db'}")
    try:
        loaded = store.load(doc_id)
    finally:
        store.close()
    return content_text(loaded.state)


async def test_sigterm_mid_burst_loses_nothing(tmp_path):
    hub = HubProcess(tmp_path / "hub", log_level="info", env=HUB_ONLY)
    try:
        hub.start()
        doc_id, _ = hub.create_doc("burst")
        async with HubClient(hub.ws_url, doc_id) as writer, HubClient(hub.ws_url, doc_id) as observer:
            await writer.synced()
            await observer.synced()

            n = 300
            for i in range(n):
                writer.text.insert(len(writer.text), f"<{i}>")
                if i == n // 2:
                    hub.proc.send_signal(signal.SIGTERM)  # the signal lands while half the burst is unsent
                if i % 10 == 0:
                    await asyncio.sleep(0)
            await writer.flush()
            # a drained, graceful shutdown is a clean exit (not uvicorn's re-raised SIGTERM, -15)
            assert hub.stop() == 0, hub.log()
            seen_by_observer = str(observer.text)
    finally:
        hub.stop()
    hub.assert_clean()

    stored = _stored_text(hub, doc_id)
    # Everything another peer saw is durable ...
    assert stored.startswith(seen_by_observer)
    # ... and everything the writer put on the wire was accepted and committed before exit.
    assert stored == "".join(f"<{i}>" for i in range(n)), hub.log()
    assert "journal drained" in hub.log()
