"""GuardianRotationWorkflow on a real Temporal server and SQLite; share and acknowledgement windows time-skipped."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy

from activities.sql.document_store import DocumentStore
from activities.sql.key_epoch_store import KeyEpochStore
from tests.workflows.conftest import Harness, eventually
from tests.workflows.shelter_helpers import Guardians, answer, make_guardians, open_own_share, refused, seed_document
from westworld import envelope
from westworld.errors import SHARE_BAD_PROOF, SHARE_DUPLICATE, SHARE_NOT_GUARDIAN, SHARE_WINDOW_CLOSED, DecryptFailed
from westworld.rotation import AckTask, GuardianRotationInput, RotationPhase, RotationResult
from westworld.shelter_access import open_document
from westworld.vote import DaoVoteResult, VoteState
from workers.cli.shelter_keys import acknowledge, make_keys
from workers.cli.stuck import find_stuck
from workflows.dao_vote import DaoVoteWorkflow
from workflows.guardian_rotation import GuardianRotationWorkflow

RotationHandle = WorkflowHandle[GuardianRotationWorkflow, RotationResult]


async def start(h: Harness, inp: GuardianRotationInput, epoch: int) -> RotationHandle:
    handle = await h.skipper.client.start_workflow(
        GuardianRotationWorkflow.run, inp, id=f"rotation:{epoch}-{uuid.uuid4().hex[:6]}", task_queue=h.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )
    status = await eventually(lambda: handle.query(GuardianRotationWorkflow.status),
                              lambda s: s.phase in {RotationPhase.VOTING, RotationPhase.COLLECTING})
    if status.phase is RotationPhase.VOTING:  # a new guardian set: the DAO approves it before any share is asked
        assert status.vote_id is not None
        await decide_guardian_vote(h, status.vote_id, "for")
        await eventually(lambda: handle.query(GuardianRotationWorkflow.status),
                         lambda s: s.phase is RotationPhase.COLLECTING)
    return handle


async def decide_guardian_vote(h: Harness, vote_id: str, choice: str) -> None:
    """The whale votes ``choice`` on a rotation's guardian-set vote, whose 72 h window is then skipped."""
    from tests.workflows.test_dao_vote import vote

    vote_handle: WorkflowHandle[DaoVoteWorkflow, DaoVoteResult] = h.client.get_workflow_handle_for(
        DaoVoteWorkflow.run, vote_id)
    await eventually(lambda: vote_handle.query(DaoVoteWorkflow.status), lambda s: s.state is VoteState.OPEN)
    await vote(vote_handle, h.voters[30], choice)
    await h.skipper.fast_forward(vote_handle, timedelta(hours=72, minutes=1))


async def test_too_few_guardians_keep_the_old_epoch_and_stuck_shows_why(harness: Harness) -> None:
    g = await make_guardians(harness)
    new = [make_keys(f"n{i}") for i in range(1, 6)]
    handle = await start(harness, GuardianRotationInput(new_guardians=[k.public() for k in new]), g.epoch.epoch)
    assert await answer(handle, g.keys[0]) == 1
    status = await handle.query(GuardianRotationWorkflow.status)
    assert status.step == "waiting for guardian shares: 1/3" and len(status.waiting_for) == 9
    rows = await eventually(lambda: find_stuck(harness.settings, timedelta(0), client=harness.client),
                            lambda rs: any(r.workflow_id == handle.id for r in rs))
    assert next(r for r in rows if r.workflow_id == handle.id).step == "waiting for guardian shares: 1/3"
    await harness.skipper.fast_forward(handle, timedelta(days=14, minutes=1))
    result = await handle.result()
    assert result.phase is RotationPhase.ABANDONED and "1/3" in result.reason
    current = await KeyEpochStore(harness.resources.database).current()
    assert current is not None and current.epoch == g.epoch.epoch and not current.retired
    # the old shares still open and still combine to the same key
    assert g.master_key() == g.master_key(keys=g.keys[3:6])
    assert not list((harness.settings.data_dir / "shelter" / "rotation").glob("*.key")), "rotation key not deleted"
    entry = (await harness.resources.audit.latest(1))[0]
    assert (entry.kind, entry.subject) == ("shelter.rotation.abandoned", handle.id)
    # the same rotation can be started again (a new run): nothing handed to the abandoned run counts there
    again = await harness.skipper.client.start_workflow(
        GuardianRotationWorkflow.run, GuardianRotationInput(new_guardians=[k.public() for k in new]), id=handle.id,
        task_queue=harness.task_queue, id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE)
    status = await eventually(lambda: again.query(GuardianRotationWorkflow.status),
                              lambda s: s.phase is RotationPhase.VOTING)  # a new run asks the DAO afresh
    assert status.vote_id is not None
    await decide_guardian_vote(harness, status.vote_id, "for")
    status = await eventually(lambda: again.query(GuardianRotationWorkflow.status),
                              lambda s: s.phase is RotationPhase.COLLECTING)
    assert status.shares_in == [] and status.step == "waiting for guardian shares: 0/3"
    await again.terminate("test done")


