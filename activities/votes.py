"""Vote activities: weigh a verified vote at the snapshot, store it once, relay it to the Governor when needed,
and compute the Merkle root of a proposal's accepted votes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.chain import ChainClient
from activities.snapshot import SnapshotClient
from activities.store import VoteStore
from westworld import merkle
from westworld.chain import RelayVoteInput
from westworld.errors import VOTE_NO_POWER, WestworldError
from westworld.vote import RecordVoteInput, RecordVoteResult, RecordVotesInput, RecordVotesResult


class VoteActivities:
    """Built with the project's vote store and a chain client."""

    def __init__(self, store: VoteStore, chain: ChainClient,
                 observe: Callable[[str | None], None] | None = None,
                 snapshot: SnapshotClient | None = None) -> None:
        self._snapshot = snapshot
        self._store = store
        self._chain = chain
        self._observe = observe or (lambda _reason: None)  # None: accepted; else the refusal's type

    async def record_vote(self, inp: RecordVoteInput) -> RecordVoteResult:
        """Weigh and store a vote whose signature the workflow already checked; refuse it if it has no power
        or repeats a voter (unless the proposal allows a change)."""
        vote = inp.request
        weight = await self._chain.voting_power(vote.voter, inp.timepoint)
        if weight == 0:
            raise ApplicationError(
                f"{vote.voter} had no voting power at the snapshot (timepoint {inp.timepoint}) of {vote.proposal_id}",
                type=VOTE_NO_POWER, non_retryable=True,
            )
        # Published first: a vote the hub refuses is not kept here either.
        if inp.snapshot_typed_data is not None:
            if self._snapshot is None:
                raise ApplicationError("this worker has no Snapshot hub configured", type="SnapshotUnavailable")
            try:
                await self._snapshot.submit_vote(inp.snapshot_typed_data, vote.voter, vote.signature)
            except WestworldError as err:
                raise ApplicationError(err.message, type=err.type, non_retryable=True) from err
        try:
            recorded = await self._store.record_vote(
                proposal_id=vote.proposal_id, voter=vote.voter, choice=vote.choice, weight=weight,
                vote_hash=inp.vote_hash, signature=vote.signature, payload=vote.model_dump(mode="json"),
                allow_change=inp.allow_change,
            )
        except WestworldError as err:
            raise ApplicationError(err.message, type=err.type, non_retryable=True) from err
        if inp.governor is not None and inp.support is not None:
            await self._chain.relay_vote(RelayVoteInput(
                governor=inp.governor.governor, onchain_id=inp.governor.onchain_id, support=inp.support,
                voter=vote.voter, signature=vote.signature,
            ))
        return RecordVoteResult(
            weight=weight, previous_choice=recorded.previous_choice, previous_weight=recorded.previous_weight
        )

    @activity.defn(name="record_votes")
    async def record_votes(self, inp: RecordVotesInput) -> RecordVotesResult:
        """Record a batch; a refused vote becomes its outcome's ``error_type``, not a failed batch. A transient
        failure (store or chain unreachable) fails the batch so it is retried whole: recording is idempotent."""
        results = await asyncio.gather(*(self.record_vote(one) for one in inp.votes), return_exceptions=True)
        outcomes = []
        for res in results:
            if isinstance(res, ApplicationError) and res.non_retryable:
                self._observe(res.type or "unknown")
                outcomes.append(RecordVoteResult(weight=0, error_type=res.type, error=res.message))
            elif isinstance(res, BaseException):
                raise res
            else:
                self._observe(None)
                outcomes.append(res)
        return RecordVotesResult(outcomes=outcomes)

    @activity.defn(name="vote_set_root")
    async def vote_set_root(self, proposal_id: str) -> str:
        """RFC 6962 root over the proposal's accepted vote hashes, ordered by voter (empty tree for none)."""
        hashes = await self._store.vote_hashes(proposal_id)
        return merkle.root([bytes.fromhex(h.removeprefix("0x")) for h in hashes]).hex()

    @activity.defn(name="chain_time")
    async def chain_time(self) -> int:
        """The latest block's timestamp: the clock the timelock's eta is measured on."""
        return await self._chain.latest_timestamp()
