"""Alembic environment: run against the Store's engine (passed in ``config.attributes``) or a URL."""

from alembic import context
from sqlalchemy import create_engine

from collab.models import Base

try:  # the agents' tables live on the same Base; import them so autogenerate sees them
    import agents.models  # noqa: F401
except ImportError:
    pass

target_metadata = [Base.metadata]
try:  # the inference layer keeps its tables (steering vectors, SAEs) on its own MetaData
    from inference.models import metadata as inference_metadata

    target_metadata.append(inference_metadata)
except ImportError:
    pass
config = context.config


def run() -> None:
    engine = config.attributes.get("engine") or create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        context.run_migrations()


run()
