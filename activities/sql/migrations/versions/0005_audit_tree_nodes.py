"""The audit log's stored Merkle tree: with each entry, the roots of the perfect subtrees its append completed
(hex, level 1 first), so inclusion and consistency proofs read O(log n) rows instead of every leaf hash. Existing
entries get theirs from their stored leaf hashes, in one pass.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BATCH = 5000


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()  # RFC 6962 inner node (frozen here, as of this revision)


def upgrade() -> None:
    with op.batch_alter_table("audit_entries") as batch:
        batch.add_column(sa.Column("nodes", sa.Text, nullable=False, server_default=""))
    conn = op.get_bind()
    entries = sa.table("audit_entries", sa.column("seq", sa.Integer), sa.column("leaf_hash", sa.String),
                       sa.column("nodes", sa.Text))
    frontier: list[bytes] = []
    updates = []
    rows = conn.execute(sa.select(entries.c.seq, entries.c.leaf_hash).order_by(entries.c.seq)).all()
    for size, (seq, leaf_hex) in enumerate(rows):
        try:
            frontier.append(bytes.fromhex(leaf_hex))
        except ValueError:
            frontier.append(hashlib.sha256(b"").digest())  # a damaged row: `audit verify` names it
        completed, carry = [], size
        while carry & 1:
            right = frontier.pop()
            frontier[-1] = _node(frontier[-1], right)
            completed.append(frontier[-1].hex())
            carry >>= 1
        if completed:
            updates.append({"s": seq, "n": "".join(completed)})
        if len(updates) >= BATCH:
            conn.execute(sa.update(entries).where(entries.c.seq == sa.bindparam("s")).values(nodes=sa.bindparam("n")),
                         updates)
            updates = []
    if updates:
        conn.execute(sa.update(entries).where(entries.c.seq == sa.bindparam("s")).values(nodes=sa.bindparam("n")),
                     updates)


def downgrade() -> None:
    with op.batch_alter_table("audit_entries") as batch:
        batch.drop_column("nodes")
