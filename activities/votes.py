"""Vote activities: weigh a verified vote at the snapshot, record a batch of ballots and the proposal's tally in
one store transaction, relay ballots to the Governor when needed, keep the opening of a vote (claim, save, load)
and compute the Merkle root of a proposal's accepted votes.

Governor ballots are stored first and relayed (``castVoteBySig``) after the commit, so the store's count is what
the chain must end up with. Before storing, a ballot the chain could never count is refused: a voter who already
voted on the Governor (one vote each, never changed) or a ballot signed with another nonce than the Governor's.
A relay that fails after the commit (the node down, the process killed) does not fail the batch: closing the vote
relays every stored ballot the Governor has not counted yet, so its ``proposalVotes`` equal the final tally. A
ballot is counted on chain once: ``hasVoted`` is read before a relay is sent (a resend, a retried batch and the
sweep send nothing for a counted voter), and the Governor reverts a second vote of a voter (two processes racing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from eth_utils.address import to_checksum_address
from temporalio import activity

from activities.chain import LOG_LOOKBACK_BLOCKS, ChainClient
from activities.snapshot import SnapshotClient
from activities.sql.vote_store import Ballot, VoteStore
from activities.voting_power import VotingPower
from westworld import merkle
from westworld.chain import GovernorProposal, RelayVoteInput
from westworld.errors import (
    SNAPSHOT_UNAVAILABLE,
    VOTE_ALREADY_CAST,
    VOTE_BAD_SIGNATURE,
    VOTE_NO_POWER,
    ChainRejected,
    PermanentError,
    TransientError,
    VoteRejected,
)
from westworld.vote import (
    GOVERNOR_CHOICES,
    ClaimProposalInput,
    LoadedVote,
    LoadOpeningInput,
    RecordVoteInput,
    RecordVoteResult,
    RecordVotesInput,
    RecordVotesResult,
    VoteCount,
    VoteOpening,
    VoteRequest,
)

log = logging.getLogger("westworld.votes")
SWEEP_PAGE = 500  # stored ballots read (and relays sent concurrently) at a time when a governor vote closes


class VoteActivities:
    """Built with the project's vote store and a chain client."""

    def __init__(self, store: VoteStore, chain: ChainClient,
                 observe: Callable[[str | None], None] | None = None,
                 snapshot: SnapshotClient | None = None) -> None:
        self._snapshot = snapshot
        self._store = store
        self._chain = chain
        self._power = VotingPower(chain)  # past checkpoints never change: cached, looked up in batches
        self._observe = observe or (lambda _reason: None)  # None: accepted; else the refusal's type

    async def _weigh(self, inp: RecordVoteInput) -> Ballot:
        """The vote's weight at the snapshot (refused without power); published to the hub first on Snapshot."""
        vote = inp.request
        weight = await self._power.of(vote.voter, inp.timepoint)
        if weight == 0:
            raise VoteRejected(
                f"{vote.voter} had no voting power at the snapshot (timepoint {inp.timepoint}) of {vote.proposal_id}: "
                "power counts once its tokens are delegated before a vote opens (`westworld vote delegate --key "
                "FILE`; on the local chain, tokens from `westworld vote faucet ADDRESS --tokens N` first)",
                type=VOTE_NO_POWER,
            )
        if inp.snapshot_typed_data is not None:  # a vote the hub refuses is not kept here either
            if self._snapshot is None:
                raise TransientError("this worker has no Snapshot hub configured", type=SNAPSHOT_UNAVAILABLE)
            try:
                await self._snapshot.submit_vote(inp.snapshot_typed_data, vote.voter, vote.signature)
            except PermanentError as err:  # the hub's refusal: this vote's outcome, not a failed batch
                raise VoteRejected(err.message, type=err.type) from err
        if inp.governor is not None:
            await self._countable_on_chain(inp, inp.governor)
        return Ballot(voter=vote.voter, choice=vote.choice, weight=weight, vote_hash=inp.vote_hash,
                      signature=vote.signature, payload=vote.model_dump(mode="json"),
                      allow_change=inp.allow_change and inp.governor is None)  # the Governor keeps the first vote

    async def _countable_on_chain(self, inp: RecordVoteInput, g: GovernorProposal) -> None:
        """Refuse, before it is stored, a ballot the Governor would not count: its voter voted there already (by
        another ballot: this one's earlier relay means the store has it), or it is signed for another nonce."""
        vote, gov = inp.request, self._chain.governor(g.governor)
        voter = to_checksum_address(vote.voter)
        if await gov.functions.hasVoted(int(g.onchain_id), voter).call():
            if inp.vote_hash in await self._store.known_hashes(vote.proposal_id, [inp.vote_hash]):
                return  # stored and relayed meanwhile by another path: the store answers with its first receipt
            raise VoteRejected(f"{vote.voter} already voted on {vote.proposal_id} on the Governor (proposal "
                               f"{g.onchain_id}); it counts one vote per voter and keeps the first",
                               type=VOTE_ALREADY_CAST)
        expected = int(await gov.functions.nonces(voter).call())
        if vote.nonce != expected:
            raise VoteRejected(f"the ballot of {vote.voter} on {vote.proposal_id} is signed with Governor nonce "
                               f"{vote.nonce}, but the Governor expects {expected}: it would refuse the "
                               f"signature; sign again with the current nonce (`westworld vote cast` reads it)",
                               type=VOTE_BAD_SIGNATURE)

    async def _relay(self, g: GovernorProposal, vote: VoteRequest, support: int, *, closing: bool = False) -> None:
        """Relay a stored ballot (idempotent: nothing is sent if the voter's vote is on chain). While the vote
        is open a failure is logged, not raised: the ballot is committed, and closing the vote relays what is
        still missing. When closing, a node that does not answer raises (the activity is retried); a revert is
        logged: the Governor will never count that ballot (its nonce was used meanwhile)."""
        try:
            await self._chain.relay_vote(RelayVoteInput(
                governor=g.governor, onchain_id=g.onchain_id, support=support, voter=vote.voter,
                signature=vote.signature))
        except ChainRejected as err:
            log.error("ballot of %s on %s is stored but the Governor refuses it: %s", vote.voter,
                      vote.proposal_id, err)
        except Exception as err:
            if closing:
                raise
            log.warning("ballot of %s on %s stored, its relay to the Governor failed (retried when the vote "
                        "closes): %s", vote.voter, vote.proposal_id, err)

    async def prefetch_power(self, voter: str, timepoint: int) -> None:
        """Look the voter's weight up now (the vote intake does, before its ballot waits for a transaction)."""
        await self._power.of(voter, timepoint)

    @activity.defn(name="record_votes")
    async def record_votes(self, inp: RecordVotesInput) -> RecordVotesResult:
        """Weigh a batch and record it with the proposal's tally in one transaction; a refused vote becomes its
        outcome's ``error_type``, not a failed batch. A ballot accepted before (same hash) is not weighed or
        published again: the store answers with its first receipt. A transient failure (store or chain
        unreachable) fails the batch so it is retried whole: recording is idempotent."""
        if not inp.votes:
            return RecordVotesResult(outcomes=[])
        proposal_id = inp.proposal_id or inp.votes[0].request.proposal_id
        known = await self._store.known_hashes(proposal_id, [v.vote_hash for v in inp.votes])
        fresh = {v.vote_hash: v for v in inp.votes if v.vote_hash not in known}  # a ballot twice in one batch:
        weighed = dict(zip(fresh, await asyncio.gather(  # weighed and published once, a repeat in the store
            *(self._weigh(v) for v in fresh.values()), return_exceptions=True), strict=True))
        slots: list[Ballot | RecordVoteResult] = []
        for v in inp.votes:
            if v.vote_hash in known:  # answered by the store from the ballot's first receipt
                slots.append(Ballot(voter=v.request.voter, choice=v.request.choice, weight=0, vote_hash=v.vote_hash,
                                    signature=v.request.signature, payload={}, allow_change=v.allow_change))
                continue
            res = weighed[v.vote_hash]
            if isinstance(res, VoteRejected):
                slots.append(RecordVoteResult(weight=0, error_type=res.type, error=res.message))
            elif isinstance(res, BaseException):
                raise res
            else:
                slots.append(res)
        to_store = [s for s in slots if isinstance(s, Ballot)]
        stored, count = await self._store.record_ballots(
            proposal_id, inp.first_run_id, to_store, refused=len(slots) - len(to_store))
        answers = iter(stored)
        outcomes = [next(answers) if isinstance(s, Ballot) else s for s in slots]
        relays: dict[str, RecordVoteInput] = {}  # a repeat too: its first relay may have died with a process
        for v, outcome in zip(inp.votes, outcomes, strict=True):
            if outcome.error_type is None and v.governor is not None and v.support is not None:
                relays.setdefault(v.vote_hash, v)
            self._observe(outcome.error_type)
        await asyncio.gather(*(self._relay(v.governor, v.request, v.support) for v in relays.values()
                               if v.governor is not None and v.support is not None))
        if inp.first_run_id is None:  # a run started before the store kept the tally adds weights itself
            outcomes = [_neutral_repeat(o) for o in outcomes]
        return RecordVotesResult(outcomes=outcomes, count=count)

    @activity.defn(name="vote_claim_proposal")
    async def vote_claim_proposal(self, inp: ClaimProposalInput) -> None:
        """The first run of a vote takes its proposal id; refused if another vote execution opened it."""
        await self._store.claim(inp)

    @activity.defn(name="vote_save_opening")
    async def vote_save_opening(self, opening: VoteOpening) -> VoteOpening:
        """Store what the first run opened the vote with (once; a retry returns the first save)."""
        return await self._store.save_opening(opening)

    @activity.defn(name="vote_load_opening")
    async def vote_load_opening(self, inp: LoadOpeningInput) -> LoadedVote:
        """A continued run's state: the stored opening and tally of its own execution chain."""
        return await self._store.load(inp)

    @activity.defn(name="vote_read_count")
    async def vote_read_count(self, inp: LoadOpeningInput) -> VoteCount:
        """The proposal's tally as the store holds it (the vote workflow reads it when the intake hints)."""
        return await self._store.read_count(inp)

    @activity.defn(name="vote_close")
    async def vote_close(self, inp: LoadOpeningInput) -> VoteCount:
        """Close the proposal in the store (no ballot is recorded after this; idempotent) and return the final
        tally, read in the same transaction. On the governor backend, every stored ballot the Governor has not
        counted yet is relayed first (its relay failed or died with a process after the commit): the chain's
        count then equals this tally."""
        count = await self._store.close(inp)
        opening = (await self._store.load(inp)).opening
        if opening.governor is not None:
            await self._relay_missing(inp.proposal_id, opening.governor)
        return count

    async def _relay_missing(self, proposal_id: str, g: GovernorProposal) -> None:
        """Relay the stored ballots whose voters the Governor's ``VoteCast`` events do not show."""
        gov = self._chain.governor(g.governor)
        start = g.proposed_block or max(0, int(await self._chain.w3.eth.block_number) - LOG_LOOKBACK_BLOCKS)
        events = await gov.events.VoteCast().get_logs(from_block=start)
        pid = int(g.onchain_id)
        on_chain = {str(e["args"]["voter"]).lower() for e in events if int(e["args"]["proposalId"]) == pid}
        offset = 0
        while page := await self._store.list_votes(proposal_id, limit=SWEEP_PAGE, offset=offset):
            offset += len(page)
            missing = [VoteRequest.model_validate(b.payload) for b in page if b.voter.lower() not in on_chain]
            await asyncio.gather(*(self._relay(g, v, GOVERNOR_CHOICES.index(v.choice), closing=True)
                                   for v in missing))

    @activity.defn(name="vote_set_root")
    async def vote_set_root(self, proposal_id: str) -> str:
        """RFC 6962 root over the proposal's accepted vote hashes, ordered by voter (empty tree for none)."""
        hashes = await self._store.vote_hashes(proposal_id)
        return merkle.root([bytes.fromhex(h.removeprefix("0x")) for h in hashes]).hex()

    @activity.defn(name="chain_time")
    async def chain_time(self) -> int:
        """The latest block's timestamp: the clock the timelock's eta is measured on."""
        return await self._chain.latest_timestamp()


def _neutral_repeat(outcome: RecordVoteResult) -> RecordVoteResult:
    """For runs that add weights themselves: a repeat answers as a change from its choice to itself with no
    weight, so adding it changes neither the tally nor the count of voters."""
    if not outcome.repeat or outcome.choice is None:
        return outcome
    return outcome.model_copy(update={"weight": 0, "previous_choice": outcome.choice, "previous_weight": 0})
