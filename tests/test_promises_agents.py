"""README promises of the agents extension no other test covers: an agent run on PostgreSQL,
``/api/search`` in tokens mode (a user finds only what they may read), and ``tinymorph worker`` on
the local broker beside a hub without workers (it runs what the hub queued; a run cancelled
while queued is never run)."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import pytest
from agents_support import get_run, log_entries, run_finished, start_run
from promises_support import HUB_ONLY, Worker, committed, pg_database, until

from agents.anchors import relative_position
from collab.auth import Authenticator
from collab.client import HubClient
from collab.config import Settings
from collab.store import Store
from collab.testing import HubProcess

pytestmark = pytest.mark.model  # not in `make test-fast`

OPENING = "The old lighthouse keeper climbed the stairs every night."
RUN_S = 240.0  # a first run loads the model in a worker; a busy 2-core machine is slow


async def _doc_with(hub: HubProcess, text: str, token: str | None = None) -> tuple[str, str, HubClient]:
    doc_id, owner = hub.create_doc("promises", token)
    client = HubClient(hub.ws_url, doc_id, token=owner)
    await client.connect()
    await client.synced()
    client.text += text
    await committed(hub, doc_id, 1, owner)
    return doc_id, owner, client


# -- a hub on PostgreSQL, tokens mode, its worker processes and the graph ------------------------


@pytest.fixture(scope="module")
def pg_hub(tmp_path_factory):
    """Tokens mode on PostgreSQL with one embedded worker process and the graph (rebuilt 0.2 s
    after an edit); ``pg_hub.user(name)`` mints a user token (creates documents)."""
    with pg_database() as url:
        proc = HubProcess(tmp_path_factory.mktemp("promises-agents") / "hub", db=url, auth_mode="tokens",
                          env={"TINYMORPH_WORKER_CONCURRENCY": "1", "TINYMORPH_GRAPH_DEBOUNCE_S": "0.2"})
        proc.start(timeout=90)
        store = Store(url)
        auth = Authenticator(store, Settings(data_dir=proc.data_dir, db=url).signing_secret(), "tokens", 3600)
        proc.user = lambda name: auth.issue(user_id=name.lower(), name=name, role="user")[0]
        try:
            yield proc
        finally:
            store.close()
            proc.stop()


@pytest.mark.postgres
async def test_an_agent_run_on_postgresql_writes_attributed_text(pg_hub):
    hub = pg_hub
    doc_id, owner, client = await _doc_with(hub, OPENING, hub.user("Alice"))
    try:
        run_id = start_run(hub, doc_id, {"agent": "plain", "task": "continue", "mode": "direct",
                                         "anchor": relative_position(client.doc, len(OPENING), 0),
                                         "options": {"max_tokens": 8}})
        run = await run_finished(hub, doc_id, run_id, timeout=RUN_S)
        assert run["status"] == "done", (run, hub.log()[-3000:])
        written = run["result"]["text"]
        assert written.strip() and run["attempts"] == 1 and run["requested_by"] == "alice"
        await client.wait_for(lambda: str(client.text) == OPENING + written, timeout=30)
        store = Store(hub.db)
        try:
            agent_rows = [u for u in store.updates(doc_id) if u.author_kind == "agent"]
        finally:
            store.close()
        assert agent_rows and {(u.author_id, u.meta["run_id"], u.meta["requested_by"]) for u in agent_rows} == {
            ("plain", run_id, "alice")}
        status, history = hub.request("GET", f"/api/docs/{doc_id}/history?kind=agent", None, owner)
        assert status == 200 and "".join(e["inserted"] for e in history["entries"]) == written
        assert {e["run_id"] for e in history["entries"]} == {run_id}
    finally:
        await client.close()


CATS = "Cats are small furry pets that purr and nap in the warm sun."
KITTENS = "Kittens are playful furry pets that chase string and purr."
WINDOW = "A cat sleeps most of the day on a warm windowsill, purring."


@pytest.mark.postgres
async def test_search_in_tokens_mode_finds_only_documents_the_user_may_read(pg_hub):
    hub = pg_hub
    # users of their own (the run test's Alice has a document in this database too)
    ada, ben, cy = (hub.user(n) for n in ("Ada", "Ben", "Cy"))
    docs, clients = {}, []
    try:
        for name, token, text in (("ada", ada, CATS), ("ben", ben, KITTENS), ("cy", cy, WINDOW)):
            doc_id, owner, client = await _doc_with(hub, text, token)
            docs[name] = (doc_id, owner)
            clients.append(client)

        def graphed(doc_id: str, owner: str) -> bool:
            status, graph = hub.request("GET", f"/api/docs/{doc_id}/graph", None, owner)
            return status == 200 and len(graph["nodes"]) == 1
        for doc_id, owner in docs.values():  # the first rebuild loads the embedding model
            await until(lambda d=doc_id, o=owner: graphed(d, o), f"the graph of {doc_id}", timeout=RUN_S, every=0.3)

        def found(token: str | None) -> tuple[int, set[str]]:
            status, body = hub.request("GET", "/api/search?q=furry+cats+purring", None, token)
            return status, ({r["doc_id"] for r in body["results"]} if status == 200 else body)

        ids = {name: doc_id for name, (doc_id, _owner) in docs.items()}
        assert found(ada) == (200, {ids["ada"]})  # her own document only
        assert found(ben) == (200, {ids["ben"]})
        # Ben shares his document with Ada: from now on she finds it too; never Cy's
        status, _ = hub.request("POST", f"/api/docs/{ids['ben']}/tokens",
                                {"role": "viewer", "name": "Ada", "user_id": "ada"}, docs["ben"][1])
        assert status == 201
        assert found(ada) == (200, {ids["ada"], ids["ben"]})
        # a share token searches its own document
        assert found(hub.token(ids["cy"], "viewer", "Val", docs["cy"][1])) == (200, {ids["cy"]})
        assert found(None)[0] == 401
    finally:
        for c in clients:
            await c.close()


# -- `tinymorph worker` beside a hub without workers, on the local broker -------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A hub without worker processes (SQLite, the local filesystem broker in its data dir), and
    one ``tinymorph worker`` on the same data dir: ``with local.no_worker() as worker:`` gives a
    moment when no worker takes anything (the running one paused, or none started yet); after it
    the worker runs (``worker.log()``)."""
    hub = HubProcess(tmp_path_factory.mktemp("promises-worker") / "hub", env=HUB_ONLY).start()
    worker_env = {"TINYMORPH_DATA_DIR": str(hub.data_dir), "TINYMORPH_HUB_URL": hub.url, **HUB_ONLY}
    workers: list[Worker] = []

    @contextlib.contextmanager
    def no_worker():
        handle = SimpleNamespace(worker=None)
        if workers:
            workers[0].pause()
        try:
            yield handle
        finally:
            if workers:
                workers[0].resume()
            else:
                workers.append(Worker(worker_env, hub.data_dir / "worker.log"))
            handle.worker = workers[0]

    hub.no_worker = no_worker
    try:
        yield hub
    finally:
        for w in workers:
            w.stop()
        hub.stop()


