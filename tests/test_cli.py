"""The ``tinymorph`` command line as the README lists it (run as ``python -m collab``): ``db upgrade``
on an empty database, ``token`` refusing a document role without ``--doc``, ``inference models``
and ``inference vectors list``, and the ``sae`` and ``eval`` commands' cheap paths (the SAE
training itself is tests/test_sae_toolkit.py's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from promises_support import cli

pytestmark = pytest.mark.slow  # not in `make test-fast`

#: What the README's tables promise at least (the hub's, the agents', the inference layer's).
NAMED = {"documents", "updates", "snapshots", "tokens", "agents", "agent_runs", "graph_nodes", "graph_edges",
         "inference_steering_vectors", "inference_saes"}


def _expected() -> tuple[set[str], dict[str, str]]:
    """Every table the packages' models declare plus each Alembic version table, and the head
    revision each version table must hold (so new migrations need no edit here)."""
    from alembic.script import ScriptDirectory

    import agents.models  # noqa: F401 - puts the agents' tables on the hub's Base
    from agents.extension import extension as agents_extension
    from collab.models import Base
    from collab.schema import MIGRATIONS
    from inference.migrations import MIGRATIONS as INFERENCE_MIGRATIONS
    from inference.models import metadata

    heads = {table: ScriptDirectory(str(path)).get_current_head() for table, path in (
        ("alembic_version", MIGRATIONS), ("alembic_version_agents", agents_extension.migrations),
        ("alembic_version_inference", INFERENCE_MIGRATIONS))}
    return set(Base.metadata.tables) | set(metadata.tables) | set(heads), heads


def _schema(url: str, version_tables) -> tuple[set[str], dict[str, str], int]:
    engine = sa.create_engine(url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            versions = {t: conn.execute(sa.text(f"SELECT version_num FROM {t}")).scalar_one() for t in version_tables}
            docs = conn.execute(sa.text("SELECT count(*) FROM documents")).scalar_one()
    finally:
        engine.dispose()
    return tables, versions, docs


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_db_upgrade_creates_every_table_on_an_empty_database_and_again_is_a_no_op(request, tmp_path, backend):
    env = {"TINYMORPH_DATA_DIR": str(tmp_path / "data")}
    if backend == "sqlite":  # no --db: SQLite under the data dir
        args, url = (), f"sqlite:///{tmp_path / 'data' / 'tinymorph.db'}"
    else:
        url = request.getfixturevalue("pg_url")
        args = ("--db", url)
        engine = sa.create_engine(url)
        assert sa.inspect(engine).get_table_names() == []  # empty to begin with
        engine.dispose()
    first = cli("db", "upgrade", *args, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"schema up to date: {url}"
    expected_tables, heads = _expected()
    tables, versions, docs = _schema(url, heads)
    assert NAMED <= tables and tables == expected_tables
    assert versions == heads and docs == 0

    engine = sa.create_engine(url)
    with engine.begin() as conn:  # data written in between survives the second run
        conn.execute(sa.text("INSERT INTO documents (id, title, owner_id, created_at) "
                             "VALUES ('kept', 'Kept', 'me', CURRENT_TIMESTAMP)"))
    engine.dispose()
    again = cli("db", "upgrade", *args, env=env)
    assert again.returncode == 0, again.stderr
    assert _schema(url, heads) == (tables, versions, 1)


def test_token_for_a_document_role_needs_doc(tmp_path):
    done = cli("token", "--user", "ann", "--role", "editor", env={"TINYMORPH_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == "tinymorph: --doc is required for a document role"


def test_inference_models_lists_the_bundled_model(tmp_path):
    done = cli("inference", "models", env={"TINYMORPH_DATA_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [(name, backend) for name, backend, _path in rows][:2] == [
        ("smollm2-135m-instruct", "llama.cpp"), ("smollm2-135m-instruct@torch", "torch")]
    for _name, _backend, path in rows:
        assert Path(path).name == "SmolLM2-135M-Instruct.Q4_1.gguf" and Path(path).is_file()


def test_inference_vectors_list_prints_the_library(tmp_path):
    from inference import VectorLibrary

    env = {"TINYMORPH_DATA_DIR": str(tmp_path)}
    empty = cli("inference", "vectors", "list", env=env)
    assert (empty.returncode, empty.stdout) == (0, ""), empty.stderr
    library = VectorLibrary(f"sqlite:///{tmp_path / 'tinymorph.db'}")
    vec = np.zeros(576, dtype="<f4")
    vec[:4] = [3.0, 4.0, 0.0, 0.0]  # norm 5
    library.put("calm", "test-model-key", {7: vec, 9: 2 * vec}, "caa", {"source": "test"})
    library.db.dispose()
    done = cli("inference", "vectors", "list", env=env)
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [(r[0], r[1], float(r[2].removeprefix("norm ")), r[3], r[4]) for r in rows] == [
        ("calm", "layer 7", 5.0, "caa", "test-model-key"), ("calm", "layer 9", 10.0, "caa", "test-model-key")]


def test_inference_sae_and_eval_commands_are_there(tmp_path):
    env = {"TINYMORPH_DATA_DIR": str(tmp_path)}
    for args, names in [(("inference", "--help"), ("serve", "models", "vectors")),
                        (("sae", "--help"), ("train", "eval", "features", "explain", "decompose")),
                        (("eval", "steering", "--help"), ("--sae", "--methods", "--concepts", "--strengths", "--max-tokens"))]:
        done = cli(*args, env=env)
        assert done.returncode == 0, (args, done.stderr)
        assert all(n in done.stdout for n in names), (args, done.stdout)


def test_sae_features_without_text_or_search_says_so(tmp_path):
    done = cli("sae", "features", "some-sae", env={"TINYMORPH_DATA_DIR": str(tmp_path)})
    assert (done.returncode, done.stdout, done.stderr.strip()) == (2, "", "give --text or --search")
