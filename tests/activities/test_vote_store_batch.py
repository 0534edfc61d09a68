"""The vote store records a batch as if its ballots came one after another (the intake commits many at once), and
refuses every ballot once the vote closed the proposal; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from activities.sql.database import Database
from tests.activities.test_store import ALICE, BOB, CAROL, CHOICES, RUN, cast, claimed, db
from westworld.errors import VOTE_ALREADY_CAST, VOTE_CLOSED, WestworldError
from westworld.vote import LoadOpeningInput, RecordVoteResult

__all__ = ["db"]  # the fixture, on both backends


async def test_one_batch_answers_as_ballots_one_after_another(db: Database) -> None:
    store = await claimed(db, "p", "q")
    batch = [cast(ALICE, "for", 10, "0xa1"), cast(ALICE, "for", 10, "0xa1"),  # a resend inside the batch
             cast(ALICE, "against", 10, "0xa2"),  # another ballot, no change allowed
             cast(BOB, "for", 5, "0xb1", change=True), cast(BOB, "abstain", 5, "0xb2", change=True),
             cast(BOB, "against", 5, "0xb3", change=True), cast(BOB, "abstain", 5, "0xb2", change=True)]
    out, count = await store.record_ballots("p", RUN, batch)
    assert out[0] == RecordVoteResult(weight=10, choice="for")
    assert out[1] == out[0].model_copy(update={"repeat": True})
    assert out[2].error_type == VOTE_ALREADY_CAST
    assert out[3] == RecordVoteResult(weight=5, choice="for")
    assert out[4] == RecordVoteResult(weight=5, choice="abstain", previous_choice="for", previous_weight=5)
    assert out[5] == RecordVoteResult(weight=5, choice="against", previous_choice="abstain", previous_weight=5)
    assert out[6] == out[4].model_copy(update={"repeat": True})  # an earlier ballot resent: its first receipt
    assert count is not None and (count.tally, count.votes, count.rejected) == (
        {"for": 10, "against": 5, "abstain": 0}, 2, 1)
    assert count.tally == await store.recount("p", CHOICES)
    # The same ballots one by one into another proposal give the same answers and tally.
    one_by_one = [(await store.record_ballots("q", RUN, [b]))[0][0] for b in batch]
    same_words = [o.model_copy(update={"error": (o.error or "").replace("proposal q", "proposal p") or None})
                  for o in one_by_one]
    assert same_words == out and (await store.tally("q")) == count


async def test_a_closed_proposal_records_nothing(db: Database) -> None:
    store = await claimed(db, "p")
    await store.record_ballots("p", RUN, [cast(ALICE, "for", 10, "0xa1")])
    final = await store.close(LoadOpeningInput(proposal_id="p", first_run_id=RUN))
    assert final.votes == 1 and await store.close(LoadOpeningInput(proposal_id="p", first_run_id=RUN)) == final
    with pytest.raises(WestworldError) as closed:
        await store.record_ballots("p", RUN, [cast(CAROL, "for", 1, "0xc1")])
    assert closed.value.type == VOTE_CLOSED
    assert await store.count("p") == 1 and await store.tally("p") == final
    assert await store.open_workflows() == []
    assert await store.read_count(LoadOpeningInput(proposal_id="p", first_run_id=RUN)) == final
