"""`westworld shelter guardians remove`: a guardian leaves only through a rotation, so the command starts one to
the current set less the leaver (k unchanged), which the DAO votes on first; an id that is not a guardian fails the
rotation at planning, naming the guardians. Real worker, real key epoch, the CLI as a subprocess."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from tests.workflows.conftest import Harness, eventually
from tests.workflows.shelter_helpers import make_guardians
from tests.workflows.test_shelter_cli import cli, settings_overrides
from westworld.keys import rotation_id
from westworld.rotation import RotationPhase
from workflows.guardian_rotation import GuardianRotationWorkflow

__all__ = ["settings_overrides"]


def started(out: str) -> str:
    found = re.search(r"started (\S+):", out)
    assert found, out
    return found.group(1)


async def test_guardians_remove_rotates_to_the_set_without_them(harness: Harness) -> None:
    g = await make_guardians(harness, n=5, k=3)
    ids = [x.id for x in g.epoch.guardians]

    wrong = started(await cli(harness, "shelter", "guardians", "remove", "nobody"))
    try:
        await harness.client.get_workflow_handle(wrong).result()
        raise AssertionError("a rotation removing a non-guardian ran")
    except WorkflowFailureError:
        pass
    shown = await cli(harness, "shelter", "status", wrong)
    assert f"nobody not a guardian of key epoch {g.epoch.epoch} (its guardians: {', '.join(ids)})" in shown

    leaver = ids[1]
    wf_id = started(await cli(harness, "shelter", "guardians", "remove", leaver))
    handle = harness.client.get_workflow_handle(wf_id)
    status = await eventually(lambda: handle.query(GuardianRotationWorkflow.status),
                              lambda s: s.phase is RotationPhase.VOTING)
    assert status.new_guardians == [i for i in ids if i != leaver] and status.threshold == 3
    assert status.vote_id is not None  # a smaller set is a new set: the DAO decides first
    await handle.terminate("test done")


async def test_removing_below_k_is_refused_by_the_cli_before_anything_starts(harness: Harness) -> None:
    g = await make_guardians(harness, n=3, k=3)
    ids = [x.id for x in g.epoch.guardians]
    before = datetime.now(UTC)
    shown = await cli(harness, "shelter", "guardians", "remove", ids[0], ok=False)
    assert f"error: rotation of key epoch {g.epoch.epoch}: the new guardian set has 2 guardians but the key is " \
           "split 3-of-n" in shown and "list at least 3 guardians" in shown, shown
    assert "Traceback" not in shown
    # the id is shared with other tests' rotations of epoch 1 on this server: none may have started now
    try:
        started_at = (await harness.client.get_workflow_handle(rotation_id(g.epoch.epoch)).describe()).start_time
    except RPCError as err:
        started_at = None
        if err.status is not RPCStatusCode.NOT_FOUND:
            raise
    assert started_at is None or started_at < before, "the CLI started the rotation"
