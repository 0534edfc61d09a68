"""DaoVoteWorkflow: a proposal, signed token-weighted votes until the deadline or an early close, the result
audited, and, on the governor backend, the decision queued and executed through the timelock.

Votes arrive through the ``cast_vote`` update: its validator refuses (without touching history) a vote for
another proposal, after the deadline or close, with a bad signature or choice, or another ballot from a voter
who voted in this run; the handler weighs the vote at the snapshot and stores it (a local activity against
the chain and the project database, which also refuses voters without power and changes the proposal does not
allow). The store counts: it keeps each voter's one ballot and the proposal's tally in the same transaction
and returns the tally, which is all the workflow shows and decides on. A ballot sent again answers with its
first receipt and adds nothing, in this run or any later one.

Trust (docs/security.md): quorum, approval and window come from the DAO's policy (``load_policy``); the input
may ask stricter, never looser (``LOOSER_THAN_POLICY``). The first run claims the proposal id in the store and
saves what it opened with (snapshot, deadline, rules); a continued run (``workflow.info().continued_run_id``,
set by the server) reads that back. No input carries state: a start with ``carry`` fails ``INJECTED_STATE``,
and a new start for a proposal another execution opened fails ``PROPOSAL_ALREADY_OPENED``. Runs recorded
before this (no ``vote-store-tally`` patch marker) replay as they ran.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld import ballot, tally
    from westworld.chain import (
        ChainSnapshot,
        ExecuteResult,
        GovernorProposal,
        GovernorProposeInput,
        GovernorStateResult,
        QueueResult,
    )
    from westworld.errors import (
        INJECTED_STATE,
        INVALID_INPUT,
        VOTE_AFTER_DEADLINE,
        VOTE_ALREADY_CAST,
        VOTE_CLOSED,
        VOTE_UNAVAILABLE,
        VOTE_UNKNOWN_PROPOSAL,
        VoteRejected,
        WestworldError,
    )
    from westworld.policy import NetworkPolicy, as_fraction
    from westworld.snapshot import SnapshotProposalInput, SnapshotProposalRef, SnapshotScores
    from westworld.vote import (
        GOVERNOR_CHOICES,
        ClaimProposalInput,
        DaoVoteInput,
        DaoVoteResult,
        DaoVoteStatus,
        LoadedVote,
        LoadOpeningInput,
        RecordVoteInput,
        RecordVoteResult,
        RecordVotesInput,
        RecordVotesResult,
        VoteBackend,
        VoteCarry,
        VoteCount,
        VoteKind,
        VoteOpening,
        VoteReceipt,
        VoteRequest,
        VoteRules,
        VoteState,
        rules_in_force,
    )
    from workflows.audit import append_audit
    from workflows.steps import PROPOSAL_ID, VOTE_STATE, set_step

CHAIN_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
RECORD_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=5)
STORE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_interval=timedelta(seconds=30))
MAX_BATCH = 200
STORE_TALLY = "vote-store-tally"  # the patch: policy floors, tally and opening kept by the store, no carry
INTAKE = "vote-intake"  # the patch: ballots also arrive through the HTTP intake; the tally is read from the store
# the patch: a governor vote closes a margin before the Governor's own voting end, measured on the chain's clock (the
# propose call and a slow worker take time the chain counts): ballots relayed at close still land in its period
CHAIN_END = "vote-before-chain-end"
# The safety net for a hint lost with a crashed intake: after ballots arrived, the store is read again after 2 s,
# then at doubling intervals while nothing changes, up to 10 min (no timer at all while no ballot arrives).
POLL_MIN, POLL_MAX = timedelta(seconds=2), timedelta(minutes=10)
ON_CHAIN_FINAL = {"Succeeded", "Defeated", "Queued", "Executed", "Canceled", "Expired"}


@workflow.defn
class DaoVoteWorkflow:
    """One proposal's vote. Workflow id: ``vote:<proposal id>``."""

    @workflow.init
    def __init__(self, input: DaoVoteInput) -> None:
        self._input = input
        self._state = VoteState.OPENING
        self._step = "opening"
        self._tally = tally.empty_tally(input.proposal.choices)
        self._votes = 0
        self._rejected = 0
        self._run_votes = 0
        self._run_ballots: dict[str, str] = {}  # voter -> hash of the ballot this run accepted from them
        self._snapshot: ChainSnapshot | None = None
        self._governor: GovernorProposal | None = None
        self._snapshot_proposal: str | None = None
        self._deadline: datetime | None = None
        self._ctx: ballot.BallotContext | None = None
        self._settled: tally.Decision | None = None
        self._run = 0
        self._rules_in_force: VoteRules | None = None
        self._queue: list[tuple[RecordVoteInput, asyncio.Future[RecordVoteResult]]] = []
        self._store_tally = workflow.patched(STORE_TALLY)
        self._resuming = self._store_tally and workflow.info().continued_run_id is not None
        self._intake_patch = self._store_tally and workflow.patched(INTAKE)
        self._intake = False  # this vote takes intake ballots: set from its opening
        self._hint = False  # the intake recorded ballots since the last read of the store's count
        self._poll: timedelta | None = None
        if input.carry and not self._store_tally:  # a run recorded before the patch, replaying
            c = input.carry
            self._snapshot, self._governor, self._deadline = c.snapshot, c.governor, c.deadline
            self._snapshot_proposal = c.snapshot_proposal
            self._tally, self._votes, self._rejected, self._run = dict(c.tally), c.votes, c.rejected, c.run + 1
            # A continued run is open from its first instant: voters racing the continue-as-new are accepted.
            self._ctx = self._make_ctx()
            self._state, self._step = VoteState.OPEN, "collecting votes"

    @workflow.run
    async def run(self, input: DaoVoteInput) -> DaoVoteResult:
        if self._store_tally:
            await self._open_or_resume(input)
        elif self._snapshot is None:
            self._step_to("opening", VoteState.OPENING)
            await self._open(input.window)
            self._ctx = self._make_ctx()
        self._settled = tally.settled(self._tally, self._rules())
        self._batcher = asyncio.create_task(self._record_batches())
        self._step_to("collecting votes", VoteState.OPEN)
        closed_early = await self._collect(input)
        self._state = VoteState.CLOSED
        await workflow.wait_condition(workflow.all_handlers_finished)
        return await self._close(input, closed_early)

    async def _open_or_resume(self, input: DaoVoteInput) -> None:
        """First run: the rules in force from the policy, the proposal claimed, opened and the opening saved.
        Continued run: the opening and tally of this execution chain read back from the store."""
        info = workflow.info()
        if input.carry is not None:
            raise _reject(f"proposal {input.proposal.id}: the input carries internal state (carry: snapshot, total "
                          f"supply, tally, deadline) that only the vote itself keeps; start it without 'carry'",
                          INJECTED_STATE)
        try:
            if self._resuming:
                loaded = await workflow.execute_activity(
                    "vote_load_opening", LoadOpeningInput(proposal_id=input.proposal.id,
                                                          first_run_id=info.first_execution_run_id),
                    result_type=LoadedVote, start_to_close_timeout=timedelta(seconds=30), retry_policy=STORE_RETRY)
                self._adopt(loaded.opening, loaded.count)
                return
            self._step_to("opening", VoteState.OPENING)
            policy = await workflow.execute_activity(
                "load_policy", result_type=NetworkPolicy, start_to_close_timeout=timedelta(seconds=30),
                retry_policy=CHAIN_RETRY)
            try:
                rules = rules_in_force(input, policy.votes)
            except WestworldError as err:
                raise _reject(err.message, err.type) from err
            await workflow.execute_activity(
                "vote_claim_proposal", ClaimProposalInput(
                    proposal_id=input.proposal.id, first_run_id=info.first_execution_run_id,
                    workflow_id=info.workflow_id, choices=input.proposal.choices),
                start_to_close_timeout=timedelta(seconds=30), retry_policy=STORE_RETRY)
        except ActivityError as err:  # the activity's typed refusal is the vote's
            raise _refusal_of(err) from err
        await self._open(rules.window)
        assert self._snapshot is not None and self._deadline is not None
        opening = await workflow.execute_activity(
            "vote_save_opening", VoteOpening(
                proposal_id=input.proposal.id, first_run_id=info.first_execution_run_id, snapshot=self._snapshot,
                governor=self._governor, snapshot_proposal=self._snapshot_proposal, deadline=self._deadline,
                rules=rules, **self._intake_fields(input)),
            result_type=VoteOpening, start_to_close_timeout=timedelta(seconds=30), retry_policy=STORE_RETRY)
        self._adopt(opening, VoteCount(tally=tally.empty_tally(input.proposal.choices), votes=0))

    def _intake_fields(self, input: DaoVoteInput) -> dict[str, object]:
        if not self._intake_patch:
            return {}
        return {"intake": True, "backend": input.backend, "choices": input.proposal.choices,
                "snapshot_space": input.snapshot_space, "allow_vote_change": input.proposal.allow_vote_change}

    def _adopt(self, opening: VoteOpening, count: VoteCount) -> None:
        self._intake = self._intake_patch and opening.intake
        self._snapshot, self._governor, self._deadline = opening.snapshot, opening.governor, opening.deadline
        self._snapshot_proposal, self._rules_in_force = opening.snapshot_proposal, opening.rules
        self._tally, self._votes, self._rejected = dict(count.tally), count.votes, count.rejected
        self._ctx = self._make_ctx()

    async def _open(self, window: timedelta) -> None:
        inp = self._input
        if inp.backend is VoteBackend.GOVERNOR:
            self._governor = await workflow.execute_activity(
                "governor_propose",
                GovernorProposeInput(
                    proposal_key=inp.proposal.id,
                    description=f"# {inp.proposal.title}\n\n{inp.proposal.body}\n\n[{inp.proposal.id}]",
                    calls=inp.proposal.calls,
                    emergency=inp.kind is VoteKind.EMERGENCY,
                ),
                result_type=GovernorProposal,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=CHAIN_RETRY,
            )
            g = self._governor
            self._snapshot = ChainSnapshot(
                chain_id=g.chain_id, timepoint=g.snapshot, total_supply=g.total_supply, token=""
            )
        else:
            self._snapshot = await workflow.execute_activity(
                "chain_snapshot",
                result_type=ChainSnapshot,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=CHAIN_RETRY,
            )
        if inp.backend is VoteBackend.GOVERNOR and workflow.patched(CHAIN_END):
            assert self._governor is not None
            chain_now: int = await workflow.execute_activity(
                "chain_time", result_type=int, start_to_close_timeout=timedelta(seconds=30), retry_policy=CHAIN_RETRY)
            left = timedelta(seconds=self._governor.deadline - chain_now)
            window = min(window, left - min(left / 50, timedelta(minutes=5)))
        self._deadline = workflow.now() + window
        if inp.backend is VoteBackend.SNAPSHOT:
            ref = await workflow.execute_activity(
                "snapshot_create_proposal",
                SnapshotProposalInput(
                    space=inp.snapshot_space, title=inp.proposal.title,
                    body=inp.proposal.body + (f"\n\nEvidence: {inp.proposal.evidence_url}"
                                              if inp.proposal.evidence_url else ""),
                    choices=inp.proposal.choices, start=int(workflow.now().timestamp()),
                    end=int(self._deadline.timestamp()), snapshot_block=self._snapshot.block,
                    timestamp=int(workflow.now().timestamp()),
                ),
                result_type=SnapshotProposalRef,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=CHAIN_RETRY,
            )
            self._snapshot_proposal = ref.id
        if self._snapshot.total_supply == 0:
            raise ApplicationError(
                f"proposal {inp.proposal.id}: no voting power exists at the snapshot", type=INVALID_INPUT,
                non_retryable=True,
            )

    async def _collect(self, input: DaoVoteInput) -> bool:
        """Wait for the deadline, an early close, or the point to continue as new. True if closed early."""
        assert self._deadline is not None
        while True:
            remaining = self._deadline - workflow.now()
            if remaining <= timedelta(0):
                return False
            try:
                await workflow.wait_condition(
                    lambda: (input.early_close and self._settled is not None)
                    or self._run_votes >= input.continue_after_votes
                    or workflow.info().is_continue_as_new_suggested()
                    or self._hint,
                    timeout=min(remaining, self._poll) if self._poll is not None else remaining,
                )
            except TimeoutError:
                if self._poll is None or workflow.now() >= self._deadline:
                    return False
                self._hint = True  # the safety net: a hint lost with a crashed intake
            if self._hint:
                await self._read_count(input)
                if not ((input.early_close and self._settled is not None) or self._run_votes
                        >= input.continue_after_votes or workflow.info().is_continue_as_new_suggested()):
                    continue
            if input.early_close and self._settled is not None:
                return True
            await workflow.wait_condition(workflow.all_handlers_finished)
            if input.early_close and self._settled is not None:
                return True
            if self._store_tally:
                workflow.continue_as_new(input)  # the next run reads its state from the store
            workflow.continue_as_new(input.model_copy(update={"carry": self._carry()}))

    async def _close(self, input: DaoVoteInput, closed_early: bool) -> DaoVoteResult:
        self._step_to("closing", VoteState.CLOSED)
        if self._intake:  # closed in the store first: the final count is then every ballot it will ever hold
            count = await workflow.execute_activity(
                "vote_close", LoadOpeningInput(proposal_id=input.proposal.id,
                                               first_run_id=workflow.info().first_execution_run_id),
                result_type=VoteCount, start_to_close_timeout=timedelta(seconds=30), retry_policy=STORE_RETRY)
            self._tally, self._votes, self._rejected = count.tally, count.votes, count.rejected
        elif self._store_tally:  # the final count is the store's (a batch may have failed after its commit)
            final = await workflow.execute_activity(
                "vote_load_opening", LoadOpeningInput(proposal_id=input.proposal.id,
                                                      first_run_id=workflow.info().first_execution_run_id),
                result_type=LoadedVote, start_to_close_timeout=timedelta(seconds=30), retry_policy=STORE_RETRY)
            self._tally, self._votes, self._rejected = final.count.tally, final.count.votes, final.count.rejected
        rules = self._rules()
        decision = tally.decide(self._tally, rules)
        votes_root: str = await workflow.execute_activity(
            "vote_set_root", input.proposal.id, result_type=str,
            start_to_close_timeout=timedelta(minutes=2), retry_policy=CHAIN_RETRY,
        )
        cast = tally.cast_weight(self._tally)
        result = DaoVoteResult(
            proposal_id=input.proposal.id,
            decision=decision.value,
            tally=dict(self._tally),
            votes=self._votes,
            turnout=cast / rules.total_supply,
            quorum_met=cast >= rules.quorum_weight,
            approve_share=tally.approve_share(self._tally, rules),
            closed_early=closed_early,
            votes_root=votes_root,
            audit_seq=-1,
            rules=self._rules_in_force,
        )
        if self._governor is not None:
            result = await self._settle_on_chain(result)
        if self._snapshot_proposal is not None:
            scores = await workflow.execute_activity(
                "snapshot_scores", self._snapshot_proposal, result_type=SnapshotScores,
                start_to_close_timeout=timedelta(seconds=30), retry_policy=CHAIN_RETRY,
            )
            result = result.model_copy(update={"snapshot_proposal": self._snapshot_proposal,
                                               "snapshot_scores": scores.scores})
        self._step_to("recording result", self._state)
        receipt = await append_audit("vote.result", input.proposal.id, result.model_dump(mode="json"))
        self._step_to("done", VoteState.DONE)
        return result.model_copy(update={"audit_seq": receipt.seq})

    async def _settle_on_chain(self, result: DaoVoteResult) -> DaoVoteResult:
        """Wait for the Governor's verdict (the chain is authoritative), then queue and execute if it passed."""
        g = self._governor
        assert g is not None
        self._step_to("awaiting on-chain deadline", VoteState.CLOSED)
        while True:
            state = await workflow.execute_activity(
                "governor_finalize", g, result_type=GovernorStateResult,
                start_to_close_timeout=timedelta(minutes=1), retry_policy=CHAIN_RETRY,
            )
            if state.state in ON_CHAIN_FINAL:
                break
            await workflow.sleep(timedelta(minutes=10))
        result = result.model_copy(update={"onchain_state": state.state})
        if state.state != "Succeeded" or not self._input.proposal.calls:
            return result
        self._step_to("queued in timelock", VoteState.EXECUTING)
        queued = await workflow.execute_activity(
            "governor_queue", g, result_type=QueueResult,
            start_to_close_timeout=timedelta(minutes=2), retry_policy=CHAIN_RETRY,
        )
        chain_now: int = await workflow.execute_activity(
            "chain_time", result_type=int, start_to_close_timeout=timedelta(seconds=30), retry_policy=CHAIN_RETRY
        )
        if queued.eta > chain_now:
            await workflow.sleep(timedelta(seconds=queued.eta - chain_now + 1))
        self._step_to("executing", VoteState.EXECUTING)
        executed = await workflow.execute_activity(
            "governor_execute", g, result_type=ExecuteResult,
            start_to_close_timeout=timedelta(minutes=2), retry_policy=CHAIN_RETRY,
        )
        return result.model_copy(update={"executed_tx": executed.tx_hash, "onchain_state": "Executed"})

    async def _record_batches(self) -> None:
        """Weigh and store queued votes in batches: one local activity serves every vote that arrived meanwhile,
        so many concurrent voters cost a few workflow tasks rather than a few each."""
        while True:
            await workflow.wait_condition(lambda: bool(self._queue))
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            owner = ({"proposal_id": self._input.proposal.id, "first_run_id": workflow.info().first_execution_run_id}
                     if self._store_tally else {})
            try:
                result = await workflow.execute_local_activity(
                    "record_votes",
                    RecordVotesInput(votes=[inp for inp, _ in batch], **owner),
                    result_type=RecordVotesResult,
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=RECORD_RETRY,
                )
                outcomes = result.outcomes
                if self._store_tally and result.count is not None:  # the tally is the store's, never summed here
                    self._tally, self._votes = dict(result.count.tally), result.count.votes
                    self._rejected = result.count.rejected
                    self._settled = tally.settled(self._tally, self._rules())
            except ActivityError as err:  # the store or the chain stayed unreachable through the retries
                failure = RecordVoteResult(weight=0, error_type=VOTE_UNAVAILABLE,
                                           error=f"the vote could not be recorded, try again: {err.cause or err}")
                outcomes = [failure] * len(batch)
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                done.set_result(outcome)

    async def _read_count(self, input: DaoVoteInput) -> None:
        """The store's tally (the truth; the hint only says when to look), and the early-close check on it."""
        self._hint = False
        count = await workflow.execute_local_activity(
            "vote_read_count", LoadOpeningInput(proposal_id=input.proposal.id,
                                                first_run_id=workflow.info().first_execution_run_id),
            result_type=VoteCount, start_to_close_timeout=timedelta(seconds=30), retry_policy=STORE_RETRY)
        changed = count.tally != self._tally or count.votes != self._votes
        poll = POLL_MIN if changed or self._poll is None else self._poll * 2
        self._poll = poll if poll <= POLL_MAX else None
        self._tally, self._votes, self._rejected = dict(count.tally), count.votes, count.rejected
        self._settled = tally.settled(self._tally, self._rules())

    @workflow.signal(name="votes_recorded")
    def votes_recorded(self) -> None:
        """A hint from the vote intake (carries nothing; anyone may send it): read the store's tally soon."""
        if self._intake_patch and self._state in (VoteState.OPENING, VoteState.OPEN):
            self._hint = True  # while opening too: the intake may record a ballot as soon as the opening is saved

    @workflow.update
    async def cast_vote(self, vote: VoteRequest) -> VoteReceipt:
        """Accept a signed vote; the caller gets the weighted receipt (a resent ballot: its first receipt) or a
        typed rejection."""
        if not self._store_tally:
            return await self._cast_counted_here(vote)
        checked = self._ctx is not None  # else the validator ran while a continued run was still loading
        await workflow.wait_condition(lambda: self._ctx is not None or self._state is not VoteState.OPENING)
        if self._state is not VoteState.OPEN or self._ctx is None:
            raise _reject(f"voting on {vote.proposal_id} is closed", VOTE_CLOSED)
        vote_hash = self._check(vote) if not checked else ballot.vote_hash(vote, self._ctx)
        first_in_run = vote.voter not in self._run_ballots
        if first_in_run:
            self._run_ballots[vote.voter] = vote_hash
        self._run_votes += 1  # every accepted update counts toward continue-as-new, repeats and changes too
        recorded = await self._record(vote, vote_hash)
        if recorded.error_type is not None:
            if first_in_run and recorded.error_type != VOTE_ALREADY_CAST:
                self._run_ballots.pop(vote.voter, None)  # a refused vote does not count as this voter's vote
            raise _reject(recorded.error or "vote refused", recorded.error_type)
        if self._input.proposal.allow_vote_change and not recorded.repeat:
            self._run_ballots[vote.voter] = vote_hash
        return VoteReceipt(vote_hash=vote_hash, voter=vote.voter, choice=recorded.choice or vote.choice,
                           weight=recorded.weight, replaced_choice=recorded.previous_choice)

    async def _record(self, vote: VoteRequest, vote_hash: str) -> RecordVoteResult:
        assert self._ctx is not None and self._snapshot is not None
        support = GOVERNOR_CHOICES.index(vote.choice) if self._governor else None
        done: asyncio.Future[RecordVoteResult] = asyncio.get_running_loop().create_future()
        typed = ballot.typed_data(vote, self._ctx) if self._snapshot_proposal else None
        self._queue.append((RecordVoteInput(
            request=vote, vote_hash=vote_hash, timepoint=self._snapshot.timepoint,
            allow_change=self._input.proposal.allow_vote_change, governor=self._governor, support=support,
            snapshot_typed_data=typed,
        ), done))
        return await done

    async def _cast_counted_here(self, vote: VoteRequest) -> VoteReceipt:
        """Runs recorded before the store kept the tally (replay only): they add the weights themselves."""
        assert self._ctx is not None and self._snapshot is not None
        if self._state is not VoteState.OPEN:
            raise ApplicationError(f"voting on {vote.proposal_id} is closed", type=VOTE_CLOSED, non_retryable=True)
        vote_hash = ballot.vote_hash(vote, self._ctx)
        first_in_run = vote.voter not in self._run_ballots
        self._run_ballots.setdefault(vote.voter, vote_hash)
        recorded = await self._record(vote, vote_hash)
        if recorded.error_type is not None:
            self._rejected += 1
            if first_in_run and recorded.error_type != VOTE_ALREADY_CAST:
                self._run_ballots.pop(vote.voter, None)
            raise ApplicationError(recorded.error or "vote refused", type=recorded.error_type, non_retryable=True)
        previous = None
        if recorded.previous_choice is not None and recorded.previous_weight is not None:
            previous = (recorded.previous_choice, recorded.previous_weight)
        else:
            self._votes += 1
            self._run_votes += 1
        tally.add_vote(self._tally, vote.choice, recorded.weight, previous=previous)
        self._settled = tally.settled(self._tally, self._rules())
        return VoteReceipt(
            vote_hash=vote_hash, voter=vote.voter, choice=vote.choice, weight=recorded.weight,
            replaced_choice=recorded.previous_choice,
        )

    @cast_vote.validator
    def _validate_vote(self, vote: VoteRequest) -> None:
        if vote.proposal_id != self._input.proposal.id:
            raise _reject(f"unknown proposal {vote.proposal_id!r}: this vote is {self._input.proposal.id!r}",
                          VOTE_UNKNOWN_PROPOSAL)
        if self._resuming and self._ctx is None and self._state is VoteState.OPENING:
            return  # a continued run is open from its first instant; the handler checks once its state is read
        self._check(vote)

    def _check(self, vote: VoteRequest) -> str:
        """Everything a vote must pass before it is recorded; the ballot's hash, or a typed rejection."""
        if self._state is not VoteState.OPEN or self._ctx is None or self._deadline is None:
            raise _reject(f"voting on {vote.proposal_id} is not open (state: {self._state.value})", VOTE_CLOSED)
        if workflow.now() >= self._deadline:
            raise _reject(f"vote on {vote.proposal_id} arrived after its deadline {self._deadline.isoformat()}",
                          VOTE_AFTER_DEADLINE)
        try:
            vote_hash = ballot.verify(vote, self._ctx)
        except VoteRejected as err:
            raise _reject(err.message, err.type) from err
        earlier = self._run_ballots.get(vote.voter)
        if earlier is not None and earlier != vote_hash and not self._input.proposal.allow_vote_change:
            raise _reject(f"{vote.voter} already voted on {vote.proposal_id}", VOTE_ALREADY_CAST)
        return vote_hash

    @workflow.query
    def status(self) -> DaoVoteStatus:
        rules = self._rules() if self._snapshot else None
        return DaoVoteStatus(
            proposal_id=self._input.proposal.id,
            state=self._state,
            step=self._step,
            deadline=self._deadline,
            tally=dict(self._tally),
            votes=self._votes,
            rejected=self._rejected,
            total_supply=self._snapshot.total_supply if self._snapshot else 0,
            quorum_weight=rules.quorum_weight if rules else 0,
            decided=self._settled.value if self._settled else None,
        )

    def _make_ctx(self) -> ballot.BallotContext:
        assert self._snapshot is not None
        inp = self._input
        return ballot.BallotContext(
            backend=inp.backend,
            chain_id=self._snapshot.chain_id,
            proposal_id=inp.proposal.id,
            choices=inp.proposal.choices,
            governor=self._governor.governor if self._governor else None,
            governor_name=self._governor.governor_name if self._governor else None,
            onchain_id=self._governor.onchain_id if self._governor else None,
            snapshot_space=inp.snapshot_space,
            snapshot_proposal=self._snapshot_proposal,
        )

    @workflow.query
    def ballot_context(self) -> ballot.BallotContext | None:
        """What a voter signs against (None until the vote is open)."""
        return self._ctx

    def _rules(self) -> tally.TallyRules:
        assert self._snapshot is not None
        if self._rules_in_force is not None:
            quorum, approval = self._rules_in_force.quorum_fraction, self._rules_in_force.approval_fraction
        else:  # a run recorded before the policy: its own terms (they were always set then)
            quorum = as_fraction(self._input.quorum or 0.04)
            approval = as_fraction(self._input.approval_threshold or 0.5)
        return tally.TallyRules(choices=tuple(self._input.proposal.choices), total_supply=self._snapshot.total_supply,
                                quorum=quorum, approval_threshold=approval)

    def _carry(self) -> VoteCarry:
        assert self._snapshot is not None and self._deadline is not None
        return VoteCarry(
            snapshot=self._snapshot, governor=self._governor, snapshot_proposal=self._snapshot_proposal,
            deadline=self._deadline, tally=self._tally,
            votes=self._votes, rejected=self._rejected, run=self._run,
        )

    def _step_to(self, step: str, state: VoteState) -> None:
        self._step, self._state = step, state
        set_step(step, PROPOSAL_ID.value_set(self._input.proposal.id), VOTE_STATE.value_set(state.value))


def _reject(message: str, reason: str) -> ApplicationError:
    return ApplicationError(message, type=reason, non_retryable=True)


def _refusal_of(err: ActivityError) -> BaseException:
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.non_retryable:
        return _reject(cause.message, cause.type or INVALID_INPUT)
    return err
