"""Generation counters for the capability check's caches, kept by the database itself (triggers).

``cap_counters`` gets two rows: ``state_generation`` goes up with every change of what a check reads (root keys,
revocations, the revocation epoch, the node registry, halts), ``usage_generation`` with every change of the usage
ledger other than a new row or a reservation confirmed (a release, a delete, on SQLite a row inserted below the
highest id). Triggers bump them in the writing transaction, whoever writes (the store, another worker, an
operator's SQL), so a check that reads the counters in its own transaction can trust a cache built at the same
generation and must rebuild it otherwise.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

# Every statement below is built from this module's constants only (no input reaches them): hence the S608 noqa.

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STATE, USAGE = "state_generation", "usage_generation"
STATE_TABLES = ("cap_root_keys", "cap_revoked", "cap_nodes", "cap_halts")
OURS = f"('{STATE}', '{USAGE}')"
# A reservation confirmed (the action ran) still counts against the budget: the one update that is not a change.
CONFIRMED = ("OLD.state = 'reserved' AND NEW.state = 'confirmed' AND OLD.agent_id = NEW.agent_id "
             "AND OLD.node_id = NEW.node_id AND OLD.at = NEW.at")


def _bump(name: str) -> str:
    return f"UPDATE cap_counters SET value = value + 1 WHERE name = '{name}'"  # noqa: S608


def _sqlite() -> list[str]:
    out = []
    for table in STATE_TABLES:
        for event in ("INSERT", "UPDATE", "DELETE"):
            out.append(f"CREATE TRIGGER {table}_gen_{event.lower()} AFTER {event} ON {table} "
                       f"BEGIN {_bump(STATE)}; END")
    for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        out.append(f"CREATE TRIGGER cap_counters_gen_{event.lower()} AFTER {event} ON cap_counters "
                   f"WHEN {row}.name NOT IN {OURS} BEGIN {_bump(STATE)}; END")
    out.append(f"CREATE TRIGGER cap_usage_gen_update AFTER UPDATE ON cap_usage WHEN NOT ({CONFIRMED}) "
               f"BEGIN {_bump(USAGE)}; END")
    out.append(f"CREATE TRIGGER cap_usage_gen_delete AFTER DELETE ON cap_usage BEGIN {_bump(USAGE)}; END")
    # The SQLite check follows new rows by id (each new row gets max + 1): a row given a lower id by hand is a change.
    out.append(f"CREATE TRIGGER cap_usage_gen_insert AFTER INSERT ON cap_usage "  # noqa: S608
               f"WHEN NEW.id < (SELECT max(id) FROM cap_usage) BEGIN {_bump(USAGE)}; END")
    return out


def _postgresql() -> list[str]:
    out = ["CREATE OR REPLACE FUNCTION cap_bump_generation() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
           "UPDATE cap_counters SET value = value + 1 WHERE name = TG_ARGV[0]; RETURN NULL; END $$"]
    for table in STATE_TABLES:
        out.append(f"CREATE TRIGGER {table}_gen AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION cap_bump_generation('{STATE}')")
    for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        out.append(f"CREATE TRIGGER cap_counters_gen_{event.lower()} AFTER {event} ON cap_counters FOR EACH ROW "
                   f"WHEN ({row}.name NOT IN {OURS}) EXECUTE FUNCTION cap_bump_generation('{STATE}')")
    out.append(f"CREATE TRIGGER cap_counters_gen_truncate AFTER TRUNCATE ON cap_counters FOR EACH STATEMENT "
               f"EXECUTE FUNCTION cap_bump_generation('{STATE}')")
    out.append(f"CREATE TRIGGER cap_usage_gen_update AFTER UPDATE ON cap_usage FOR EACH ROW WHEN (NOT ({CONFIRMED})) "
               f"EXECUTE FUNCTION cap_bump_generation('{USAGE}')")
    out.append(f"CREATE TRIGGER cap_usage_gen_delete AFTER DELETE OR TRUNCATE ON cap_usage FOR EACH STATEMENT "
               f"EXECUTE FUNCTION cap_bump_generation('{USAGE}')")
    return out


def upgrade() -> None:
    for name in (STATE, USAGE):
        op.execute(f"INSERT INTO cap_counters (name, value) SELECT '{name}', 1 "  # noqa: S608
                   f"WHERE NOT EXISTS (SELECT 1 FROM cap_counters WHERE name = '{name}')")
    for statement in (_postgresql() if op.get_bind().dialect.name == "postgresql" else _sqlite()):
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    names = ([f"{t}_gen" for t in STATE_TABLES] if postgres else
             [f"{t}_gen_{e}" for t in STATE_TABLES for e in ("insert", "update", "delete")])
    names += [f"cap_counters_gen_{e}" for e in ("insert", "update", "delete")]
    names += ["cap_counters_gen_truncate"] if postgres else []
    names += ["cap_usage_gen_update", "cap_usage_gen_delete"] + ([] if postgres else ["cap_usage_gen_insert"])
    for name in names:
        on = name.split("_gen")[0]
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {on}" if postgres else f"DROP TRIGGER IF EXISTS {name}")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS cap_bump_generation()")
    op.execute(f"DELETE FROM cap_counters WHERE name IN {OURS}")  # noqa: S608
