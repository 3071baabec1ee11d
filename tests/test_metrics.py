"""/metrics (issue 17, requirement 8): Prometheus text from prometheus-client, with the hub's
rooms, peers, commits (latency and batch size), journal depth and quarantined entries; behind
a token in tokens mode."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collab import Role
from collab.client import HubClient
from collab.testing import running_hub


def scrape(url: str, token: str | None = None) -> dict[str, float]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["content-type"].startswith("text/plain")
        text = r.read().decode()
    return {s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_metrics_count_what_the_hub_did(tmp_path):
    async with running_hub(tmp_path, commit_delay_ms=0) as (hub, ws_url):
        base = ws_url.replace("ws://", "http://").rsplit("/ws", 1)[0]
        before = await asyncio.to_thread(scrape, base + "/metrics")
        assert before["tinymorph_rooms"] == 0 and before["tinymorph_updates_committed_total"] == 0
        doc = (await asyncio.to_thread(hub.store.create_document, "m", "guest"))["id"]
        async with HubClient(ws_url, doc) as client:
            await client.synced()
            for i in range(5):
                client.text.insert(len(client.text), f"w{i} ")
                await client.flush()
            async with asyncio.timeout(10):
                while hub.journal.committed < 5:  # the frames are on their way: then committed
                    await asyncio.sleep(0.01)
            await hub.journal.drain()
            got = await asyncio.to_thread(scrape, base + "/metrics")
        assert got["tinymorph_rooms"] == 1 and got["tinymorph_peers"] == 1
        assert got["tinymorph_updates_committed_total"] == hub.journal.committed >= 5
        assert got["tinymorph_commit_seconds_count"] == got["tinymorph_commit_batch_size_count"] == hub.journal.batches
        assert got["tinymorph_commit_batch_size_sum"] == hub.journal.committed
        assert got["tinymorph_journal_depth"] == 0 and got["tinymorph_quarantined_entries"] == 0
        assert "tinymorph_cluster_redis_up" not in got  # one process: no cluster series
        # the agents extension adds its runs by status (none yet)
        from agents.runs import RunStatus

        assert {k: v for k, v in got.items() if k.startswith("tinymorph_agent_runs|")} == {
            f"tinymorph_agent_runs|status={s.value}": 0 for s in RunStatus}


async def test_metrics_need_a_token_in_tokens_mode(tmp_path):
    async with running_hub(tmp_path, auth_mode="tokens") as (hub, ws_url):
        url = ws_url.replace("ws://", "http://").rsplit("/ws", 1)[0] + "/metrics"
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(scrape, url)
        assert refused.value.code == 401
        token, _ = hub.auth.issue(user_id="ops", name="Prometheus", role=Role.USER)
        assert (await asyncio.to_thread(scrape, url, token))["tinymorph_rooms"] == 0


async def test_healthz_answers_503_while_the_hub_drains(tmp_path):
    """A load balancer's health check takes a draining hub out of rotation (deploy/haproxy.cfg)."""
    async with running_hub(tmp_path) as (hub, ws_url):
        url = ws_url.replace("ws://", "http://").rsplit("/ws", 1)[0] + "/healthz"

        def status() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return r.status, json.load(r)["status"]
            except urllib.error.HTTPError as e:
                return e.code, json.load(e)["status"]

        assert await asyncio.to_thread(status) == (200, "running")
        await hub.drain()
        assert await asyncio.to_thread(status) == (503, "draining")
