"""The charter's users' rights: accepted consent messages, delivered export bundles, decided (redacted) cases.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "charter_consents",
        sa.Column("subject", sa.String(42), primary_key=True),
        sa.Column("nonce", sa.String(80), primary_key=True),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("granted", sa.Boolean, nullable=False),
        sa.Column("consent_hash", sa.String(66), nullable=False, unique=True),
        sa.Column("workflow_id", sa.String(300), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_table(
        "charter_exports",
        sa.Column("export_id", sa.String(300), primary_key=True),
        sa.Column("subject", sa.String(42), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("cid", sa.String(128), nullable=False),
        sa.Column("file", sa.String(500), nullable=False),
        sa.Column("delivered_at", TS, nullable=False),
    )
    op.create_table(
        "charter_cases",
        sa.Column("case_id", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("decided_by", sa.Text, nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("charter_cases", "charter_exports", "charter_consents"):
        op.drop_table(table)
