"""A revert whose entry the database refuses says so (503), instead of 200 with a dropped seq."""

from __future__ import annotations

import asyncio
import sqlite3

from collab.client import HubClient
from collab.testing import HubProcess

ENV = {"TINYMORPH_GRAPH_ENABLED": "false", "TINYMORPH_WORKER_EMBEDDED": "false"}


def test_a_revert_the_database_refuses_reports_the_failure(tmp_path):
    hub = HubProcess(tmp_path / "hub", env=ENV).start()
    try:
        doc_id, _owner = hub.create_doc("refused")

        async def write() -> None:
            async with HubClient(hub.ws_url, doc_id) as c:
                await c.synced()
                c.text.insert(0, "words to take back")
                await c.flush()
                await asyncio.sleep(0.3)

        asyncio.run(write())
        db = sqlite3.connect(hub.data_dir / "tinymorph.db")
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON updates BEGIN SELECT RAISE(ABORT, 'refused'); END")
        db.commit()
        status, body = hub.request("POST", f"/api/docs/{doc_id}/revert", {"author_id": "guest"})
        assert status == 503, (status, body)
        assert "not committed" in body["error"]["message"]
        db.execute("DROP TRIGGER refuse")
        db.commit()
        db.close()
        status, body = hub.request("POST", f"/api/docs/{doc_id}/revert", {"author_id": "guest"})
        assert status == 200 and body["seq"] > 1, body
    finally:
        assert hub.stop() == 0
        hub.assert_clean()
