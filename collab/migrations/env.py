"""Alembic environment of the hub's own tables (see ``collab.schema``)."""

from alembic import context

from collab.models import HUB_TABLES, Base
from collab.schema import run_environment

run_environment(context, Base.metadata, HUB_TABLES)
