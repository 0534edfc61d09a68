"""Every table of the project database, in ONE :class:`sqlalchemy.MetaData`.

Each table is written by exactly one store (named above it); any other module that needs its data calls that
store's methods. The schema changes only through a migration in ``activities/sql/migrations/versions``; a test
(``tests/activities/test_sql_migrations.py``) checks that the migrations build exactly this metadata.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

TS = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite auto-increments only INTEGER primary keys
WEIGHT = sa.String(80)  # decimal string: voting power exceeds 2**63

# --- owner: activities/sql/audit_log.py (AuditLog) -------------------------------------------------------------
audit_entries = sa.Table(
    "audit_entries", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(256), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("leaf_hash", sa.String(64), nullable=False),
    sa.Column("root_after", sa.String(64), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    # the Merkle tree's perfect subtree roots this entry completes, hex, level 1 first (revision 0005)
    sa.Column("nodes", sa.Text, nullable=False, server_default=""),
)

# --- owner: activities/sql/vote_store.py (VoteStore) -----------------------------------------------------------
votes = sa.Table(  # the voter's current ballot
    "votes", metadata,
    sa.Column("proposal_id", sa.String(128), primary_key=True),
    sa.Column("voter", sa.String(42), primary_key=True),
    sa.Column("choice", sa.String(64), nullable=False),
    sa.Column("weight", WEIGHT, nullable=False),
    sa.Column("vote_hash", sa.String(66), nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("previous_choice", sa.String(64)),
    sa.Column("previous_weight", WEIGHT),
    sa.Column("created_at", TS, nullable=False),
)
vote_ballots = sa.Table(  # every ballot ever accepted, with the receipt it got: a resend answers with it
    "vote_ballots", metadata,
    sa.Column("proposal_id", sa.String(128), primary_key=True),
    sa.Column("vote_hash", sa.String(66), primary_key=True),
    sa.Column("voter", sa.String(42), nullable=False),
    sa.Column("choice", sa.String(64), nullable=False),
    sa.Column("weight", WEIGHT, nullable=False),
    sa.Column("previous_choice", sa.String(64)),
    sa.Column("previous_weight", WEIGHT),
    sa.Column("created_at", TS, nullable=False),
)
vote_proposals = sa.Table(  # who opened the proposal, what it opened with (written once), and the live tally
    "vote_proposals", metadata,
    sa.Column("proposal_id", sa.String(128), primary_key=True),
    sa.Column("first_run_id", sa.String(64), nullable=False),
    sa.Column("workflow_id", sa.String(300), nullable=False),
    sa.Column("opening", sa.Text),
    sa.Column("tally", sa.Text, nullable=False),
    sa.Column("votes", sa.Integer, nullable=False),
    sa.Column("rejected", sa.Integer, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("closed_at", TS),  # set by the vote when it closes: no ballot is recorded after (revision 0002)
)

# --- owner: activities/sql/capability_store.py (CapabilityStore) -----------------------------------------------
# (its SQLite check path, activities/sql/capability_check.py, writes cap_usage, cap_decisions and cap_events for it)
cap_root_keys = sa.Table(
    "cap_root_keys", metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("sealed", sa.Text, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)
cap_revoked = sa.Table(
    "cap_revoked", metadata,
    sa.Column("token_id", sa.String(128), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", TS, nullable=False),
)
cap_counters = sa.Table(
    "cap_counters", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
cap_nodes = sa.Table(
    "cap_nodes", metadata,
    sa.Column("node_id", sa.String(128), primary_key=True),
    sa.Column("region", sa.String(64), nullable=False),
    sa.Column("public_key", sa.String(64)),
    sa.Column("added_at", TS, nullable=False),
)
cap_guardians = sa.Table(
    "cap_guardians", metadata,
    sa.Column("guardian_id", sa.String(128), primary_key=True),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("added_at", TS, nullable=False),
)
cap_usage = sa.Table(
    "cap_usage", metadata,
    sa.Column("id", SEQ, primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.String(128), nullable=False),
    sa.Column("node_id", sa.String(128), nullable=False),
    sa.Column("action_id", sa.String(300), nullable=False),
    sa.Column("at", TS, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Index("cap_usage_agent_at", "agent_id", "at"),
    sa.Index("cap_usage_action", "action_id"),
)
cap_decisions = sa.Table(
    "cap_decisions", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("action_id", sa.String(300), nullable=False, unique=True),
    sa.Column("agent_id", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64)),
    sa.Column("at", TS, nullable=False),
    sa.Column("live_nodes", sa.Integer, nullable=False),
    sa.Column("node_ids", sa.Text, nullable=False),
    sa.Column("result", sa.Text, nullable=False),
)
# The anomaly watch's feed: a denial when it is decided, an allowed action once it has happened (settled), with
# the peers that endorsed it. A wide action still waiting for peers is not (yet) a touch of the network.
cap_events = sa.Table(
    "cap_events", metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("action_id", sa.String(300), nullable=False, unique=True),
    sa.Column("agent_id", sa.String(128), nullable=False),
    sa.Column("at", TS, nullable=False),
    sa.Column("allowed", sa.Boolean, nullable=False),
    sa.Column("caveat", sa.Text, nullable=False),
    sa.Column("node_ids", sa.Text, nullable=False),
    sa.Column("endorsed_by", sa.Text, nullable=False),
)
cap_halts = sa.Table(
    "cap_halts", metadata,
    sa.Column("epoch", SEQ, primary_key=True, autoincrement=False),
    sa.Column("request_key", sa.String(300), nullable=False, unique=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("started_at", TS),
    sa.Column("resumed_at", TS),
    sa.Column("resumed_by", sa.Text, nullable=False, server_default="[]"),
)
# The workers' X25519 key that capability tokens are sealed to (westworld/sealed.py), sealed under the KEK like
# root keys; and which run claimed each sealed token (a sealed token authorises one workflow execution).
cap_seal_keys = sa.Table(
    "cap_seal_keys", metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("sealed", sa.Text, nullable=False),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("created_at", TS, nullable=False),
)
cap_sealed_claims = sa.Table(
    "cap_sealed_claims", metadata,
    sa.Column("box_id", sa.String(64), primary_key=True),
    sa.Column("workflow_id", sa.String(1000), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("at", TS, nullable=False),
)

# --- owner: activities/sql/admin_store.py (AdminStore) ---------------------------------------------------------
cap_operators = sa.Table(
    "cap_operators", metadata,
    sa.Column("operator_id", sa.String(128), primary_key=True),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("added_at", TS, nullable=False),
)
cap_admin_nonces = sa.Table(  # each signed admin change's nonce, the run that used it and its outcome
    "cap_admin_nonces", metadata,
    sa.Column("nonce", sa.String(300), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("outcome", sa.Text),
    sa.Column("at", TS, nullable=False),
)

# --- owner: activities/sql/key_epoch_store.py (KeyEpochStore) --------------------------------------------------
shelter_key_epochs = sa.Table(  # public data only
    "shelter_key_epochs", metadata,
    sa.Column("epoch", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("epoch_key", sa.String(128), unique=True),
    sa.Column("threshold", sa.Integer, nullable=False),
    sa.Column("master_public_key", sa.String(64), nullable=False),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("guardians", sa.Text, nullable=False),  # JSON list of Guardian
    sa.Column("shares", sa.Text, nullable=False),  # JSON list of EncryptedShare (sealed boxes + commitments)
    sa.Column("created_at", TS, nullable=False),
    sa.Column("retired", sa.Boolean, nullable=False, default=False),
)

# --- owner: activities/sql/document_store.py (DocumentStore) ---------------------------------------------------
shelter_documents = sa.Table(  # public data only
    "shelter_documents", metadata,
    sa.Column("document_id", sa.String(64), primary_key=True),
    sa.Column("title", sa.String(256), nullable=False),
    sa.Column("key_epoch", sa.Integer, nullable=False),
    sa.Column("wrapped_key", sa.Text, nullable=False),  # JSON Sealed: the data key sealed to the master public key
    sa.Column("ciphertext_sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("plaintext_size", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),  # workflow id + run: a retried encrypt is recognised
    sa.Column("created_at", TS, nullable=False),
)
shelter_replicas = sa.Table(
    "shelter_replicas", metadata,
    sa.Column("document_id", sa.String(64), sa.ForeignKey("shelter_documents.document_id"), primary_key=True),
    sa.Column("network", sa.String(16), primary_key=True),
    sa.Column("locator", sa.String(256), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("verified_at", TS),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
)

# --- owner: activities/sql/rotation_store.py (RotationStore) ---------------------------------------------------
shelter_rotations = sa.Table(  # a rotation's pending epoch (public data only) until it is activated
    "shelter_rotations", metadata,
    sa.Column("rotation_id", sa.String(200), primary_key=True),
    sa.Column("from_epoch", sa.Integer, nullable=False),
    sa.Column("pending", sa.Text, nullable=False),  # PendingEpoch JSON
    sa.Column("state", sa.String(16), nullable=False),  # pending | active | abandoned
    sa.Column("updated_at", TS, nullable=False),
)
shelter_rewraps = sa.Table(
    "shelter_rewraps", metadata,
    sa.Column("rotation_id", sa.String(200), primary_key=True),
    sa.Column("document_id", sa.String(64), primary_key=True),
    sa.Column("from_epoch", sa.Integer, nullable=False),
    sa.Column("wrapped_key", sa.Text, nullable=False),  # JSON Sealed: the data key sealed to the NEW master public key
)

# --- owner: activities/sql/charter_store.py (CharterStore) -----------------------------------------------------
charter_consents = sa.Table(  # every signed consent message accepted (a subject's nonce is used once)
    "charter_consents", metadata,
    sa.Column("subject", sa.String(42), primary_key=True),
    sa.Column("nonce", sa.String(80), primary_key=True),  # decimal: a uint256
    sa.Column("metric", sa.String(128), nullable=False),
    sa.Column("granted", sa.Boolean, nullable=False),
    sa.Column("consent_hash", sa.String(66), nullable=False, unique=True),
    sa.Column("workflow_id", sa.String(300), nullable=False),
    sa.Column("at", TS, nullable=False),
)
charter_exports = sa.Table(  # delivered export bundles (sealed to their subject) and where they are
    "charter_exports", metadata,
    sa.Column("export_id", sa.String(300), primary_key=True),
    sa.Column("subject", sa.String(42), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("cid", sa.String(128), nullable=False),
    sa.Column("file", sa.String(500), nullable=False),
    sa.Column("delivered_at", TS, nullable=False),
)
charter_cases = sa.Table(  # decided violation cases, redacted: what is published, nothing about the reporter
    "charter_cases", metadata,
    sa.Column("case_id", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("decided_by", sa.Text, nullable=False),  # JSON list of member addresses (or the DAO proposal)
    sa.Column("opened_at", TS, nullable=False),
    sa.Column("closed_at", TS, nullable=False),
)
