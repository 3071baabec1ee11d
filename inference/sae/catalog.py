"""The database's list of trained SAEs (``models.saes``): what exists, how it was made, how good it is.

The weights live on disk in SAELens format (``<data_dir>/saes/<SAE_ID>/``); the row is what the
API and the CLI list, and where ``sae eval`` keeps its numbers.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .._migrate import migrate
from ..exceptions import UnknownSAE
from ..models import saes

__all__ = ["SAECatalog"]

_FIELDS = ("model_key", "layer", "d_in", "d_sae", "k", "path", "status", "tokens_trained",
           "provenance", "metrics")


class SAECatalog:
    def __init__(self, database_url: str) -> None:
        self.db = sa.create_engine(database_url)
        migrate(self.db)  # the inference tables' own Alembic history

    def upsert(self, sae_id: str, **fields: Any) -> dict:
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise TypeError(f"unknown SAE catalog fields {sorted(unknown)}")
        with self.db.begin() as conn:
            have = conn.execute(sa.select(saes.c.id).where(saes.c.id == sae_id)).first()
            if have:
                conn.execute(sa.update(saes).where(saes.c.id == sae_id).values(**fields))
            else:
                conn.execute(sa.insert(saes).values(id=sae_id, **{"metrics": {}, "provenance": {},
                                                                   "tokens_trained": 0, **fields}))
        return self.get(sae_id)

    def get(self, sae_id: str) -> dict:
        with self.db.connect() as conn:
            row = conn.execute(sa.select(saes).where(saes.c.id == sae_id)).mappings().first()
        if row is None:
            raise UnknownSAE(f"no SAE {sae_id!r} in the catalog", param="sae")
        return _out(row)

    def list(self, model_key: str | None = None) -> list[dict]:
        q = sa.select(saes).order_by(saes.c.created_at, saes.c.id)
        if model_key:
            q = q.where(saes.c.model_key == model_key)
        with self.db.connect() as conn:
            return [_out(r) for r in conn.execute(q).mappings()]

    def set_metrics(self, sae_id: str, metrics: dict) -> dict:
        return self.upsert(sae_id, metrics=metrics)


def _out(row: Any) -> dict:
    d = dict(row)
    for k in ("created_at", "updated_at"):
        d[k] = d[k].isoformat() if d.get(k) else None
    return d
