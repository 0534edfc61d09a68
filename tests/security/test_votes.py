"""Hostile tests: a DAO vote counts each voter once, takes no state from its caller, and runs under the DAO's policy.

One class per rule (docs/security.md):

- a ballot sent again (once or many times, in the same run or after a continue-as-new) answers with its first
  receipt and adds nothing; a changed vote replaces the voter's ballot; the tally always equals a recount of the
  stored ballots (a property over random sends, resends, changes and continue-as-new points, plus real runs);
- a start input carries no internal state (``carry`` is refused, ``INJECTED_STATE``), a continued run reads its
  state from the store, and a new start cannot reopen a proposal another execution opened;
- quorum, approval and window come from the policy: a requester may ask stricter, never looser
  (``LOOSER_THAN_POLICY`` naming the floor), shares are exact, and a window must be positive.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError

from activities.policy import DEFAULT_POLICY_FILE, read_policy_file
from activities.sql.database import Database
from activities.sql.vote_store import Ballot, VoteStore
from tests.workflows.conftest import TOKEN, Harness, eventually
from tests.workflows.test_dao_vote import VoteHandle, proposal, refused, sign, start, vote
from westworld.chain import ChainSnapshot
from westworld.errors import (
    INJECTED_STATE,
    LOOSER_THAN_POLICY,
    PROPOSAL_ALREADY_OPENED,
    VOTE_ALREADY_CAST,
    InvalidInput,
    WestworldError,
)
from westworld.experiment import VoteSpec
from westworld.keys import vote_id
from westworld.shelter_access import VoteTerms
from westworld.tally import TallyRules
from westworld.vote import (
    ClaimProposalInput,
    DaoVoteInput,
    DaoVoteResult,
    RecordVoteResult,
    VoteCarry,
    VoteKind,
    VoteState,
    rules_in_force,
)
from workers.cli.inputs import load_model
from workers.cli.vote import propose
from workflows.dao_vote import DaoVoteWorkflow

POLICY = read_policy_file(DEFAULT_POLICY_FILE).votes
CHOICES = ["for", "against", "abstain"]


async def failed_start(h: Harness, inp: DaoVoteInput, workflow_id: str | None = None) -> ApplicationError:
    """Start a vote that must fail, and return the typed error it failed with."""
    handle = await h.client.start_workflow(
        DaoVoteWorkflow.run, inp, id=workflow_id or vote_id(inp.proposal.id), task_queue=h.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.non_retryable, cause
    return cause


async def store_agrees(h: Harness, handle: VoteHandle, pid: str) -> dict[str, int]:
    """The workflow's tally is the store's, and the store's is a recount of the stored ballots."""
    status = await handle.query(DaoVoteWorkflow.status)
    stored = await h.resources.votes.tally(pid)
    assert stored is not None and stored.tally == status.tally == await h.resources.votes.recount(pid, CHOICES)
    assert stored.votes == status.votes == await h.resources.votes.count(pid)
    return status.tally


