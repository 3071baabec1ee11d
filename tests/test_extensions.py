"""The extension interface: an app composed from extensions, each with its routes, hooks, event
subscriptions and migrations; the hub alone without any; old databases split into per-package
version tables."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from starlette.responses import JSONResponse
from starlette.routing import Route

from collab import Settings, create_app
from collab.client import HubClient
from collab.extensions import ENTRY_POINT_GROUP, ExtensionContext, load_extensions
from collab.schema import upgrade
from collab.testing import HubProcess, free_port

ROOT = Path(__file__).resolve().parent.parent

MIGRATION = '''
"""notes"""
import sqlalchemy as sa
from alembic import op

revision = "n1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text))


def downgrade() -> None:
    op.drop_table("notes")
'''

ENV = '''
from alembic import context
import sqlalchemy as sa
from collab.schema import run_environment

run_environment(context, sa.MetaData(), {"notes"}, version_table="alembic_version_notes")
'''


def _script_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "notes_migrations"
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(ENV)
    (folder / "versions" / "n1_notes.py").write_text(MIGRATION)
    return folder


class Notes:
    """A whole extension in a few lines: a table, a route, a subscription, two hooks."""

    name = "notes"

    def __init__(self, migrations: Path) -> None:
        self.migrations = migrations
        self.calls: list[str] = []
        self.seen: list[str] = []

    def routes(self, context: ExtensionContext):
        async def count(request):
            with sa.create_engine(context.database_url).connect() as conn:
                n = conn.execute(sa.text("SELECT count(*) FROM notes")).scalar()
            return JSONResponse({"notes": n, "updates_seen": len(self.seen)})

        return [Route("/api/notes", count)]

    async def startup(self, context: ExtensionContext) -> None:
        assert context.hub is not None and context.hub.rooms is not None  # the hub runs first
        self.calls.append("startup")

    def subscriptions(self, context: ExtensionContext):
        async def on_update(event):
            self.seen.append(event.doc_id)

        return [("document.updated", on_update)]

    async def shutdown(self, context: ExtensionContext) -> None:
        self.calls.append("shutdown")


async def test_an_extension_adds_routes_hooks_subscriptions_and_tables(tmp_path):
    notes = Notes(_script_dir(tmp_path))
    settings = Settings(data_dir=tmp_path, port=free_port())
    app = create_app(settings, extensions=[notes])
    server = uvicorn.Server(uvicorn.Config(app, port=settings.port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                assert not task.done(), task.result()
                await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{settings.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            assert (await http.get("/api/notes")).json() == {"notes": 0, "updates_seen": 0}
            doc_id = (await http.post("/api/docs", json={"title": "n"})).json()["id"]
            async with HubClient(f"ws://127.0.0.1:{settings.port}/ws", doc_id) as c:
                await c.synced()
                c.text.insert(0, "hello")
                await c.flush()
                for _ in range(200):
                    if notes.seen:
                        break
                    await asyncio.sleep(0.02)
            assert notes.seen == [doc_id]
            assert (await http.get("/api/agents")).status_code == 404  # only what was composed
        assert notes.calls == ["startup"]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
    assert notes.calls == ["startup", "shutdown"]
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version_notes")).scalar() == "n1"
    engine.dispose()


def test_installed_extensions_are_agents_and_inference():
    names = [ext.name for ext in load_extensions()]
    assert names == ["agents", "inference"]
    assert [ext.name for ext in load_extensions(["inference"])] == ["inference"]
    from importlib.metadata import entry_points

    assert {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} == {"agents", "inference"}


BLOCKER = textwrap.dedent('''
    import importlib.abc, sys

    BLOCKED = {"agents", "inference", "celery", "kombu", "numpy", "torch", "transformers", "llama_cpp"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed (blocked by the test)")
            return None

    sys.meta_path.insert(0, Block())
    from collab.cli import main
    sys.exit(main(sys.argv[1:]))
''')


def test_the_hub_serves_documents_with_only_its_own_dependencies(tmp_path):
    """agents, inference, Celery, numpy and torch made unimportable: `tinymorph serve` still
    syncs a document, and says which extensions it left out."""
    runner = tmp_path / "hub_only.py"
    runner.write_text(BLOCKER)
    hub = HubProcess(tmp_path / "data", launcher=[sys.executable, str(runner)], log_level="info").start(timeout=60)
    try:
        doc_id, _owner = hub.create_doc("plain")

        async def edit_and_read() -> str:
            async with HubClient(hub.ws_url, doc_id) as a, HubClient(hub.ws_url, doc_id) as b:
                await a.synced()
                await b.synced()
                a.text.insert(0, "only the hub")
                await a.flush()
                for _ in range(250):
                    if str(b.text) == "only the hub":
                        break
                    await asyncio.sleep(0.02)
                return str(b.text)

        assert asyncio.run(edit_and_read()) == "only the hub"
        assert hub.request("GET", "/api/agents")[0] == 404
    finally:
        code = hub.stop()
    assert code == 0, hub.log()  # a drained, graceful SIGTERM is a clean exit
    hub.assert_clean()  # no traceback either
    log = hub.log()
    assert "extension agents not loaded" in log and "extension inference not loaded" in log, log


def _migrate_to(engine: sa.Engine, script_dir: Path, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_dir))
    cfg.attributes["engine"] = engine
    command.upgrade(cfg, revision)


def _head(script_dir: Path) -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(script_dir))
    return ScriptDirectory.from_config(cfg).get_current_head()


def test_old_single_chain_databases_are_split_per_package(tmp_path):
    """A database migrated when one Alembic chain held every package's tables (0001-0004): split
    into per-package version tables, then brought up to every package's newest revision."""
    from agents.extension import extension as agents_ext
    from collab.schema import MIGRATIONS
    from inference.extension import extension as inference_ext

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    # the tables as that chain left them: hub 0001, graph 0002, agents 0003, inference 0004
    _migrate_to(engine, MIGRATIONS, "0001")
    _migrate_to(engine, agents_ext.migrations, "0003")
    _migrate_to(engine, inference_ext.migrations, "0004")
    with engine.begin() as conn:  # and its one version table
        conn.execute(sa.text("DROP TABLE alembic_version_agents"))
        conn.execute(sa.text("DROP TABLE alembic_version_inference"))
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0004'"))
    upgrade(engine, agents_ext.migrations, inference_ext.migrations)  # would fail creating tables twice
    with engine.connect() as conn:
        versions = {t: conn.execute(sa.text(f"SELECT version_num FROM {t}")).scalar()
                    for t in ("alembic_version", "alembic_version_agents", "alembic_version_inference")}
    assert versions == {"alembic_version": _head(MIGRATIONS), "alembic_version_agents": _head(agents_ext.migrations),
                        "alembic_version_inference": _head(inference_ext.migrations)}
    engine.dispose()


