"""The vote intake: signed votes accepted outside any workflow's history.

A vote is checked and stored here under the same rules as the workflow's ``cast_vote`` update, then the vote
workflow is told (a signal with no payload, at most every ``hint_every`` seconds per proposal) to read the tally
from the store, where it is kept. In order:

1. the proposal's opening is read from the store (what the vote opened with: ballot context, snapshot timepoint,
   deadline, whether votes may change; immutable, so cached) with whether the vote closed it;
2. refused after the deadline (``VoteAfterDeadline``) or once the workflow closed it (``VotingClosed``);
3. the EIP-712 signature is verified in a process pool (``Verifier``: every core);
4. the ballot is recorded by the store's one record path (``VoteActivities.record_votes``, the local activity the
   workflow uses): ballots that arrive while a transaction runs wait and go into the next one together (group
   commit); the batch's voters are first weighed at the snapshot together (cached per (timepoint, voter), one
   JSON-RPC batch per transaction rather than one per event-loop turn); a ballot sent again answers with its
   first receipt and counts nothing, another ballot of a voter who voted is refused (``AlreadyVoted``) or
   replaces it if the proposal allows, and the store refuses every ballot once the vote closed it — in the same
   transaction, so none slips in after the final count;
5. the receipt is returned only after the commit: a crash before loses nothing that was receipted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio.exceptions import ApplicationError

from activities.sql.vote_store import VoteStore
from activities.votes import VoteActivities
from westworld import ballot
from westworld.errors import (
    VOTE_AFTER_DEADLINE,
    VOTE_CLOSED,
    VOTE_UNAVAILABLE,
    VOTE_UNKNOWN_PROPOSAL,
    PermanentError,
    VoteRejected,
)
from westworld.vote import (
    GOVERNOR_CHOICES,
    IntakeProposal,
    RecordVoteInput,
    RecordVoteResult,
    RecordVotesInput,
    VoteReceipt,
    VoteRequest,
)
from workers.web.verify import Verifier

log = logging.getLogger("westworld.web.intake")

MAX_BATCH = 1000  # ballots per transaction
HINT_EVERY = 0.15  # seconds between two signals to one vote workflow
UNKNOWN_TTL = 1.0  # seconds an unknown proposal is remembered as unknown
CLOSED_TTL = 1.0  # seconds an open proposal's closed flag is trusted before it is read again (the store's
# transaction refuses a closed proposal's ballots regardless; this only answers VotingClosed sooner)


@dataclass
class OpenVote:
    """A proposal as the intake serves it."""

    proposal: IntakeProposal
    ctx: ballot.BallotContext
    ctx_json: str
    closed: bool = False
    checked: float = 0.0  # time.monotonic() of the last read of ``closed``


class Hints:
    """Debounced, payload-less signals to the vote workflows: at most one per ``every`` seconds each."""

    def __init__(self, send: Callable[[str], Awaitable[None]], every: float = HINT_EVERY) -> None:
        self._send = send
        self._every = every
        self._last: dict[str, float] = {}
        self._due: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def poke(self, workflow_id: str) -> None:
        if workflow_id in self._due:
            return
        self._due.add(workflow_id)
        delay = max(0.0, self._last.get(workflow_id, 0.0) + self._every - time.monotonic())
        asyncio.get_running_loop().call_later(delay, self._fire, workflow_id)

    def _fire(self, workflow_id: str) -> None:
        self._due.discard(workflow_id)
        self._last[workflow_id] = time.monotonic()
        task = asyncio.ensure_future(self._deliver(workflow_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, workflow_id: str) -> None:
        try:
            await self._send(workflow_id)
        except Exception as err:  # a hint is best effort: the workflow also reads the store on a timer
            log.info("hint to %s not delivered: %s", workflow_id, err)


def utcnow() -> datetime:
    return datetime.now(UTC)


class VoteIntake:
    """``await intake.cast(vote)`` -> the receipt, or raises :class:`~westworld.errors.VoteRejected`."""

    def __init__(self, store: VoteStore, votes: VoteActivities, verifier: Verifier, hints: Hints, *,
                 clock: Callable[[], datetime] = utcnow, max_batch: int = MAX_BATCH) -> None:
        self._store = store
        self._votes = votes
        self._verifier = verifier
        self._hints = hints
        self._clock = clock
        self._max_batch = max_batch
        self._open: dict[str, OpenVote] = {}
        self._unknown: dict[str, float] = {}
        self._queues: dict[str, list[tuple[RecordVoteInput, asyncio.Future[RecordVoteResult]]]] = {}
        self._committers: dict[str, asyncio.Task[None]] = {}
        self.commits = 0  # transactions committed, and the ballots they took (figures for the benchmark)
        self.ballots = 0

    async def hint_open_votes(self) -> int:
        """Hint every open vote once (at start: a hint the previous process owed may have died with it)."""
        ids = await self._store.open_workflows()
        for workflow_id in ids:
            self._hints.poke(workflow_id)
        return len(ids)

    async def cast(self, vote: VoteRequest) -> VoteReceipt:
        p = await self._proposal(vote.proposal_id)
        opening = p.proposal.opening
        if p.closed:
            raise VoteRejected(f"voting on {vote.proposal_id} is closed", type=VOTE_CLOSED)
        if self._clock() >= opening.deadline:
            raise VoteRejected(f"vote on {vote.proposal_id} arrived after its deadline "
                               f"{opening.deadline.isoformat()}", type=VOTE_AFTER_DEADLINE)
        try:
            vote_hash = await self._verifier.verify(vote, p.ctx_json)  # a VoteRejected: the refusal as it is
        except VoteRejected:
            raise
        except Exception as err:  # a signature-check process died: nothing was recorded, the pool is renewed
            raise VoteRejected(f"the signature check did not run, try again: {err!r}", type=VOTE_UNAVAILABLE) from err
        governor = opening.governor
        record = RecordVoteInput(
            request=vote, vote_hash=vote_hash, timepoint=opening.snapshot.timepoint,
            allow_change=opening.allow_vote_change, governor=governor,
            support=GOVERNOR_CHOICES.index(vote.choice) if governor else None,
            snapshot_typed_data=ballot.typed_data(vote, p.ctx) if opening.snapshot_proposal else None)
        outcome = await self._commit(p, record)
        if outcome.error_type is not None:
            raise VoteRejected(outcome.error or "vote refused", type=outcome.error_type)
        return VoteReceipt(vote_hash=vote_hash, voter=vote.voter, choice=outcome.choice or vote.choice,
                           weight=outcome.weight, replaced_choice=outcome.previous_choice)

    async def _proposal(self, proposal_id: str) -> OpenVote:
        if (p := self._open.get(proposal_id)) is not None:
            if not p.closed and time.monotonic() - p.checked > CLOSED_TTL:
                p.checked = time.monotonic()
                with contextlib.suppress(Exception):  # unreachable now: the transaction will tell
                    p.closed = bool((found := await self._store.intake_proposal(proposal_id)) and found.closed)
            return p
        if self._unknown.get(proposal_id, 0.0) > time.monotonic():
            raise VoteRejected(f"unknown proposal {proposal_id!r}: no vote opened it", type=VOTE_UNKNOWN_PROPOSAL)
        try:
            found = await self._store.intake_proposal(proposal_id)
        except Exception as err:
            raise VoteRejected(f"the vote store did not answer, try again: {err}", type=VOTE_UNAVAILABLE) from err
        if found is None:
            self._unknown[proposal_id] = time.monotonic() + UNKNOWN_TTL
            raise VoteRejected(f"unknown proposal {proposal_id!r}: no vote opened it (or it "
                               f"is still opening)", type=VOTE_UNKNOWN_PROPOSAL)
        ctx = ballot.context_of(found.opening)
        if ctx is None:
            raise VoteRejected(f"proposal {proposal_id!r} was opened by an older worker and "
                               f"takes votes through its workflow's cast_vote update only", type=VOTE_UNKNOWN_PROPOSAL)
        p = self._open[proposal_id] = OpenVote(found, ctx, ctx.model_dump_json(), closed=found.closed,
                                               checked=time.monotonic())
        return p

    async def _commit(self, p: OpenVote, record: RecordVoteInput) -> RecordVoteResult:
        pid = p.proposal.opening.proposal_id
        fut: asyncio.Future[RecordVoteResult] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(pid, []).append((record, fut))
        if pid not in self._committers:
            self._committers[pid] = asyncio.ensure_future(self._drain(p))
        return await asyncio.shield(fut)  # a caller that goes away does not take its ballot out of the batch

    async def _drain(self, p: OpenVote) -> None:
        """One transaction at a time per proposal, each taking every ballot that waited for it."""
        opening = p.proposal.opening
        queue = self._queues[opening.proposal_id]
        try:
            while queue:
                batch, queue[:] = queue[:self._max_batch], queue[self._max_batch:]
                batch = await self._weigh(batch)
                if not batch:
                    continue
                try:
                    result = await self._votes.record_votes(RecordVotesInput(
                        votes=[r for r, _ in batch], proposal_id=opening.proposal_id,
                        first_run_id=opening.first_run_id))
                except (PermanentError, ApplicationError) as err:  # refused whole: closed, or not the owner's
                    kind = err.type if isinstance(err, PermanentError) else (err.type or VOTE_UNAVAILABLE)
                    if isinstance(err, ApplicationError) and not err.non_retryable:
                        kind = VOTE_UNAVAILABLE
                    if kind == VOTE_CLOSED:
                        p.closed = True
                    _fail(batch, VoteRejected(err.message, type=kind))
                    continue
                except Exception as err:  # the store or the chain does not answer: nothing was committed
                    _fail(batch, VoteRejected(f"the vote could not be recorded, try again: {err}",
                                              type=VOTE_UNAVAILABLE))
                    continue
                self.commits += 1
                self.ballots += len(batch)
                for (_, fut), outcome in zip(batch, result.outcomes, strict=True):
                    if not fut.done():
                        fut.set_result(outcome)
                self._hints.poke(p.proposal.workflow_id)
        finally:
            del self._committers[opening.proposal_id]

    async def _weigh(self, batch: list[tuple[RecordVoteInput, asyncio.Future[RecordVoteResult]]]
                     ) -> list[tuple[RecordVoteInput, asyncio.Future[RecordVoteResult]]]:
        """Look the batch's voters up at the snapshot together (one JSON-RPC batch; the record path then finds
        them cached); a voter the chain did not answer for is refused alone, before the transaction."""
        looked_up = await asyncio.gather(*(self._votes.prefetch_power(r.request.voter, r.timepoint) for r, _ in batch),
                                         return_exceptions=True)
        kept = []
        for (record, fut), err in zip(batch, looked_up, strict=True):
            if not isinstance(err, BaseException):
                kept.append((record, fut))
            elif not fut.done():
                fut.set_exception(VoteRejected(f"the chain did not answer for {record.request.voter}'s voting power, "
                                               f"try again: {err}", type=VOTE_UNAVAILABLE))
        return kept


def _fail(batch: list[tuple[RecordVoteInput, asyncio.Future[RecordVoteResult]]], err: VoteRejected) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(err)