async def test_tinymorph_worker_runs_a_run_queued_by_a_hub_without_workers(local):
    hub = local
    doc_id, _owner, client = await _doc_with(hub, OPENING)
    try:
        with hub.no_worker() as handle:
            run_id = start_run(hub, doc_id, {"agent": "plain", "task": "continue", "mode": "direct",
                                             "anchor": relative_position(client.doc, len(OPENING), 0),
                                             "options": {"max_tokens": 8}})
            await asyncio.sleep(1.5)
            assert get_run(hub, doc_id, run_id)["status"] == "queued"  # the hub runs no worker of its own
        worker = handle.worker
        run = await run_finished(hub, doc_id, run_id, timeout=RUN_S)
        assert run["status"] == "done", (run, worker.log()[-3000:])
        await client.wait_for(lambda: str(client.text) == OPENING + run["result"]["text"], timeout=30)
        assert f"Task tinymorph.agents.run[{run_id}] received" in worker.log()
        assert {e["meta"]["run_id"] for e in log_entries(hub.data_dir, doc_id) if e["author_kind"] == "agent"} == {run_id}
    finally:
        await client.close()


async def test_a_run_cancelled_while_queued_is_never_run(local):
    hub = local
    doc_id, owner, client = await _doc_with(hub, OPENING)
    try:
        with hub.no_worker() as handle:  # nobody may pick the run up before it is cancelled
            run_id = start_run(hub, doc_id, {"agent": "plain", "task": "continue", "mode": "direct",
                                             "options": {"max_tokens": 8}})
            assert get_run(hub, doc_id, run_id)["status"] == "queued"
            status, body = hub.request("DELETE", f"/api/docs/{doc_id}/runs/{run_id}", None, owner)
            assert (status, body["status"]) == (200, "cancelled"), body
        # its message is still in the queue: the worker gets it, and does nothing with it
        await until(lambda: f"Task tinymorph.agents.run[{run_id}] succeeded" in handle.worker.log(),
                    "the worker to take the cancelled run's message", timeout=RUN_S, every=0.2)
        run = get_run(hub, doc_id, run_id)
        assert (run["status"], run["attempts"], run["started_at"]) == ("cancelled", 0, None), run
        await asyncio.sleep(0.5)
        assert str(client.text) == OPENING
        assert [e for e in log_entries(hub.data_dir, doc_id) if e["author_kind"] == "agent"] == []
    finally:
        await client.close()
