"""leases: the newest fencing token of each document's background work (several hub processes)

Revision ID: 0007
Revises: 0001
Create Date: 2026-12-03 21:50:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('leases',
    sa.Column('doc_id', sa.String(length=64), nullable=False),
    sa.Column('token', sa.BigInteger(), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('taken_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['doc_id'], ['documents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('doc_id')
    )


def downgrade() -> None:
    op.drop_table('leases')
