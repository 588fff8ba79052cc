"""Leases for exactly-once jobs and deliveries.

- generations.heartbeat_at: the rendering worker renews it every few seconds; a running job whose
  heartbeat is older than the lease has no live worker and is put back on the queue.
- generations.enqueued_at: when the job's message was last published (a queued job whose message
  is nowhere in the broker is published again).
- generations.delivery_claim: which bot replica's claim the delivery lease belongs to; only the
  holder may renew it or mark the job delivered.
- generations.delivery_attempts: claims so far; a second claim means an earlier delivery may have
  posted part of the result already.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("delivery_claim", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("delivery_attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_column("delivery_attempts")
        batch_op.drop_column("delivery_claim")
        batch_op.drop_column("enqueued_at")
        batch_op.drop_column("heartbeat_at")
