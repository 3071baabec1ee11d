"""text-embedding graph

Revision ID: 0002
Revises:
Create Date: 2026-11-22 11:29:05.742959
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('graph_edges',
    sa.Column('doc_id', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('target', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('weight', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['doc_id'], ['documents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('doc_id', 'source', 'target', 'kind')
    )
    op.create_table('graph_nodes',
    sa.Column('doc_id', sa.String(length=64), nullable=False),
    sa.Column('node_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('anchor', sa.LargeBinary(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('text_hash', sa.String(length=64), nullable=False),
    sa.Column('embedding', sa.LargeBinary(), nullable=True),
    sa.Column('removed', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['doc_id'], ['documents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('doc_id', 'node_id', 'seq')
    )


def downgrade() -> None:
    op.drop_table('graph_nodes')
    op.drop_table('graph_edges')