async def rotate(harness: Harness, g: Guardians, new_n: int = 5, k: int = 3) -> tuple[RotationHandle, list]:  # type: ignore[type-arg]
    new = [make_keys(f"n{i}") for i in range(1, new_n + 1)]
    handle = await start(harness, GuardianRotationInput(new_guardians=[n.public() for n in new], threshold=k),
                         g.epoch.epoch)
    for keys in g.keys[2:5]:
        await answer(handle, keys)
    await eventually(lambda: handle.query(GuardianRotationWorkflow.status),
                     lambda s: s.phase is RotationPhase.ACKNOWLEDGING)
    return handle, new


async def test_rotation_moves_the_key_to_the_new_guardians(harness: Harness) -> None:
    g = await make_guardians(harness)
    master = g.master_key()
    handle, new = await rotate(harness, g)
    # bad acknowledgements: an outsider, a proof from another share, a repeat
    task = await handle.query(GuardianRotationWorkflow.ack_task, new[0].id)
    assert task is not None
    ack = acknowledge(new[0], task)
    outsider = ack.model_copy(update={"guardian_id": "someone-else"})
    assert (await refused(handle, "acknowledge", outsider)).type == SHARE_NOT_GUARDIAN
    other_task = await handle.query(GuardianRotationWorkflow.ack_task, new[1].id)
    assert other_task is not None
    wrong_proof = ack.model_copy(update={"proof": acknowledge(new[1], other_task).proof})
    assert (await refused(handle, "acknowledge", wrong_proof)).type == SHARE_BAD_PROOF
    assert await handle.execute_update(GuardianRotationWorkflow.acknowledge, ack) == 1
    assert (await refused(handle, "acknowledge", ack)).type == SHARE_DUPLICATE
    # old guardians can no longer hand in shares
    assert (await refused(handle, "submit_share", (await _any_submission(handle, g)))).type == SHARE_WINDOW_CLOSED
    store = KeyEpochStore(harness.resources.database)
    assert (await store.current()).epoch == g.epoch.epoch  # type: ignore[union-attr]  # not before all acks
    for keys in new[1:]:
        t = await handle.query(GuardianRotationWorkflow.ack_task, keys.id)
        assert isinstance(t, AckTask)
        await handle.execute_update(GuardianRotationWorkflow.acknowledge, acknowledge(keys, t))
    result = await handle.result()
    assert result.phase is RotationPhase.COMPLETED and result.new_epoch == g.epoch.epoch + 1
    current = await store.current()
    old = await store.get(g.epoch.epoch)
    assert current is not None and old is not None and old.retired
    assert current.epoch == result.new_epoch and [x.id for x in current.guardians] == [n.id for n in new]
    assert current.master_public_key == g.epoch.master_public_key
    assert current.salt != g.epoch.salt
    assert g.master_key(current, new[2:5]) == master  # the same key, under fresh shares
    assert open_own_share(new[0], current).value != open_own_share(g.keys[0], g.epoch).value
    entries = await harness.resources.audit.latest(3)
    assert [e.kind for e in entries] == ["shelter.rotation.started", "vote.result", "shelter.rotation.completed"]
    assert entries[0].payload["vote"] is not None and entries[1].payload["decision"] == "approved"
    assert entries[2].payload["shares_from"] == ["g3", "g4", "g5"] and entries[2].payload["new_epoch"] == 2


