"""The SQL layer against real databases: a SQLite file and a real PostgreSQL server, same tests for both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.audit import AuditActivities
from activities.sql.audit_log import AuditLog
from activities.sql.database import Database
from activities.sql.vote_store import Ballot, VoteStore
from tests.fixtures.activity_env import InterceptedEnvironment
from tests.fixtures.postgres import fresh_database
from westworld.audit import AuditEntryInput, TreeHead
from westworld.chain import ChainSnapshot
from westworld.errors import (
    AUDIT_UNAVAILABLE,
    INJECTED_STATE,
    PROPOSAL_ALREADY_OPENED,
    VOTE_ALREADY_CAST,
    AuditTampered,
    AuditUnavailable,
    WestworldError,
)
from westworld.keys import vote_id
from westworld.vote import ClaimProposalInput, LoadOpeningInput, RecordVoteResult, VoteOpening, VoteRules
from workers.stack.processes import free_port

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CAROL = "0x" + "c3" * 20


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database of each kind (the PostgreSQL server is shared by the session; tables are reset)."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    database = await fresh_database(url)
    assert await database.migrate() == await database.migrate()  # idempotent
    yield database
    await database.close()


async def sql(db: Database, statement: str, **params: object) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text(statement), params)


async def fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        await log.append("test.entry", f"subject-{i}", {"i": i, "note": "é ünïcode", "nested": {"b": 1, "a": [i]}})


async def test_append_returns_receipts_whose_proofs_verify(db: Database) -> None:
    log = AuditLog(db)
    receipts = [await log.append("vote.result", f"p{i}", {"decision": "approved", "i": i}) for i in range(7)]
    assert [r.seq for r in receipts] == list(range(7))
    assert [r.tree_size for r in receipts] == list(range(1, 8))
    assert receipts[-1].root == await log.root() == (await log.head()).root
    for r in receipts:  # each receipt's root is the log's root at that size, and includes the entry
        assert await log.root(r.tree_size) == r.root
        proof = await log.inclusion_proof(r.seq, r.tree_size)
        assert (proof.root, proof.leaf_hash) == (r.root, r.leaf_hash)
        assert proof.verify()
        assert (await log.inclusion_proof(r.seq)).verify()
    for old in range(8):
        consistency = await log.consistency_proof(old)
        assert consistency.verify()
        assert consistency.old_root == (await log.root(old))
    report = await log.verify(trusted=TreeHead(tree_size=3, root=receipts[2].root))
    assert report.ok, report.problems
    assert (report.tree_size, report.root) == (7, receipts[-1].root)
    assert report.model_dump()["ok"] is True
    last = await log.latest(2)
    assert [(e.seq, e.subject, e.payload["i"]) for e in last] == [(5, "p5", 5), (6, "p6", 6)]


async def test_payload_is_stored_as_canonical_json(db: Database) -> None:
    await AuditLog(db).append("k", "s", {"b": [1, 2], "a": "ü"})
    async with db.engine.connect() as conn:
        assert await conn.scalar(text("SELECT payload FROM audit_entries WHERE seq = 0")) == '{"a":"ü","b":[1,2]}'


async def test_verify_names_a_changed_payload(db: Database) -> None:
    log = AuditLog(db)
    await fill(log, 6)
    await sql(db, "UPDATE audit_entries SET payload = :p WHERE seq = 2", p='{"i":2,"note":"forged"}')
    report = await log.verify()
    assert not report.ok
    assert [(p.seq, p.kind) for p in report.problems] == [(2, "payload_changed")]
    assert "entry 2" in report.problems[0].message


async def test_verify_names_a_removed_entry(db: Database) -> None:
    log = AuditLog(db)
    await fill(log, 6)
    await sql(db, "DELETE FROM audit_entries WHERE seq = 3")
    report = await log.verify()
    assert [(p.seq, p.kind) for p in report.problems] == [(3, "entry_missing")]
    assert "entry 3 removed" in report.problems[0].message


async def test_verify_names_reordered_entries(db: Database) -> None:
    log = AuditLog(db)
    await fill(log, 6)
    query = text("SELECT kind, subject, payload, leaf_hash, created_at FROM audit_entries WHERE seq = :seq")
    async with db.engine.begin() as conn:
        one, four = [(await conn.execute(query, {"seq": s})).one() for s in (1, 4)]
        for seq, row in ((1, four), (4, one)):
            await conn.execute(text("UPDATE audit_entries SET kind = :k, subject = :s, payload = :p, leaf_hash = :l, "
                                    "created_at = :c WHERE seq = :seq"),
                               {"k": row[0], "s": row[1], "p": row[2], "l": row[3], "c": row[4], "seq": seq})
    report = await log.verify()
    assert [(p.seq, p.kind) for p in report.problems] == [(1, "reordered")]
    assert "entry 1" in report.problems[0].message and "reordered" in report.problems[0].message


async def test_verify_checks_a_trusted_head(db: Database) -> None:
    log = AuditLog(db)
    await fill(log, 5)
    head = await log.head()
    assert (await log.verify(trusted=head)).ok
    await sql(db, "DELETE FROM audit_entries WHERE seq = 4")  # truncating the tail leaves a self-consistent log
    assert (await log.verify()).ok
    report = await log.verify(trusted=head)
    assert [(p.seq, p.kind) for p in report.problems] == [(4, "head_mismatch")]
    assert "trusted head has 5" in report.problems[0].message
    rewritten = await log.verify(trusted=TreeHead(tree_size=3, root="00" * 32))
    assert [(p.seq, p.kind) for p in rewritten.problems] == [(2, "head_mismatch")]


async def test_concurrent_appends_give_one_consistent_log(db: Database) -> None:
    log = AuditLog(db)
    receipts = await asyncio.gather(*(log.append("load", f"s{i}", {"i": i}) for i in range(50)))
    assert sorted(r.seq for r in receipts) == list(range(50))
    assert (await log.verify()).ok
    for r in receipts[::7]:
        proof = await log.inclusion_proof(r.seq, r.tree_size)
        assert proof.root == r.root and proof.verify()


async def test_two_writers_and_a_restarted_one_share_the_log(db: Database) -> None:
    first, second = AuditLog(db), AuditLog(db)  # as two worker processes would
    seqs = []
    for i in range(6):
        seqs.append((await (first if i % 2 else second).append("x", str(i), {"i": i})).seq)
    both = await asyncio.gather(*(w.append("y", "z", {"w": n}) for n, w in enumerate([first, second] * 5)))
    restarted = AuditLog(db)  # rebuilds its frontier from the stored leaves
    last = await restarted.append("z", "after restart", {})
    assert seqs == list(range(6)) and sorted(r.seq for r in both) == list(range(6, 16)) and last.seq == 16
    report = await restarted.verify()
    assert report.ok, report.problems
    assert last.root == report.root


RUN = "first-run"
CHOICES = ["for", "against", "abstain"]


async def claimed(db: Database, *pids: str, run: str = RUN) -> VoteStore:
    store = VoteStore(db)
    for pid in pids:
        await store.claim(ClaimProposalInput(proposal_id=pid, first_run_id=run, workflow_id=vote_id(pid),
                                             choices=CHOICES))
    return store


def cast(voter: str, choice: str, weight: int, vote_hash: str, change: bool = False) -> Ballot:
    return Ballot(voter=voter, choice=choice, weight=weight, vote_hash=vote_hash, signature="0xs",
                  payload={"h": vote_hash}, allow_change=change)


async def test_votes_resend_change_and_refusal(db: Database) -> None:
    store = await claimed(db, "p1", "p2")
    [first], count = await store.record_ballots("p1", RUN, [cast(ALICE.upper().replace("0X", "0x"), "for", 10, "0xh1")])
    assert first == RecordVoteResult(weight=10, choice="for")
    assert count is not None and (count.tally, count.votes) == ({"for": 10, "against": 0, "abstain": 0}, 1)
    [again], same = await store.record_ballots("p1", RUN, [cast(ALICE, "for", 10, "0xh1")])  # retried or resent
    assert again == first.model_copy(update={"repeat": True}) and same == count
    [refused], same = await store.record_ballots("p1", RUN, [cast(ALICE, "against", 10, "0xh2")])
    assert refused.error_type == VOTE_ALREADY_CAST and "already voted 'for'" in (refused.error or "")
    assert same is not None and same.tally == count.tally and same.rejected == 1
    [changed], after = await store.record_ballots("p1", RUN, [cast(ALICE, "against", 10, "0xh2", change=True)])
    assert changed == RecordVoteResult(weight=10, choice="against", previous_choice="for", previous_weight=10)
    assert after is not None and (after.tally, after.votes) == ({"for": 0, "against": 10, "abstain": 0}, 1)
    [stale], kept = await store.record_ballots("p1", RUN, [cast(ALICE, "for", 10, "0xh1", change=True)])
    assert stale == first.model_copy(update={"repeat": True}) and kept == after  # an old ballot replayed: nothing
    _, final = await store.record_ballots("p1", RUN, [cast(CAROL, "abstain", 1, "0xh3"), cast(BOB, "for", 2, "0xh4")])
    await store.record_ballots("p2", RUN, [cast(BOB, "for", 2, "0xh5")])
    assert final is not None and final.tally == await store.recount("p1", CHOICES) == {"for": 2, "against": 10,
                                                                                      "abstain": 1}
    assert await store.count("p1") == 3 and await store.count("p2") == 1 and await store.count("none") == 0
    assert await store.vote_hashes("p1") == ["0xh2", "0xh4", "0xh3"]  # ordered by voter
    page = await store.list_votes("p1", limit=2, offset=1)
    assert [(v.voter, v.choice) for v in page] == [(BOB, "for"), (CAROL, "abstain")]
    assert (await store.list_votes("p1", limit=1))[0].voter == ALICE
    assert await store.known_hashes("p1", ["0xh1", "0xh2", "0xh5", "0xnew"]) == {"0xh1", "0xh2"}


async def test_big_weights_round_trip(db: Database) -> None:
    store = await claimed(db, "p")
    big = 10**30 + 7
    await store.record_ballots("p", RUN, [cast(ALICE, "for", big, "0xa")])
    [vote] = await store.list_votes("p")
    assert vote.weight == big and vote.payload == {"h": "0xa"}
    [changed], count = await store.record_ballots("p", RUN, [cast(ALICE, "against", 2**255, "0xb", change=True)])
    assert changed.previous_weight == big and count is not None and count.tally["against"] == 2**255
    assert (await store.list_votes("p"))[0].weight == 2**255 and (await store.tally("p")) == count


async def test_a_proposal_belongs_to_the_execution_that_opened_it(db: Database) -> None:
    store = await claimed(db, "p")
    await store.claim(ClaimProposalInput(proposal_id="p", first_run_id=RUN, workflow_id="vote:p", choices=CHOICES))
    with pytest.raises(WestworldError, match="opened already by the vote vote:p") as other:
        await store.claim(ClaimProposalInput(proposal_id="p", first_run_id="rogue", workflow_id="x:p", choices=CHOICES))
    assert other.value.type == PROPOSAL_ALREADY_OPENED
    with pytest.raises(WestworldError) as rogue:
        await store.record_ballots("p", "rogue", [cast(ALICE, "for", 10**24, "0xr")])
    assert rogue.value.type == PROPOSAL_ALREADY_OPENED and await store.count("p") == 0
    with pytest.raises(WestworldError) as unclaimed:
        await store.record_ballots("never-opened", RUN, [cast(ALICE, "for", 1, "0xq")])
    assert unclaimed.value.type == INJECTED_STATE
    with pytest.raises(WestworldError, match="no stored opening") as early:
        await store.load(LoadOpeningInput(proposal_id="p", first_run_id=RUN))
    assert early.value.type == INJECTED_STATE
    opening = VoteOpening(proposal_id="p", first_run_id=RUN, deadline=datetime(2030, 1, 1, tzinfo=UTC),
                          snapshot=ChainSnapshot(chain_id=1, timepoint=5, total_supply=10**24, token=""),
                          rules=VoteRules(quorum="1/25", approval_threshold="1/2", window=timedelta(hours=72)))
    assert await store.save_opening(opening) == opening
    later = opening.model_copy(update={"snapshot": ChainSnapshot(chain_id=1, timepoint=6, total_supply=100, token="")})
    assert await store.save_opening(later) == opening  # written once
    await store.record_ballots("p", RUN, [cast(ALICE, "for", 7, "0xa")])
    loaded = await store.load(LoadOpeningInput(proposal_id="p", first_run_id=RUN))
    assert loaded.opening == opening and (loaded.count.tally["for"], loaded.count.votes) == (7, 1)
    with pytest.raises(WestworldError):
        await store.load(LoadOpeningInput(proposal_id="p", first_run_id="rogue"))
    # A proposal with ballots but no claim (recorded before claims existed) cannot be opened again either.
    await sql(db, "DELETE FROM vote_proposals WHERE proposal_id = 'p'")
    with pytest.raises(WestworldError, match="already has recorded votes") as reopened:
        await store.claim(ClaimProposalInput(proposal_id="p", first_run_id="new", workflow_id="vote:p",
                                             choices=CHOICES))
    assert reopened.value.type == PROPOSAL_ALREADY_OPENED


async def test_a_vanished_tail_stops_further_appends(db: Database) -> None:
    log = AuditLog(db)
    await fill(log, 3)
    await sql(db, "DELETE FROM audit_entries WHERE seq = 2")
    with pytest.raises(AuditTampered, match="entry 2, appended earlier, is gone"):
        await log.append("k", "s", {})
    await sql(db, "DELETE FROM audit_entries WHERE seq = 0")
    with pytest.raises(AuditTampered, match="has no entry 0"):
        await AuditLog(db).append("k", "s", {})


async def test_concurrent_batches_are_all_counted_once(db: Database) -> None:
    store = await claimed(db, "p")
    voters = [f"0x{i:040x}" for i in range(30)]
    batches = [[cast(v, "for", i, f"0x{i}")] for i, v in enumerate(voters)]
    await asyncio.gather(*(store.record_ballots("p", RUN, b) for b in batches + batches))  # each twice, racing
    count = await store.tally("p")
    assert await store.count("p") == 30 and count is not None and count.votes == 30
    assert count.tally == await store.recount("p", CHOICES) == {"for": sum(range(30)), "against": 0, "abstain": 0}


async def unwritable(kind: str, tmp_path: Path) -> tuple[str, str]:
    """A URL whose database cannot be written, and what the error must name."""
    if kind == "sqlite":
        path = tmp_path / "audit.db"
        writable = Database(f"sqlite+aiosqlite:///{path}")
        await writable.migrate()
        await AuditLog(writable).append("k", "s", {})
        await writable.close()
        return f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true", "readonly database"
    port = free_port()  # nothing listens there
    return f"postgresql+asyncpg://postgres:hunter2@127.0.0.1:{port}/westworld", f"127.0.0.1:{port}"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_an_unwritable_database_refuses_the_append(kind: str, tmp_path: Path) -> None:
    url, named = await unwritable(kind, tmp_path)
    database = Database(url)
    log = AuditLog(database)
    try:
        with pytest.raises(AuditUnavailable) as err:
            await log.append("vote.result", "p1", {"decision": "approved"})
        message = err.value.message
        assert named in message and "cannot be written" in message and "refused" in message
        assert "hunter2" not in message
        with pytest.raises(ApplicationError) as app_err:  # what a workflow sees: typed, and left retryable
            await InterceptedEnvironment().run(AuditActivities(log).append_audit,
                                               AuditEntryInput(kind="vote.result", subject="p1", payload={}))
        assert app_err.value.type == AUDIT_UNAVAILABLE and not app_err.value.non_retryable
    finally:
        await database.close()


async def test_activity_appends_and_verifies(db: Database) -> None:
    acts = AuditActivities(AuditLog(db))
    env = ActivityEnvironment()
    receipt = await env.run(acts.append_audit, AuditEntryInput(kind="halt", subject="mesh", payload={"why": "test"}))
    head = await env.run(acts.verify_audit_log)
    assert (head.ok, head.tree_size, head.root) == (True, 1, receipt.root)
    assert receipt.root == receipt.leaf_hash  # a one-leaf tree: the root is the leaf hash
