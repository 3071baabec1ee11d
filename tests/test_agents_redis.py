"""Agents on the production shape: a Redis broker, the hub without an embedded worker, and real
``tinymorph worker`` (``celery worker``) processes — one of which is SIGKILLed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest
from pycrdt import Map

from agents.anchors import relative_position
from agents.tasks import LEASE_S
from collab.client import HubClient
from collab.testing import HubProcess

from agents_support import await_until, get_run, log_entries, run_finished, run_row, start_run

pytestmark = [pytest.mark.redis, pytest.mark.model]  # a model: not in `make test-fast`

OPENING = "Rain fell on the harbour all afternoon, and the boats knocked together."


class Worker:
    """A ``tinymorph worker`` subprocess in its own process group (so a kill takes all of it)."""

    def __init__(self, hub: HubProcess, env: dict[str, str], name: str) -> None:
        self.log_path = hub.data_dir / f"worker-{name}.log"
        self._log = open(self.log_path, "ab")
        cmd = [sys.executable, "-m", "collab", "worker", "--pool", "solo", "--loglevel", "info",
               "--hostname", f"{name}@%h"]
        self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def deployment(tmp_path, redis_url):
    import redis

    r = redis.Redis.from_url(redis_url)
    r.ping()
    r.close()
    # A queue of its own: another test run on the same Redis must neither take nor wipe our runs.
    env = {"TINYMORPH_BROKER_URL": redis_url, "TINYMORPH_AGENT_QUEUE": f"tinymorph.test.{uuid.uuid4().hex[:8]}",
           "TINYMORPH_WORKER_EMBEDDED": "false",
           "TINYMORPH_BROKER_VISIBILITY_TIMEOUT_S": "6", "TINYMORPH_GRAPH_ENABLED": "false"}
    hub = HubProcess(tmp_path / "hub", env=env).start()
    worker_env = {**env, "TINYMORPH_DATA_DIR": str(hub.data_dir), "TINYMORPH_HUB_URL": hub.url}
    workers: list[Worker] = []

    def spawn(name: str) -> Worker:
        w = Worker(hub, worker_env, name)
        workers.append(w)
        return w

    yield hub, spawn
    for w in workers:
        w.stop()
    hub.stop()


async def _doc(hub: HubProcess) -> tuple[str, HubClient]:
    doc_id, owner = hub.create_doc("redis")
    client = HubClient(hub.ws_url, doc_id, token=owner)
    await client.connect()
    await client.synced()
    client.text += OPENING
    await client.flush()
    await await_until(lambda: hub.request("GET", f"/api/docs/{doc_id}", None, owner)[1]["text"] == OPENING, "commit")
    return doc_id, client


async def test_a_separate_celery_worker_runs_the_agent(deployment):
    hub, spawn = deployment
    doc_id, client = await _doc(hub)
    try:
        run_id = start_run(hub, doc_id, {"agent": "plain", "task": "continue", "mode": "direct",
                                         "anchor": relative_position(client.doc, len(OPENING), 0),
                                         "options": {"max_tokens": 16, "seed": 1}})
        assert get_run(hub, doc_id, run_id)["status"] == "queued"  # no worker yet: nothing in-process takes it
        worker = spawn("w1")
        run = await run_finished(hub, doc_id, run_id, timeout=180)
        assert run["status"] == "done", (run, worker.log()[-3000:])
        await await_until(lambda: str(client.text) == OPENING + run["result"]["text"], "the agent's text", 30)
        assert f"Task tinymorph.agents.run[{run_id}] received" in worker.log()
    finally:
        await client.close()


def _heartbeat_age_s(hub: HubProcess, run_id: str) -> float:
    """Seconds since the run's lease was last renewed, from the hub's database."""
    return (datetime.now(UTC) - run_row(hub.data_dir, run_id)["heartbeat_at"]).total_seconds()


async def test_sigkill_mid_run_is_redelivered_and_completes_exactly_once(deployment):
    hub, spawn = deployment
    doc_id, client = await _doc(hub)
    try:
        before = str(client.text)
        first = spawn("doomed")
        # Seed 2 writes a whole 96-token paragraph here (it does not end early at a blank line),
        # so the run is still writing when its worker is killed, right after its first words.
        run_id = start_run(hub, doc_id, {"agent": "plain", "task": "continue", "mode": "direct",
                                         "options": {"max_tokens": 96, "temperature": 1.0, "seed": 2}})
        await await_until(lambda: len(str(client.text)) > len(before) + 3, "the first words", 180)
        first.kill()
        assert get_run(hub, doc_id, run_id)["status"] in ("running", "streaming")
        partial = str(client.text)[len(before):]
        # Redis hands the dead worker's unacknowledged message to the next worker that looks for
        # abandoned messages (one starting up does, at once) after the visibility timeout; the
        # dead attempt's lease expires LEASE_S after its last heartbeat. Start the rescuer once
        # both have passed, so it takes the run over at its first look (a running worker only
        # looks every ~100 s, kombu's default; the lease itself is unit-tested in test_unit_runs).
        await await_until(lambda: _heartbeat_age_s(hub, run_id) > LEASE_S, "the dead attempt's lease to expire",
                          LEASE_S + 30, every=0.25)
        second = spawn("rescuer")
        run = await run_finished(hub, doc_id, run_id, timeout=240)
        assert run["status"] == "done", (run, second.log()[-3000:])
        assert run["attempts"] >= 2
        written = run["result"]["text"]
        await await_until(lambda: client.doc.get("agent_runs", type=Map)[run_id]["status"] == "done", "done mark", 30)
        # exactly once: the document is the text before the run plus the final attempt's text
        assert str(client.text) == before + written, (partial, written, str(client.text))
        # which it generated from the prompt (and seed) the first attempt froze: the same words again
        assert partial and written.startswith(partial), (partial, written)
        agent_runs = {e["meta"].get("token_id") for e in log_entries(hub.data_dir, doc_id)
                      if e["author_kind"] == "agent" and e["meta"].get("run_id") == run_id}
        assert len(agent_runs) >= 2  # two attempts wrote (each with its own token)
    finally:
        await client.close()
