"""The inference layer's Alembic script directory: its own tables (``inference.models``) with its
own version table, so it migrates without knowing the hub's revisions (and the hub can run it as
one more extension: ``alembic upgrade heads`` on ``MIGRATIONS``)."""

from pathlib import Path

__all__ = ["MIGRATIONS", "VERSION_TABLE"]

#: The script directory (``env.py``, ``versions/``).
MIGRATIONS = Path(__file__).parent
#: Where Alembic records the inference tables' revision.
VERSION_TABLE = "alembic_version_inference"
