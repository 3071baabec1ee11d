"""SQLAlchemy tables of the inference layer, on their own ``metadata``; their schema is managed by
the layer's own Alembic migrations (``inference/migrations``, version table
``alembic_version_inference``), in whatever database the ``InferenceConfig`` names."""

from __future__ import annotations

from sqlalchemy import (JSON, Column, DateTime, Float, Integer, LargeBinary, MetaData, String, Table,
                        UniqueConstraint, func)

__all__ = ["metadata", "steering_vectors", "saes"]

metadata = MetaData()

#: One row per (vector name, model, layer): a CAA vector built at one layer is one row; an
#: imported multi-layer control vector is one row per layer.
steering_vectors = Table(
    "inference_steering_vectors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("model_key", String(128), nullable=False),
    Column("layer", Integer, nullable=False),
    Column("d_model", Integer, nullable=False),
    Column("norm", Float, nullable=False),  # ||vector||, for comparing with the residual norm
    Column("vector", LargeBinary, nullable=False),  # float32, little-endian, d_model values
    Column("kind", String(16), nullable=False),  # caa | gguf | inline
    Column("provenance", JSON, nullable=False),  # how it was made: pairs, source file, layer shift
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    UniqueConstraint("name", "model_key", "layer", name="uq_steering_vector"),
)

#: One row per trained SAE: where its SAELens folder is, what it was trained on, its eval numbers.
saes = Table(
    "inference_saes",
    metadata,
    Column("id", String(128), primary_key=True),  # the SAE_ID in ``sae:SAE_ID#FEATURE``
    Column("model_key", String(128), nullable=False),
    Column("layer", Integer, nullable=False),
    Column("d_in", Integer, nullable=False),
    Column("d_sae", Integer, nullable=False),
    Column("k", Integer, nullable=False),
    Column("path", String(1024), nullable=False),  # the SAELens folder (cfg.json + weights)
    Column("status", String(16), nullable=False),  # training | ready
    Column("tokens_trained", Integer, nullable=False),
    Column("provenance", JSON, nullable=False),  # corpus, documents, hyperparameters
    Column("metrics", JSON, nullable=False),  # the last `sae eval` (L0, FVU, CE recovered, ...)
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), onupdate=func.now(),
           nullable=False),
)
