"""The schema as the code before migrations made it (each store ran ``create_all`` on its own tables).

On an empty database this creates every table. On a database that code made (tables, no ``alembic_version``)
it checks the tables that exist have the columns and indexes it knows, creates the ones missing (the shelter and
admin stores made theirs only on first use), and Alembic stamps it. The tables are spelled out here, frozen: a
migration never imports the live :mod:`activities.sql.schema`, which later revisions change.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from westworld.errors import CONFIG_ERROR, PermanentError

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WEIGHT = sa.String(80)


def previous_schema() -> sa.MetaData:
    """The tables of revision 0001."""
    md = sa.MetaData()
    c = sa.Column
    sa.Table("audit_entries", md, c("seq", SEQ, primary_key=True, autoincrement=False),
             c("kind", sa.String(64), nullable=False), c("subject", sa.String(256), nullable=False),
             c("payload", sa.Text, nullable=False), c("leaf_hash", sa.String(64), nullable=False),
             c("root_after", sa.String(64), nullable=False), c("created_at", TS, nullable=False))
    sa.Table("votes", md, c("proposal_id", sa.String(128), primary_key=True),
             c("voter", sa.String(42), primary_key=True), c("choice", sa.String(64), nullable=False),
             c("weight", WEIGHT, nullable=False), c("vote_hash", sa.String(66), nullable=False),
             c("signature", sa.Text, nullable=False), c("payload", sa.Text, nullable=False),
             c("previous_choice", sa.String(64)), c("previous_weight", WEIGHT), c("created_at", TS, nullable=False))
    sa.Table("vote_ballots", md, c("proposal_id", sa.String(128), primary_key=True),
             c("vote_hash", sa.String(66), primary_key=True), c("voter", sa.String(42), nullable=False),
             c("choice", sa.String(64), nullable=False), c("weight", WEIGHT, nullable=False),
             c("previous_choice", sa.String(64)), c("previous_weight", WEIGHT), c("created_at", TS, nullable=False))
    sa.Table("vote_proposals", md, c("proposal_id", sa.String(128), primary_key=True),
             c("first_run_id", sa.String(64), nullable=False), c("workflow_id", sa.String(300), nullable=False),
             c("opening", sa.Text), c("tally", sa.Text, nullable=False), c("votes", sa.Integer, nullable=False),
             c("rejected", sa.Integer, nullable=False), c("created_at", TS, nullable=False))
    sa.Table("cap_root_keys", md, c("key_id", sa.String(64), primary_key=True), c("sealed", sa.Text, nullable=False),
             c("active", sa.Boolean, nullable=False), c("created_at", TS, nullable=False))
    sa.Table("cap_revoked", md, c("token_id", sa.String(128), primary_key=True),
             c("reason", sa.Text, nullable=False), c("at", TS, nullable=False))
    sa.Table("cap_counters", md, c("name", sa.String(64), primary_key=True),
             c("value", sa.BigInteger, nullable=False))
    sa.Table("cap_nodes", md, c("node_id", sa.String(128), primary_key=True),
             c("region", sa.String(64), nullable=False), c("public_key", sa.String(64)),
             c("added_at", TS, nullable=False))
    sa.Table("cap_guardians", md, c("guardian_id", sa.String(128), primary_key=True),
             c("public_key", sa.String(64), nullable=False), c("added_at", TS, nullable=False))
    sa.Table("cap_usage", md, c("id", SEQ, primary_key=True, autoincrement=True),
             c("agent_id", sa.String(128), nullable=False), c("node_id", sa.String(128), nullable=False),
             c("action_id", sa.String(300), nullable=False), c("at", TS, nullable=False),
             c("state", sa.String(16), nullable=False),
             sa.Index("cap_usage_agent_at", "agent_id", "at"), sa.Index("cap_usage_action", "action_id"))
    sa.Table("cap_decisions", md, c("seq", SEQ, primary_key=True, autoincrement=True),
             c("action_id", sa.String(300), nullable=False, unique=True),
             c("agent_id", sa.String(128), nullable=False), c("action", sa.String(64)), c("at", TS, nullable=False),
             c("live_nodes", sa.Integer, nullable=False), c("node_ids", sa.Text, nullable=False),
             c("result", sa.Text, nullable=False))
    sa.Table("cap_events", md, c("seq", SEQ, primary_key=True, autoincrement=True),
             c("action_id", sa.String(300), nullable=False, unique=True),
             c("agent_id", sa.String(128), nullable=False), c("at", TS, nullable=False),
             c("allowed", sa.Boolean, nullable=False), c("caveat", sa.Text, nullable=False),
             c("node_ids", sa.Text, nullable=False), c("endorsed_by", sa.Text, nullable=False))
    sa.Table("cap_halts", md, c("epoch", SEQ, primary_key=True, autoincrement=False),
             c("request_key", sa.String(300), nullable=False, unique=True), c("reason", sa.Text, nullable=False),
             c("started_at", TS), c("resumed_at", TS),
             c("resumed_by", sa.Text, nullable=False, server_default="[]"))
    sa.Table("cap_seal_keys", md, c("key_id", sa.String(64), primary_key=True), c("sealed", sa.Text, nullable=False),
             c("public_key", sa.String(64), nullable=False), c("created_at", TS, nullable=False))
    sa.Table("cap_sealed_claims", md, c("box_id", sa.String(64), primary_key=True),
             c("workflow_id", sa.String(1000), nullable=False), c("run_id", sa.String(64), nullable=False),
             c("at", TS, nullable=False))
    sa.Table("cap_operators", md, c("operator_id", sa.String(128), primary_key=True),
             c("public_key", sa.String(64), nullable=False), c("added_at", TS, nullable=False))
    sa.Table("cap_admin_nonces", md, c("nonce", sa.String(300), primary_key=True),
             c("run_id", sa.String(64), nullable=False), c("outcome", sa.Text), c("at", TS, nullable=False))
    sa.Table("shelter_key_epochs", md, c("epoch", sa.Integer, primary_key=True, autoincrement=False),
             c("epoch_key", sa.String(128), unique=True), c("threshold", sa.Integer, nullable=False),
             c("master_public_key", sa.String(64), nullable=False), c("salt", sa.String(64), nullable=False),
             c("guardians", sa.Text, nullable=False), c("shares", sa.Text, nullable=False),
             c("created_at", TS, nullable=False), c("retired", sa.Boolean, nullable=False))
    sa.Table("shelter_documents", md, c("document_id", sa.String(64), primary_key=True),
             c("title", sa.String(256), nullable=False), c("key_epoch", sa.Integer, nullable=False),
             c("wrapped_key", sa.Text, nullable=False), c("ciphertext_sha256", sa.String(64), nullable=False),
             c("size", sa.BigInteger, nullable=False), c("plaintext_size", sa.BigInteger, nullable=False),
             c("created_by", sa.String(256), nullable=False), c("created_at", TS, nullable=False))
    sa.Table("shelter_replicas", md,
             c("document_id", sa.String(64), sa.ForeignKey("shelter_documents.document_id"), primary_key=True),
             c("network", sa.String(16), primary_key=True), c("locator", sa.String(256), nullable=False),
             c("sha256", sa.String(64), nullable=False), c("verified_at", TS), c("ok", sa.Boolean, nullable=False),
             c("state", sa.String(16), nullable=False), c("detail", sa.Text, nullable=False))
    sa.Table("shelter_rotations", md, c("rotation_id", sa.String(200), primary_key=True),
             c("from_epoch", sa.Integer, nullable=False), c("pending", sa.Text, nullable=False),
             c("state", sa.String(16), nullable=False), c("updated_at", TS, nullable=False))
    sa.Table("shelter_rewraps", md, c("rotation_id", sa.String(200), primary_key=True),
             c("document_id", sa.String(64), primary_key=True), c("from_epoch", sa.Integer, nullable=False),
             c("wrapped_key", sa.Text, nullable=False))
    return md


def _check_existing(inspector: sa.Inspector, table: sa.Table) -> None:
    """Refuse a table of the same name that is not the one this revision knows (not ours, or damaged)."""
    have = {str(col["name"]) for col in inspector.get_columns(table.name)}
    want = {str(col.name) for col in table.columns}
    have_ix = {str(ix["name"]) for ix in inspector.get_indexes(table.name)}
    want_ix = {str(ix.name) for ix in table.indexes}
    if have != want or not want_ix <= have_ix:
        raise PermanentError(
            f"the database has a table {table.name} that is not the one Westworld made: columns {sorted(have)}, "
            f"indexes {sorted(have_ix)}; expected columns {sorted(want)}, indexes {sorted(want_ix)}. "
            f"Point WESTWORLD_DATABASE_URL at Westworld's own database (or an empty one)", type=CONFIG_ERROR)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    for table in previous_schema().sorted_tables:
        if table.name in existing:
            _check_existing(inspector, table)
        else:
            table.create(bind)


def downgrade() -> None:
    previous_schema().drop_all(op.get_bind())