async def _any_submission(handle: RotationHandle, g: Guardians) -> object:
    from westworld.shelter_access import ShareSubmission

    enc = g.epoch.share_of(g.keys[0].id)
    assert enc is not None
    return ShareSubmission(guardian_id=g.keys[0].id, index=enc.index, commitment=enc.commitment,
                           sealed=enc.sealed, signature="00" * 64)


async def test_unacknowledged_rotation_keeps_the_old_epoch(harness: Harness) -> None:
    g = await make_guardians(harness)
    handle, new = await rotate(harness, g)
    t = await handle.query(GuardianRotationWorkflow.ack_task, new[0].id)
    assert t is not None
    await handle.execute_update(GuardianRotationWorkflow.acknowledge, acknowledge(new[0], t))
    status = await handle.query(GuardianRotationWorkflow.status)
    assert status.step == "waiting for acknowledgements: 1/5" and status.waiting_for == [n.id for n in new[1:]]
    await harness.skipper.fast_forward(handle, timedelta(days=14, minutes=1))
    result = await handle.result()
    assert result.phase is RotationPhase.ABANDONED and "1/5" in result.reason
    current = await KeyEpochStore(harness.resources.database).current()
    assert current is not None and current.epoch == g.epoch.epoch and not current.retired


async def test_the_schedule_starts_a_rotation_to_the_registered_next_set(harness: Harness) -> None:
    """The declared 6-month schedule, created for real and triggered now: the workflow starts without input and
    rotates to the set registered with `shelter rotate --next`."""
    from workers.stack.schedules import DECLARED, Declared, _schedule

    g = await make_guardians(harness)
    nxt = [make_keys(f"next{i}") for i in range(1, 4)]
    path = harness.settings.data_dir / "shelter" / "next-guardians.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([k.public().model_dump(mode="json") for k in nxt]))
    declared = next(d for d in DECLARED if d.schedule_id == "guardian-rotation")
    assert declared.every == timedelta(days=182)
    sid = f"guardian-rotation-{uuid.uuid4().hex[:6]}"
    schedule = await harness.client.create_schedule(
        sid, _schedule(Declared(sid, declared.workflow, declared.every, declared.note), harness.task_queue))
    try:
        await schedule.trigger()
        wf = await eventually(lambda: _first(harness, sid), lambda w: w is not None)
        assert wf is not None
        handle = harness.client.get_workflow_handle_for(GuardianRotationWorkflow.run, wf)
        status = await eventually(lambda: handle.query(GuardianRotationWorkflow.status),
                                  lambda s: s.phase is RotationPhase.VOTING)  # a registered new set is voted on
        assert status.vote_id is not None and status.new_guardians == ["next1", "next2", "next3"]
        await decide_guardian_vote(harness, status.vote_id, "for")
        status = await eventually(lambda: handle.query(GuardianRotationWorkflow.status),
                                  lambda s: s.phase is RotationPhase.COLLECTING)
        assert status.from_epoch == g.epoch.epoch and status.step == "waiting for guardian shares: 0/3"
        task = await handle.query(GuardianRotationWorkflow.share_task, g.keys[0].id)
        assert task is not None and task.seal_to != g.keys[0].public().encryption_public_key
        for keys in g.keys[:3]:
            await answer(handle, keys)
        status = await eventually(lambda: handle.query(GuardianRotationWorkflow.status),
                                  lambda s: s.phase is RotationPhase.ACKNOWLEDGING)
        assert sorted(status.waiting_for) == ["next1", "next2", "next3"]
        await handle.terminate("test done")
    finally:
        await schedule.delete()


async def _first(h: Harness, schedule_id: str) -> str | None:
    async for wf in h.client.list_workflows(f'TaskQueue = "{h.task_queue}" AND WorkflowId STARTS_WITH "{schedule_id}"'):
        return wf.id
    return None


