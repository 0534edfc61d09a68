"""A proposal's ``closed_at``: the vote workflow closes it in the store before its final count, and the store
refuses every ballot after that (votes also arrive through the HTTP intake, outside the workflow).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vote_proposals") as batch:
        batch.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vote_proposals") as batch:
        batch.drop_column("closed_at")
