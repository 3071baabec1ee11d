"""steering vectors built over REST: their jobs

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'vector_jobs',
        sa.Column('id', sa.String(length=64), primary_key=True),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('progress', sa.Float(), nullable=False),
        sa.Column('pairs', sa.JSON(), nullable=False),
        sa.Column('layers', sa.JSON(), nullable=False),
        sa.Column('voice', sa.JSON(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('requested_by', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_vector_jobs_name', 'vector_jobs', ['name'])


def downgrade() -> None:
    op.drop_index('ix_vector_jobs_name', 'vector_jobs')
    op.drop_table('vector_jobs')