async def test_master_key_rotation_rewraps_every_data_key_without_touching_content(harness: Harness) -> None:
    g = await make_guardians(harness)
    docs = [await seed_document(harness, g, f"document {i}".encode()) for i in range(2)]
    old_master = g.master_key()
    new = [make_keys(f"n{i}") for i in range(1, 4)]
    handle = await start(harness, GuardianRotationInput(new_guardians=[n.public() for n in new],
                                                        rotate_master_key=True), g.epoch.epoch)
    for keys in g.keys[:3]:
        await answer(handle, keys)
    await eventually(lambda: handle.query(GuardianRotationWorkflow.status),
                     lambda s: s.phase is RotationPhase.ACKNOWLEDGING)
    store = DocumentStore(harness.resources.database)
    assert (await store.get(docs[0].record.document_id)).key_epoch == g.epoch.epoch  # type: ignore[union-attr]
    for keys in new:
        task = await handle.query(GuardianRotationWorkflow.ack_task, keys.id)
        assert task is not None
        await handle.execute_update(GuardianRotationWorkflow.acknowledge, acknowledge(keys, task))
    result = await handle.result()
    assert result.phase is RotationPhase.COMPLETED and result.master_key_rotated and result.rewrapped_documents == 2
    current = await KeyEpochStore(harness.resources.database).current()
    assert current is not None and current.master_public_key != g.epoch.master_public_key
    new_master = g.master_key(current, new)  # k stays 3: the current epoch's
    assert envelope.public_key(new_master).hex() == current.master_public_key
    for i, doc in enumerate(docs):
        record = await store.get(doc.record.document_id)
        assert record is not None and record.key_epoch == current.epoch
        assert record.ciphertext_sha256 == doc.record.ciphertext_sha256  # content not re-uploaded
        assert open_document(new_master, record, doc.blob) == f"document {i}".encode()
        with pytest.raises(DecryptFailed):
            open_document(old_master, record, doc.blob)


async def test_master_key_rotation_refuses_to_strand_a_document_stored_meanwhile(harness: Harness) -> None:
    g = await make_guardians(harness)
    await seed_document(harness, g, b"before")
    new = [make_keys(f"n{i}") for i in range(1, 4)]
    handle = await start(harness, GuardianRotationInput(new_guardians=[n.public() for n in new],
                                                        rotate_master_key=True), g.epoch.epoch)
    for keys in g.keys[:3]:
        await answer(handle, keys)
    await eventually(lambda: handle.query(GuardianRotationWorkflow.status),
                     lambda s: s.phase is RotationPhase.ACKNOWLEDGING)
    late = await seed_document(harness, g, b"stored during the rotation")
    for keys in new:
        task = await handle.query(GuardianRotationWorkflow.ack_task, keys.id)
        assert task is not None
        await handle.execute_update(GuardianRotationWorkflow.acknowledge, acknowledge(keys, task))
    result = await handle.result()
    assert result.phase is RotationPhase.ABANDONED and late.record.document_id in result.reason
    current = await KeyEpochStore(harness.resources.database).current()
    assert current is not None and current.epoch == g.epoch.epoch
    record = await DocumentStore(harness.resources.database).get(late.record.document_id)
    assert record is not None and open_document(g.master_key(), record, late.blob) == b"stored during the rotation"


async def test_a_set_smaller_than_k_is_refused_at_start_before_any_vote(harness: Harness) -> None:
    """3-of-1 cannot be split: refused at planning (TooFewGuardians), not after a vote and k guardians' shares."""
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ApplicationError

    from westworld.errors import TOO_FEW_GUARDIANS

    g = await make_guardians(harness)
    handle = await harness.skipper.client.start_workflow(
        GuardianRotationWorkflow.run, GuardianRotationInput(new_guardians=[make_keys("n1").public()]),
        id=f"rotation:{g.epoch.epoch}-{uuid.uuid4().hex[:6]}", task_queue=harness.task_queue)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == TOO_FEW_GUARDIANS and cause.non_retryable
    assert "the new guardian set has 1 guardian but the key is split 3-of-n" in cause.message
    assert "list at least 3 guardians" in cause.message
    status = await handle.query(GuardianRotationWorkflow.status)
    assert status.phase is RotationPhase.PLANNING and status.vote_id is None
    kinds = [e.kind for e in await harness.resources.audit.latest(5)]
    assert "shelter.rotation.started" not in kinds
    assert not list((harness.settings.data_dir / "shelter" / "rotation").glob("*.key")), "a rotation key was made"
