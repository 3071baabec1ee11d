"""The tables the agents extension owns (its Alembic history: ``agents/migrations``, version
table ``alembic_version_agents``). On the hub's ``Base`` for the foreign keys to documents."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from collab.models import Base, utcnow

__all__ = ["AgentRow", "RunRow", "GraphNode", "GraphEdge", "VectorJobRow", "TABLES"]


class AgentRow(Base):
    """A persona: a named co-editor with a default prompt, model and steering spec."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200), default="")
    prompt: Mapped[str] = mapped_column(Text, default="")
    #: A steering spec in the inference layer's JSON form (list of terms).
    steering: Mapped[list] = mapped_column(JSON, default=list)
    color: Mapped[str] = mapped_column(String(16), default="#0f766e")
    #: Who may change it; None: a shipped persona (or one from before owners), operator-only.
    owner_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RunRow(Base):
    """One agent run: its request, its state, and the lease a worker holds while it works.

    In the database (not only in Celery's result backend) so every hub and worker process can
    answer ``GET .../runs/{id}``, cancel it, and a redelivered task can tell whether the first
    attempt is still alive.
    """

    __tablename__ = "agent_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    doc_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Everything the worker needs, frozen at creation: persona snapshot, model, steering spec,
    #: anchor/range, options, and (after the first attempt) the prompt it generated from.
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    requested_by: Mapped[str] = mapped_column(String(200), default="")
    requested_by_name: Mapped[str] = mapped_column(String(200), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_agent_runs_doc", "doc_id", "created_at"),)


class GraphNode(Base):
    """One version of a paragraph node of the text-embedding graph.

    A paragraph keeps its ``node_id`` across edits (``anchor``: the history replay's id of the
    character before it, int64 little-endian); each re-embedding adds a row, and removal adds a row with ``removed`` set, so the graph
    at any log position is the newest row per node at or before it.
    """

    __tablename__ = "graph_nodes"

    doc_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    anchor: Mapped[bytes] = mapped_column(LargeBinary)
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))
    #: float32 little-endian, unit length
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    removed: Mapped[bool] = mapped_column(default=False)


class GraphEdge(Base):
    """An edge of the current graph (replaced whenever the graph is rebuilt)."""

    __tablename__ = "graph_edges"

    doc_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    target: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: ``similar`` (nearest neighbours by cosine) or ``next`` (reading order)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    weight: Mapped[float] = mapped_column()


#: The tables this package's migrations own.
class VectorJobRow(Base):
    """A steering vector a writer asked for over REST, built by a worker (``agents/vectors.py``):
    its request, its state and progress. The vector itself goes to the inference layer's library."""

    __tablename__ = "vector_jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16))
    #: Pairs built so far over pairs in all (0..1).
    progress: Mapped[float] = mapped_column(default=0.0)
    pairs: Mapped[list] = mapped_column(JSON, default=list)
    layers: Mapped[list] = mapped_column(JSON, default=list)
    #: "In my voice": {doc_ids, author_id}; the worker makes the pairs.
    voice: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    #: A PSR vector: the instruction whose effect it learns ("write about winter").
    instruction: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


TABLES = frozenset({AgentRow.__tablename__, RunRow.__tablename__, GraphNode.__tablename__, GraphEdge.__tablename__,
                    VectorJobRow.__tablename__})
