"""inference: steering vector library and trained SAEs

Revision ID: 0004
Revises: (none: the first revision of the inference tables' own history)

The id is the one this revision had in the hub's single chain, so a database migrated back then
is recorded as already here (``alembic_version_inference`` = 0004). Idempotent: the inference
layer once created these tables itself (``create_all``), so a database from then has them.
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if 'inference_steering_vectors' not in existing:
        op.create_table('inference_steering_vectors',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('model_key', sa.String(length=128), nullable=False),
        sa.Column('layer', sa.Integer(), nullable=False),
        sa.Column('d_model', sa.Integer(), nullable=False),
        sa.Column('norm', sa.Float(), nullable=False),
        sa.Column('vector', sa.LargeBinary(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('provenance', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name', 'model_key', 'layer', name='uq_steering_vector')
        )
    if 'inference_saes' not in existing:
        op.create_table('inference_saes',
        sa.Column('id', sa.String(length=128), nullable=False),
        sa.Column('model_key', sa.String(length=128), nullable=False),
        sa.Column('layer', sa.Integer(), nullable=False),
        sa.Column('d_in', sa.Integer(), nullable=False),
        sa.Column('d_sae', sa.Integer(), nullable=False),
        sa.Column('k', sa.Integer(), nullable=False),
        sa.Column('path', sa.String(length=1024), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('tokens_trained', sa.Integer(), nullable=False),
        sa.Column('provenance', sa.JSON(), nullable=False),
        sa.Column('metrics', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint('id')
        )


def downgrade() -> None:
    op.drop_table('inference_saes')
    op.drop_table('inference_steering_vectors')
