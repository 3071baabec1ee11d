"""Alembic environment of the agents extension's tables (see ``collab.schema``)."""

from alembic import context

from agents.models import TABLES
from collab.models import Base
from collab.schema import run_environment

run_environment(context, Base.metadata, TABLES, version_table="alembic_version_agents")
