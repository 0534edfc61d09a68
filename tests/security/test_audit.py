"""Hostile suite, audit log: verification trusts heads kept apart from the log, and refuses bad input by name.

Each attack is what someone with write access to the database (not to the worker's key or the chain) can do:
drop the last entries, rewrite one and recompute every hash after it, smuggle a duplicate key into a payload,
store something that is not JSON or not a time. Each is named with its reason and a non-zero exit, on a real
SQLite log (and the PostgreSQL server where the column types allow the attack), through the worker on a real
Temporal server and chain, and offline on a copy of the log.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.client import WorkflowFailureError
from typer.testing import CliRunner, Result

from activities.anchor import find_latest_anchor
from activities.audit_heads import HEADS_FILE, PUBLIC_KEY_FILE, HeadSigner
from activities.sql.audit_log import AuditLog
from activities.sql.database import Database
from tests.fixtures.postgres import fresh_database
from tests.workflows.conftest import Harness
from westworld import merkle
from westworld.audit import StoredEntry, canonical_json, entry_leaf, parse_time
from westworld.audit_anchor import anchor_payload, parse_anchor
from westworld.audit_trust import MAX_PROBLEMS, verify_log
from workers.cli import audit as audit_cli
from workers.cli.common import EXIT_NO
from workers.main import app
from workers.settings import Settings
from workflows.audit_anchor import AuditAnchorWorkflow

ANVIL_SECOND_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil's account #1


# --- what an attacker with database access does ------------------------------------------------------------------

async def sql(db: Database, statement: str, **params: Any) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(sa.text(statement), params)


async def rehash(db: Database) -> None:
    """Recompute every leaf hash, root and stored tree node from the stored content, as an attacker covering an
    edit would."""
    async with db.engine.begin() as conn:
        rows = list(await conn.execute(sa.text(
            "SELECT seq, kind, subject, payload, CAST(created_at AS TEXT) FROM audit_entries ORDER BY seq")))
        frontier = merkle.Frontier()
        for seq, kind, subject, payload, created_at in rows:
            leaf = merkle.leaf_hash(entry_leaf(kind, subject, payload, parse_time(created_at)))
            nodes = "".join(h.hex() for h in frontier.append(leaf))
            await conn.execute(sa.text("UPDATE audit_entries SET leaf_hash = :l, root_after = :r, nodes = :n "
                                       "WHERE seq = :s"), {"l": leaf.hex(), "r": frontier.root().hex(), "n": nodes,
                                                            "s": seq})


async def fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        await log.append("vote.result", f"proposal-{i}", {"decision": "approved", "i": i})


# --- how a user runs it -------------------------------------------------------------------------------------------

def client_settings(h: Harness) -> Settings:
    """What the CLI on the worker's machine reads: the worker's data dir, Temporal, the chain, the task queue."""
    return h.settings.model_copy(update={"task_queue": h.task_queue})


async def verify_online(h: Harness, settings: Settings | None = None) -> tuple[int, str]:
    lines: list[str] = []
    code = await audit_cli.verify(settings or client_settings(h), lines.append)
    return code, "\n".join(lines)


async def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """The real `westworld` command line (in a thread: it runs its own event loop)."""
    def run() -> Result:
        return CliRunner().invoke(app, list(args), env=env)

    return await asyncio.to_thread(run)


async def anchor(h: Harness) -> None:
    await h.client.execute_workflow(AuditAnchorWorkflow.run, id=f"audit-anchor-{uuid.uuid4()}",
                                    task_queue=h.task_queue)


@pytest.fixture(params=["sqlite", "postgres"])
async def signed_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AuditLog]:
    """An empty log with signed heads in ``tmp_path``, on each database kind."""
    db = await fresh_database(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url"))
    yield AuditLog(db, HeadSigner.in_dir(tmp_path))
    await db.close()


@pytest.fixture
async def sqlite_log(tmp_path: Path) -> AsyncIterator[AuditLog]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'westworld.db'}")
    await db.migrate()
    yield AuditLog(db, HeadSigner.in_dir(tmp_path))
    await db.close()


def db_of(log: AuditLog) -> Database:
    return log._db  # the attacker's own handle on the same database


def kinds(report: Any) -> list[tuple[int, str]]:
    return [(p.seq, p.kind) for p in report.problems]


# --- the rules ----------------------------------------------------------------------------------------------------

class TestTruncationIsNamed:
    async def test_dropping_the_last_entries_is_named_against_the_signed_head_and_the_chain_anchor(
        self, harness: Harness
    ) -> None:
        log = harness.resources.audit
        await fill(log, 3)
        await anchor(harness)  # anchors size 3, then records the anchor as entry 3
        await fill(log, 2)
        code, out = await verify_online(harness)
        assert code == 0, out
        assert "audit log OK: 6 entries" in out and "size 3" in out
        await sql(harness.resources.database, "DELETE FROM audit_entries WHERE seq >= 2")
        assert (await log.verify()).tree_size == 2  # the rows alone still chain
        code, out = await verify_online(harness)
        assert code == EXIT_NO
        assert "truncated" in out and "the log has 2 entries but the signed head" in out and "says 6 > 2" in out
        assert "the anchor on chain" in out and "says 3 > 2: entries 2..2 were removed" in out

    async def test_the_anchor_workflow_refuses_to_anchor_a_truncated_log(self, harness: Harness) -> None:
        await fill(harness.resources.audit, 4)
        await anchor(harness)
        await sql(harness.resources.database, "DELETE FROM audit_entries WHERE seq >= 3")
        with pytest.raises(WorkflowFailureError) as exc:
            await anchor(harness)
        assert "truncated" in str(exc.value.cause) and "says 4 > 3" in str(exc.value.cause)

    async def test_dropping_the_last_entries_is_named_on_each_database(self, signed_log: AuditLog) -> None:
        await fill(signed_log, 5)
        await sql(db_of(signed_log), "DELETE FROM audit_entries WHERE seq >= 3")
        report = await signed_log.verify()
        assert kinds(report) == [(3, "truncated")]
        assert "the log has 3 entries but the signed head" in report.problems[0].message
        assert "says 5 > 3: entries 3..4 were removed" in report.problems[0].message

    async def test_without_the_worker_a_truncated_copy_is_named(self, sqlite_log: AuditLog, tmp_path: Path) -> None:
        await fill(sqlite_log, 5)
        copy = tmp_path / "copy"
        copy.mkdir()
        src = sqlite3.connect(tmp_path / "westworld.db")
        dst = sqlite3.connect(copy / "westworld.db")
        src.backup(dst)
        dst.execute("DELETE FROM audit_entries WHERE seq >= 3")
        dst.commit()
        src.close()
        dst.close()
        for name in (HEADS_FILE, PUBLIC_KEY_FILE):
            shutil.copy(tmp_path / name, copy / name)
        out = await cli("audit", "verify", "--log-file", str(copy / "westworld.db"), "--no-chain")
        assert out.exit_code == EXIT_NO, out.output
        assert "truncated" in out.output and "says 5 > 3" in out.output


class TestRewriteAndRehashIsNamed:
    async def test_an_edited_and_rehashed_entry_is_named_by_the_signed_heads_and_the_anchor(
        self, harness: Harness
    ) -> None:
        log = harness.resources.audit
        await fill(log, 5)
        await anchor(harness)
        await sql(harness.resources.database, "UPDATE audit_entries SET payload = :p WHERE seq = 1",
                  p=canonical_json({"decision": "rejected", "i": 1}))
        await rehash(harness.resources.database)
        assert not kinds(await AuditLog(harness.resources.database).verify())  # the log agrees with itself
        code, out = await verify_online(harness)
        assert code == EXIT_NO
        assert "rewritten: entry 1 differs from what the signed head of size 2" in out
        assert "the first 5 entries do not hash to the root" in out

    async def test_an_edited_and_rehashed_entry_is_named_on_each_database(self, signed_log: AuditLog) -> None:
        await fill(signed_log, 4)
        await sql(db_of(signed_log), "UPDATE audit_entries SET payload = :p WHERE seq = 2",
                  p=canonical_json({"decision": "rejected", "i": 2}))
        await rehash(db_of(signed_log))
        report = await signed_log.verify()
        assert kinds(report) == [(2, "rewritten")]
        assert "entry 2 differs from what the signed head of size 3" in report.problems[0].message

    async def test_heads_forged_to_match_the_rewrite_do_not_move_the_blame(
        self, signed_log: AuditLog, tmp_path: Path
    ) -> None:
        await fill(signed_log, 4)
        await sql(db_of(signed_log), "UPDATE audit_entries SET payload = :p WHERE seq = 0",
                  p=canonical_json({"decision": "rejected", "i": 0}))
        await rehash(db_of(signed_log))
        heads = tmp_path / HEADS_FILE
        real = [json.loads(x) for x in heads.read_text().splitlines()]
        forged = [real[0] | {"tree_size": size, "root": await signed_log.root(size)} for size in (1, 2, 3)]
        heads.write_text("".join(json.dumps(h) + "\n" for h in [*forged, *real]))
        report = await signed_log.verify()
        assert ("rewritten" in [k for _, k in kinds(report)]
                and "entry 0 differs from what the signed head of size 1" in str(report.problems))
        assert "line 1 (size 1): the signature does not verify" in str(report.problems)

    async def test_a_forged_or_deleted_heads_file_is_named(self, sqlite_log: AuditLog, tmp_path: Path) -> None:
        await fill(sqlite_log, 3)
        heads = tmp_path / HEADS_FILE
        lines = heads.read_text().splitlines()
        forged = json.loads(lines[-1]) | {"tree_size": 2}
        heads.write_text("\n".join([*lines[:-1], json.dumps(forged), "not a head"]) + "\n")
        report = await sqlite_log.verify()
        assert ("bad_signed_head" in [k for _, k in kinds(report)]
                and "line 3 (size 2): the signature does not verify" in str(report.problems))
        assert "line 4: unreadable" in str(report.problems)
        heads.unlink()
        report = await sqlite_log.verify()
        assert kinds(report) == [(2, "no_signed_head")]
        assert "the log has 3 entries but no valid signed head" in report.problems[0].message


class TestDuplicateKeysAreRefused:
    async def test_a_prepended_duplicate_key_is_named(self, signed_log: AuditLog) -> None:
        await fill(signed_log, 2)
        payload = canonical_json({"decision": "approved", "i": 1})
        await sql(db_of(signed_log), "UPDATE audit_entries SET payload = :p WHERE seq = 1",
                  p='{"decision":"rejected",' + payload[1:])
        report = await signed_log.verify()
        assert kinds(report) == [(1, "duplicate_key")]
        assert "entry 1 (vote.result proposal-1)" in report.problems[0].message
        assert "'decision' appears twice" in report.problems[0].message

    @given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers() | st.text(max_size=5), min_size=1),
           st.data())
    @settings(max_examples=50, deadline=None)
    def test_any_duplicated_key_is_refused(self, payload: dict[str, Any], data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(payload)))
        at = "2026-01-01T00:00:00.000000+00:00"
        honest = canonical_json(payload)
        leaf = merkle.leaf_hash(entry_leaf("k", "s", honest, parse_time(at))).hex()
        forged = "{" + json.dumps(key) + ":" + json.dumps("forged") + "," + honest[1:]
        entry = StoredEntry(seq=0, kind="k", subject="s", payload_json=forged, leaf_hash=leaf, root_after=leaf,
                            created_at=at)
        assert kinds(verify_log([entry])) == [(0, "duplicate_key")]

    async def test_a_payload_not_in_canonical_form_is_named(self, signed_log: AuditLog) -> None:
        await fill(signed_log, 1)
        await sql(db_of(signed_log), "UPDATE audit_entries SET payload = :p WHERE seq = 0",
                  p='{"i": 0, "decision": "approved"}')  # same content, other bytes
        report = await signed_log.verify()
        assert kinds(report) == [(0, "not_canonical")]
        assert "differ from their canonical serialisation" in report.problems[0].message


class TestUnreadableEntriesAreNamed:
    async def test_a_payload_that_is_not_json_is_named_not_a_traceback(self, signed_log: AuditLog) -> None:
        await fill(signed_log, 3)
        await sql(db_of(signed_log), "UPDATE audit_entries SET payload = :p WHERE seq = 1", p="approved, honest")
        report = await signed_log.verify()
        assert kinds(report) == [(1, "not_json")]
        assert "entry 1 (vote.result proposal-1): its payload is not JSON" in report.problems[0].message
        shown = (await signed_log.latest(3))[1]
        assert shown.payload == {} and shown.problem is not None and "unreadable" in shown.problem

    async def test_a_bad_timestamp_is_named_and_later_entries_are_still_checked(self, sqlite_log: AuditLog) -> None:
        await fill(sqlite_log, 4)
        await sql(db_of(sqlite_log), "UPDATE audit_entries SET created_at = 'yesterday' WHERE seq = 1")
        await sql(db_of(sqlite_log), "UPDATE audit_entries SET payload = :p WHERE seq = 3",
                  p=canonical_json({"decision": "rejected", "i": 3}))
        report = await sqlite_log.verify()
        assert kinds(report) == [(1, "bad_timestamp"), (3, "payload_changed")]
        assert "its creation time 'yesterday' is not an ISO 8601 time" in report.problems[0].message
        assert (await sqlite_log.latest(4))[1].problem == "creation time 'yesterday' is not an ISO 8601 time"

    def test_a_flood_of_bad_entries_is_counted_not_dropped(self) -> None:
        rows = [StoredEntry(seq=i, kind="k", subject="s", payload_json="{", leaf_hash="0" * 64, root_after="0" * 64,
                            created_at="2026-01-01T00:00:00+00:00") for i in range(MAX_PROBLEMS + 50)]
        report = verify_log(rows)
        assert (len(report.problems), report.omitted_problems) == (MAX_PROBLEMS, 51)  # + the broken root chain
        lines: list[str] = []
        assert audit_cli.render(report, [], [], lines.append) == EXIT_NO
        assert f"FAILED verification: {MAX_PROBLEMS + 51} problem(s)" in lines[-MAX_PROBLEMS - 2]
        assert lines[-1] == f"  ... and 51 more (the report lists the first {MAX_PROBLEMS})"

    async def test_offline_each_unreadable_entry_is_named_with_exit_2(
        self, sqlite_log: AuditLog, tmp_path: Path
    ) -> None:
        await fill(sqlite_log, 3)
        await sql(db_of(sqlite_log), "UPDATE audit_entries SET payload = 'x' WHERE seq = 0")
        await sql(db_of(sqlite_log), "UPDATE audit_entries SET created_at = 'never' WHERE seq = 2")
        out = await cli("audit", "verify", "--log-file", str(tmp_path / "westworld.db"), "--no-chain")
        assert out.exit_code == EXIT_NO, out.output
        assert "entry 0: not_json" in out.output and "entry 2: bad_timestamp" in out.output
        shown = await cli("audit", "show", "--last", "3", "--log-file", str(tmp_path / "westworld.db"))
        assert shown.exit_code == EXIT_NO and "#0 UNREADABLE" in shown.output and "#2 UNREADABLE" in shown.output


class TestBadRequestsAreRefused:
    async def test_a_file_that_is_not_a_database_is_refused(self, tmp_path: Path) -> None:
        bogus = tmp_path / "westworld.db"
        bogus.write_text("these are not the rows you are looking for\n" * 50)
        out = await cli("audit", "verify", "--log-file", str(bogus), "--no-chain")
        assert out.exit_code == 1
        assert f"no audit log at {bogus}: not an SQLite database" in out.output

    async def test_a_database_without_an_audit_log_is_refused(self, tmp_path: Path) -> None:
        other = tmp_path / "other.db"
        sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
        out = await cli("audit", "verify", "--log-file", str(other), "--no-chain")
        assert out.exit_code == 1 and "has no audit_entries table" in out.output

    async def test_a_path_to_nowhere_is_refused_and_nothing_is_created(self, tmp_path: Path) -> None:
        nowhere = tmp_path / "nowhere"
        out = await cli("audit", "verify", "--data-dir", str(nowhere))
        assert out.exit_code == 1 and f"no audit log at {nowhere}" in out.output
        out = await cli("audit", "verify", "--log-file", str(nowhere / "westworld.db"))
        assert out.exit_code == 1 and f"no audit log at {nowhere / 'westworld.db'}" in out.output
        out = await cli("audit", "show", "--data-dir", str(nowhere))
        assert out.exit_code == 1 and f"no audit log at {nowhere}" in out.output
        assert not nowhere.exists()

    @pytest.mark.parametrize("last", ["-5", "0"])
    async def test_show_refuses_a_count_that_is_not_positive(self, last: str, tmp_path: Path) -> None:
        out = await cli("audit", "show", "--last", last, "--data-dir", str(tmp_path))
        assert out.exit_code == 2 and "--last" in out.output and "#" not in out.output


class TestTheCliIsAClient:
    async def test_verify_runs_in_the_worker_without_the_database_or_the_keys(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        await fill(harness.resources.audit, 2)
        await anchor(harness)
        client_dir = tmp_path / "client"  # only what a client holds: payload keys and the public contract list
        client_dir.mkdir()
        for f in (harness.settings.resolved_codec_key_file, harness.settings.contracts_file):
            shutil.copy(f, client_dir / f.name)
        settings = client_settings(harness).model_copy(update={"data_dir": client_dir})
        code, out = await verify_online(harness, settings)
        assert code == 0, out
        assert "audit log OK: 3 entries" in out and "by this CLI: anchors sent by" in out
        assert sorted(p.name for p in client_dir.iterdir()) == sorted(
            [harness.settings.resolved_codec_key_file.name, harness.settings.contracts_file.name])

    async def test_show_runs_in_the_worker_and_names_an_unreadable_entry(self, harness: Harness) -> None:
        await fill(harness.resources.audit, 3)
        lines: list[str] = []
        assert await audit_cli.show(client_settings(harness), 2, lines.append) == 0
        assert [x.split()[0] for x in lines[:2]] == ["#1", "#2"] and "(3 entries, verified)" in lines[-1]
        await sql(harness.resources.database, "UPDATE audit_entries SET payload = 'gone' WHERE seq = 2")
        lines.clear()
        assert await audit_cli.show(client_settings(harness), 2, lines.append) == EXIT_NO
        assert lines[1].startswith("#2 UNREADABLE") and "payload unreadable" in lines[1]
        assert "FAILED verification (1 problem(s))" in lines[-1]

    async def test_a_worker_report_that_does_not_extend_the_chain_anchor_is_named(self, harness: Harness) -> None:
        await fill(harness.resources.audit, 3)
        await anchor(harness)
        lines: list[str] = []
        result = await audit_cli._through_worker(client_settings(harness), 0)
        chain, _ = await audit_cli._chain_anchor(client_settings(harness), result.report.log_key)
        assert chain is not None and audit_cli.check_against_chain(result.report, chain) == []
        lied = result.report.model_copy(update={"root": "00" * 32})
        assert "does not verify" in audit_cli.check_against_chain(lied, chain)[0]
        stale = result.report.model_copy(update={"anchor": None})
        assert "but the worker used no anchor" in audit_cli.check_against_chain(stale, chain)[0]
        assert audit_cli.render(lied, audit_cli.check_against_chain(lied, chain), [], lines.append) == EXIT_NO


class TestOnlyTheRelayersAnchorsCount:
    async def test_an_anchor_planted_by_another_account_is_ignored(self, harness: Harness) -> None:
        log = harness.resources.audit
        assert log.heads is not None
        await fill(log, 2)
        await anchor(harness)
        w3 = harness.resources.chain.w3
        planter = Account.from_key(ANVIL_SECOND_KEY)  # funded on every anvil, but not the relayer
        tx = {"to": planter.address, "value": 0, "gas": 60_000, "chainId": await w3.eth.chain_id,
              "data": anchor_payload(99, "ab" * 32, log.heads.public_key), "gasPrice": await w3.eth.gas_price,
              "nonce": await w3.eth.get_transaction_count(planter.address, "pending")}
        await w3.eth.wait_for_transaction_receipt(
            await w3.eth.send_raw_transaction(planter.sign_transaction(tx).raw_transaction))
        code, out = await verify_online(harness)
        assert code == 0, out
        assert "size 2 in tx" in out and "says 99" not in out
        relayer = harness.resources.chain.relayer.address
        for index in (True, False):  # the relayer's own transactions, and whole blocks read back
            found = await find_latest_anchor(w3, relayer, log.heads.public_key, index=index)
            assert found is not None and found.tree_size == 2

    def test_anchor_calldata_names_its_log_key_and_nothing_else_parses(self) -> None:
        key, root = "11" * 32, "22" * 32
        assert parse_anchor(anchor_payload(7, root, key)) == (7, root, key)
        assert parse_anchor(anchor_payload(7, root)) == (7, root, "")  # the first format: bound to no log key
        for junk in (b"", anchor_payload(7, root, key)[:-1], b"westworld-audit-root:v2:" + bytes(71), b"x" * 96):
            assert parse_anchor(junk) is None