class TestResentBallotCountsOnce:
    async def test_one_ballot_sent_eleven_times_counts_once(self, harness: Harness) -> None:
        """The reported attack: vote changes allowed, one signed ballot sent 11 times (5 of them at once)."""
        inp = DaoVoteInput(proposal=proposal(allow_vote_change=True))
        handle = await start(harness, inp)
        whale = harness.voters[30]  # half the supply: counted twice it would approve and close the vote
        ballot = await sign(handle, whale, "for")
        first = await handle.execute_update(DaoVoteWorkflow.cast_vote, ballot)
        again = [await handle.execute_update(DaoVoteWorkflow.cast_vote, ballot) for _ in range(5)]
        again += await asyncio.gather(*(handle.execute_update(DaoVoteWorkflow.cast_vote, ballot) for _ in range(5)))
        assert first.weight == 500_000 * TOKEN and all(r == first for r in again)
        tally = await store_agrees(harness, handle, inp.proposal.id)
        assert tally == {"for": 500_000 * TOKEN, "against": 0, "abstain": 0}
        status = await handle.query(DaoVoteWorkflow.status)
        assert (status.state, status.votes, status.decided) == (VoteState.OPEN, 1, None)  # not closed early
        await handle.terminate("test done")

    async def test_resends_and_changes_across_continue_as_new(self, harness: Harness) -> None:
        """A resend after the run continued as new (the run's own voter set is empty again) still counts once;
        a change replaces; an old ballot replayed after a change changes nothing."""
        inp = DaoVoteInput(proposal=proposal(allow_vote_change=True), continue_after_votes=10, early_close=False)
        pid = inp.proposal.id
        handle = await start(harness, inp)
        first_run = (await handle.describe()).run_id
        whale = harness.voters[30]
        for_ballot = await sign(handle, whale, "for")
        first = await handle.execute_update(DaoVoteWorkflow.cast_vote, for_ballot)
        for voter in harness.voters[:10]:
            await vote(handle, voter, "against")
        assert (await handle.describe()).run_id != first_run
        assert await handle.execute_update(DaoVoteWorkflow.cast_vote, await sign(handle, whale, "for")) == first
        small = sum((i + 1) * 10 * TOKEN for i in range(10))
        assert (await store_agrees(harness, handle, pid))["for"] == 500_000 * TOKEN
        changed = await vote(handle, whale, "abstain")
        assert changed.replaced_choice == "for" and changed.weight == 500_000 * TOKEN
        assert await handle.execute_update(DaoVoteWorkflow.cast_vote, for_ballot) == first  # replayed: nothing
        assert await store_agrees(harness, handle, pid) == {"for": 0, "against": small, "abstain": 500_000 * TOKEN}
        assert (await handle.query(DaoVoteWorkflow.status)).votes == 11
        await harness.skipper.fast_forward(handle, timedelta(hours=73))
        result = await handle.result()
        assert result.tally == {"for": 0, "against": small, "abstain": 500_000 * TOKEN} and result.votes == 11

    async def test_a_resend_after_continue_as_new_without_changes(self, harness: Harness) -> None:
        """Default settings: the resend gets its first receipt, a different ballot is refused as a repeat."""
        inp = DaoVoteInput(proposal=proposal(), continue_after_votes=10, early_close=False)
        handle = await start(harness, inp)
        first = await vote(handle, harness.voters[29], "for")
        for voter in harness.voters[:10]:
            await vote(handle, voter, "for")
        assert (await vote(handle, harness.voters[29], "for")) == first
        assert (await refused(handle, await sign(handle, harness.voters[29], "against"))).type == VOTE_ALREADY_CAST
        tally = await store_agrees(harness, handle, inp.proposal.id)
        assert tally["for"] == sum((i + 1) * 10 * TOKEN for i in [*range(10), 29])
        await handle.terminate("test done")

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(allow_change=st.booleans(), runs=st.lists(  # runs (continue-as-new points) of batches of sends
        st.lists(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(CHOICES), st.integers(0, 1)),
                          min_size=1, max_size=6), min_size=1, max_size=3), min_size=1, max_size=4))
    async def test_the_tally_is_always_a_recount(
        self, tmp_path: Path, allow_change: bool, runs: list[list[list[tuple[int, str, int]]]]
    ) -> None:
        """Random sends, resends (the same voter, choice and variant is the same signed ballot), changes and
        continue-as-new points (a new store object, as a new run on another worker): every answer is the
        model's, a resend returns its first receipt, and the tally equals a recount after every batch."""
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'votes.db'}")
        await db.migrate()
        pid, run_id = f"p-{uuid.uuid4().hex[:8]}", "first-run"
        voters = [f"0x{i + 1:040x}" for i in range(4)]
        weight = [(i + 1) * 10**24 + i for i in range(4)]
        receipts: dict[str, RecordVoteResult] = {}
        current: dict[int, tuple[str, int]] = {}
        try:
            await VoteStore(db).claim(ClaimProposalInput(proposal_id=pid, first_run_id=run_id, workflow_id="vote:p",
                                                         choices=CHOICES))
            for batches in runs:
                store = VoteStore(db)  # what a continued run has: the database, nothing carried
                for batch in batches:
                    sent = [Ballot(voter=voters[v], choice=c, weight=weight[v], vote_hash=f"0x{v}{c}{n}",
                                   signature="0xs", payload={}, allow_change=allow_change) for v, c, n in batch]
                    outcomes, count = await store.record_ballots(pid, run_id, sent)
                    for (v, c, n), got in zip(batch, outcomes, strict=True):
                        h = f"0x{v}{c}{n}"
                        if h in receipts:
                            assert got == receipts[h].model_copy(update={"repeat": True})
                        elif v in current and not allow_change:
                            assert got.error_type == VOTE_ALREADY_CAST
                        else:
                            previous = current.get(v)
                            assert (got.choice, got.weight, got.previous_choice) == (
                                c, weight[v], previous[0] if previous else None)
                            receipts[h], current[v] = got, (c, weight[v])
                    model = {c: sum(w for ch, w in current.values() if ch == c) for c in CHOICES}
                    assert count is not None and count.tally == model == await store.recount(pid, CHOICES)
                    assert count.votes == len(current)
                    assert sum(count.tally.values()) <= sum(weight)  # each voter's weight at most once
        finally:
            await db.close()


