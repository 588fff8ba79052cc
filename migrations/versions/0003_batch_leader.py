"""Dynamic batching: which job's batch a job is rendering in.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 18:33:28.564452
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_leader_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_generations_batch_leader_id"), ["batch_leader_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_generations_batch_leader_id_generations"),
            "generations",
            ["batch_leader_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_generations_batch_leader_id_generations"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_generations_batch_leader_id"))
        batch_op.drop_column("batch_leader_id")
