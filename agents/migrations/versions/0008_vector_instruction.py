"""vector jobs: an instruction (a PSR vector) as a third kind of request

Revision ID: 0008
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('vector_jobs', sa.Column('instruction', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('vector_jobs', 'instruction')