@pytest.mark.parametrize("legacy", ["0002", "0003"])
def test_old_databases_before_inference_get_its_tables(tmp_path, legacy):
    from agents.extension import extension as agents_ext
    from collab.schema import MIGRATIONS
    from inference.extension import extension as inference_ext

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    _migrate_to(engine, MIGRATIONS, "0001")
    _migrate_to(engine, agents_ext.migrations, legacy)  # 0002: the graph's tables; 0003: and the agents'
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version_agents"))
        conn.execute(sa.text(f"UPDATE alembic_version SET version_num = '{legacy}'"))
    upgrade(engine, agents_ext.migrations, inference_ext.migrations)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"agents", "agent_runs", "graph_nodes", "inference_steering_vectors"} <= tables
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version_agents")).scalar() == \
            _head(agents_ext.migrations)
    engine.dispose()


def test_the_workspace_of_a_database_no_hub_has_served_is_empty(tmp_path):
    """``tinymorph eval steering`` trains an SAE on the workspace's documents: on a fresh machine
    (no hub has created the tables yet) that is no documents, not an error."""
    ctx = ExtensionContext(Settings(data_dir=tmp_path, db=f"sqlite:///{tmp_path / 'fresh.db'}"))
    assert list(ctx.documents()) == []
    upgrade(sa.create_engine(ctx.database_url))  # once served: its documents
    from collab.store import Store

    store = Store(ctx.database_url)
    doc = store.create_document("notes", "alice")
    store.close()
    assert [d for d, _ in ctx.documents()] == [doc["id"]]