class TestNoInjectedState:
    async def test_a_start_carrying_state_is_refused(self, harness: Harness) -> None:
        """The reported attack: carry {snapshot: {total_supply: 100}, tally: {for: 100}} approved with 100%."""
        inp = DaoVoteInput.model_validate({
            "proposal": {"id": f"p-{uuid.uuid4().hex[:10]}", "title": "Hand the treasury over"},
            "carry": VoteCarry(snapshot=ChainSnapshot(chain_id=31337, timepoint=1, total_supply=100, token=""),
                               deadline=datetime(2030, 1, 1, tzinfo=UTC), tally={"for": 100, "against": 0,
                                                                                 "abstain": 0},
                               votes=1, rejected=0, run=0).model_dump(mode="json"),
        })
        err = await failed_start(harness, inp)
        assert err.type == INJECTED_STATE and "carry" in err.message and inp.proposal.id in err.message
        assert await harness.resources.votes.tally(inp.proposal.id) is None  # nothing claimed, nothing opened

    async def test_a_continued_run_carries_nothing_in_its_input(self, harness: Harness) -> None:
        inp = DaoVoteInput(proposal=proposal(), continue_after_votes=10, early_close=False)
        handle = await start(harness, inp)
        for voter in harness.voters[:10]:
            await vote(handle, voter, "for")
        history = await harness.client.get_workflow_handle(handle.id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        assert started.continued_execution_run_id  # set by the server: this run is a continuation
        [continued] = await harness.client.data_converter.decode(started.input.payloads, [DaoVoteInput])
        assert isinstance(continued, DaoVoteInput) and continued.carry is None
        status = await eventually(lambda: handle.query(DaoVoteWorkflow.status), lambda s: s.state is VoteState.OPEN)
        assert status.votes == 10 and status.deadline is not None  # read back from the store
        await handle.terminate("test done")

    async def test_a_new_start_cannot_reopen_an_opened_proposal(self, harness: Harness) -> None:
        inp = DaoVoteInput(proposal=proposal(), early_close=False)
        handle = await start(harness, inp)
        await vote(handle, harness.voters[5], "for")
        rogue = inp.model_copy(update={"quorum": 0.5, "voting_window": timedelta(days=30)})
        err = await failed_start(harness, rogue, workflow_id=f"rogue:{inp.proposal.id}")
        assert err.type == PROPOSAL_ALREADY_OPENED and vote_id(inp.proposal.id) in err.message
        assert (await handle.query(DaoVoteWorkflow.status)).votes == 1
        await handle.terminate("ended")
        err = await failed_start(harness, rogue)  # the same workflow id again, once the first is closed
        assert err.type == PROPOSAL_ALREADY_OPENED
        stored = await harness.resources.votes.tally(inp.proposal.id)
        assert stored is not None and stored.votes == 1 and stored.tally["for"] == 60 * TOKEN


class TestVotePolicyFloors:
    async def test_looser_terms_fail_the_start_naming_the_floor(self, harness: Harness) -> None:
        asks = {
            "votes.quorum_min": {"quorum": 0.0000001},
            "votes.approval_threshold_min": {"approval_threshold": 0.4},
            "votes.window_min": {"voting_window": timedelta(seconds=30)},
            "votes.window_max": {"voting_window": timedelta(days=31)},
        }
        errors = await asyncio.gather(*(failed_start(harness, DaoVoteInput(proposal=proposal(), **ask))  # type: ignore[arg-type]
                                        for ask in asks.values()))
        for rule, err in zip(asks, errors, strict=True):
            assert err.type == LOOSER_THAN_POLICY and rule in err.message, err.message
        assert "0.04" in errors[0].message and "1e-07" in errors[0].message

    async def test_the_cli_reports_the_floor(self, harness: Harness, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
        """`westworld vote propose` with a tiny quorum: the start is refused and the CLI says which floor."""
        settings = harness.settings.model_copy(update={"task_queue": harness.task_queue})
        spec = tmp_path / "proposal.yaml"
        pid = f"p-{uuid.uuid4().hex[:10]}"
        spec.write_text(f"proposal:\n  id: {pid}\n  title: Tiny quorum\nquorum: 0.0000001\n")
        with pytest.raises(typer.Exit):
            await propose(settings, spec, print)
        assert "LooserThanPolicy" in capsys.readouterr().err
        spec.write_text(f"proposal:\n  id: {pid}-c\n  title: Carried\ncarry: {{snapshot: {{chain_id: 1, timepoint: 1, "
                        f"total_supply: 100, token: ''}}, deadline: 2030-01-01T00:00:00Z, tally: {{for: 100}}, "
                        f"votes: 1, rejected: 0, run: 0}}\n")
        with pytest.raises(typer.Exit):
            await propose(settings, spec, print)
        assert "InjectedState" in capsys.readouterr().err

    async def test_stricter_terms_are_kept_exactly(self, harness: Harness) -> None:
        inp = DaoVoteInput(proposal=proposal(), quorum=0.0400001, approval_threshold=0.6, kind=VoteKind.EMERGENCY)
        handle = await start(harness, inp)
        status = await handle.query(DaoVoteWorkflow.status)
        assert status.quorum_weight == -(-status.total_supply * 400_001 // 10_000_000)  # exact ceiling
        assert status.deadline is not None
        await vote(handle, harness.voters[30], "for")
        await harness.skipper.fast_forward(handle, timedelta(hours=2, minutes=1))
        result: DaoVoteResult = await handle.result()
        assert result.rules is not None and (result.rules.quorum, result.rules.approval_threshold) == (
            str(Fraction(400_001, 10_000_000)), "3/5")
        assert result.decision == "approved"

    def test_a_window_must_be_positive(self, tmp_path: Path) -> None:
        """A window of 0 once silently became 72 h; a negative one passed."""
        for bad in (timedelta(0), timedelta(seconds=-5)):
            with pytest.raises(ValidationError) as err:
                DaoVoteInput(proposal=proposal(), voting_window=bad)
            assert [e["loc"] for e in err.value.errors()] == [("voting_window",)]
        spec = tmp_path / "proposal.yaml"
        spec.write_text("proposal:\n  id: p-window\n  title: Zero window\nvoting_window: 0\n")
        with pytest.raises(InvalidInput, match="voting_window"):
            load_model(spec, DaoVoteInput)

    def test_the_child_votes_default_terms_pass_the_shipped_policy(self) -> None:
        """Shelter access and experiments start child votes with their own defaults: they meet the floors."""
        terms, spec = VoteTerms(), VoteSpec()
        for kind in VoteKind:
            inp = DaoVoteInput.model_validate({"proposal": proposal(), "kind": kind,
                                               **terms.model_dump(exclude={"backend"})})
            assert (rules_in_force(inp, POLICY).quorum, rules_in_force(inp, POLICY).approval_threshold) == (
                "1/25", "1/2")
        inp = DaoVoteInput(proposal=proposal(), quorum=spec.quorum, approval_threshold=spec.approval_threshold,
                           voting_window=spec.window)
        assert rules_in_force(inp, POLICY).window == timedelta(hours=72)

    def test_a_tiny_quorum_request_is_refused_not_rounded(self) -> None:
        """Parts-per-million rounding made ``--quorum 0.0000001`` a quorum of zero weight."""
        with pytest.raises(WestworldError) as err:
            rules_in_force(DaoVoteInput(proposal=proposal(), quorum=0.0000001), POLICY)
        assert err.value.type == LOOSER_THAN_POLICY
        rules = TallyRules(choices=tuple(CHOICES), total_supply=10**6, quorum=0.0000001, approval_threshold=0.5)
        assert rules.quorum_weight == 1
