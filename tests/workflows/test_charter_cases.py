"""Anonymous violation reports on a real Temporal server and anvil: the intake (proof of work, rate limit), a case
acknowledged and decided by 5 of the 15 committee signatures (forged and foreign signatures refused), questions to
and answers from the reporter, the raw history free of anything identifying, and escalation to a DAO vote at 72 h
(time-skipped)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from nacl.public import PublicKey, SealedBox
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from tests.fixtures.fixed_ids import free_fixed_id
from tests.fixtures.harness import Harness, eventually
from tests.workflows.charter_rights_support import (
    POW_BITS,
    action,
    context,
    make_committee,
    make_report,
    seal,
    write_charter,
)
from westworld import keys
from westworld.chain import Deployment
from westworld.charter_cases import (
    CaseDecision,
    CaseInput,
    CaseNote,
    CaseResult,
    CaseSource,
    CaseState,
    leading_zero_bits,
    pow_digest,
    reporter_box_key,
)
from westworld.errors import CASE_REFUSED, REPORT_REFUSED, SIGNER_BAD_SIGNATURE, SIGNER_UNKNOWN
from workers.cli.charter_rights import REPORTER_IDENTITY, answer_for, submit_report
from workers.codec import build_data_converter, load_keyring
from workflows.violation_report import ViolationReportWorkflow

COMMITTEE = make_committee()
PER_HOUR = 3
REPORT = "Node ops at the north hub export user_location to a third party every night; ask Bob at the co-op."


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {"charter_file": write_charter(tmp_path / "charter.yaml", COMMITTEE, per_hour=PER_HOUR)}


@pytest.fixture
async def reporter(harness: Harness) -> AsyncIterator[Client]:
    """The reporter's client as `report submit` makes it; each test starts with no intake and ends with none."""
    key_file = harness.settings.resolved_codec_key_file
    client = await Client.connect(harness.settings.temporal_address, identity=REPORTER_IDENTITY,
                                  data_converter=build_data_converter(load_keyring(key_file)))
    await free_fixed_id(harness.client, keys.REPORT_INTAKE_ID)  # one another test left would take the reports
    yield client
    await free_fixed_id(harness.client, keys.REPORT_INTAKE_ID, "test over")


def refusal(err: pytest.ExceptionInfo[WorkflowUpdateFailedError]) -> ApplicationError:
    cause = err.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


async def test_case_decided_by_five_committee_signatures(harness: Harness, deployment: Deployment,
                                                         reporter: Client, temporal_client: Client) -> None:
    ctx, members = context(deployment), COMMITTEE.members
    report = make_report(REPORT, COMMITTEE)
    case_id = await submit_report(reporter, harness.task_queue, report.submission)
    assert case_id == keys.case_id(report.submission.receipt_hash)
    case: WorkflowHandle[Any, Any] = harness.client.get_workflow_handle(case_id)
    await eventually(lambda: case.query(ViolationReportWorkflow.status), lambda s: s.threshold == 5,
                     not_yet=(Exception,))

    outsider = Account.create("not-on-the-committee")
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await case.execute_update(ViolationReportWorkflow.claim, action(case_id, "claim", outsider, ctx, case_id))
    assert refusal(err).type == SIGNER_UNKNOWN
    with pytest.raises(WorkflowUpdateFailedError) as err:  # names a member, signed by someone else
        await case.execute_update(ViolationReportWorkflow.claim,
                                  action(case_id, "claim", members[0], ctx, case_id, signer=outsider))
    assert refusal(err).type == SIGNER_BAD_SIGNATURE
    state: CaseState = await case.execute_update(ViolationReportWorkflow.claim,
                                                 action(case_id, "claim", members[0], ctx, case_id))
    assert state.acknowledged_by == members[0].address.lower() and state.step == "investigating"
    assert COMMITTEE.open(report.submission.sealed_report) == REPORT  # the committee, and only it, reads it

    question = seal("Which night did you see it?", PublicKey(bytes.fromhex(state.reporter_box_key)))
    await case.execute_update(ViolationReportWorkflow.note, CaseNote(
        action=action(case_id, "note", members[1], ctx, question), sealed=question, to_reporter=True))
    state = await case.query(ViolationReportWorkflow.status)
    asked = SealedBox(reporter_box_key(report.code)).decrypt(base64.b64decode(state.entries[0].sealed)).decode()
    assert asked == "Which night did you see it?"
    committee_key = bytes(COMMITTEE.box.public_key).hex()
    await reporter.get_workflow_handle(case_id).execute_update(
        ViolationReportWorkflow.answer, answer_for(report.code, "Tuesday.", committee_key))
    with pytest.raises(WorkflowUpdateFailedError) as err:  # someone without the receipt code cannot answer
        await reporter.get_workflow_handle(case_id).execute_update(
            ViolationReportWorkflow.answer, answer_for("a guessed code", "nothing happened", committee_key))
    assert refusal(err).type == CASE_REFUSED

    summary = "Upheld: a node exported a blocked metric; the operator was removed and the data deleted."
    for i, member in enumerate(members[:4]):
        state = await case.execute_update(ViolationReportWorkflow.decide, CaseDecision(
            action=action(case_id, "decide:upheld", member, ctx, summary), summary=summary))
        assert len(state.decision_signatures) == i + 1 and not state.outcome
    with pytest.raises(WorkflowUpdateFailedError) as err:  # a repeat does not count twice
        await case.execute_update(ViolationReportWorkflow.decide, CaseDecision(
            action=action(case_id, "decide:upheld", members[3], ctx, summary), summary=summary))
    assert refusal(err).type == CASE_REFUSED
    await case.execute_update(ViolationReportWorkflow.decide, CaseDecision(
        action=action(case_id, "decide:upheld", members[9], ctx, summary), summary=summary))
    result: CaseResult = await harness.client.get_workflow_handle(case_id, result_type=CaseResult).result()
    assert result.outcome == "upheld" and result.summary == summary and len(result.decided_by) == 5
    decided = [e for e in await harness.resources.audit.latest(50) if e.kind == "charter.case.decided"]
    assert decided and decided[-1].payload["summary"] == summary and decided[-1].payload["within_deadline"]

    # the raw history, read without the payload key (what anyone reaching Temporal sees), and even decoded
    for client in (temporal_client, harness.client):
        for wid in (case_id, keys.REPORT_INTAKE_ID):
            raw = json.dumps((await client.get_workflow_handle(wid).fetch_history()).to_json_dict())
            for secret in (report.code, "north hub", "Tuesday", "Which night"):
                assert secret not in raw
    history = await harness.client.get_workflow_handle(keys.REPORT_INTAKE_ID).fetch_history()
    identities = {e.workflow_execution_update_accepted_event_attributes.accepted_request.meta.identity
                  for e in history.events if e.HasField("workflow_execution_update_accepted_event_attributes")}
    identities.add(history.events[0].workflow_execution_started_event_attributes.identity)
    assert identities == {REPORTER_IDENTITY}  # no host name, no pid: the same word for every reporter


async def test_intake_refuses_weak_work_and_floods(harness: Harness, reporter: Client) -> None:
    weak = make_report("too cheap", COMMITTEE, bits=0).submission
    nonce = next(n for n in range(100) if leading_zero_bits(pow_digest(weak.receipt_hash, weak.sealed_report, n))
                 < POW_BITS)
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await submit_report(reporter, harness.task_queue, weak.model_copy(update={"pow_nonce": nonce}))
    assert refusal(err).type == REPORT_REFUSED and "proof of work" in refusal(err).message
    for _ in range(PER_HOUR):
        await submit_report(reporter, harness.task_queue, make_report("a report", COMMITTEE).submission)
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await submit_report(reporter, harness.task_queue, make_report("one too many", COMMITTEE).submission)
    assert refusal(err).type == REPORT_REFUSED and "reports this hour" in refusal(err).message


async def test_undecided_case_escalates_to_a_dao_vote_at_72h(harness: Harness, deployment: Deployment,
                                                             reporter: Client) -> None:
    report = make_report(REPORT, COMMITTEE)
    case_id = await submit_report(reporter, harness.task_queue, report.submission)
    case: WorkflowHandle[Any, Any] = harness.client.get_workflow_handle(case_id)
    await eventually(lambda: case.query(ViolationReportWorkflow.status), lambda s: s.threshold == 5,
                     not_yet=(Exception,))
    ctx, summary = context(deployment), "Dismissed."
    for member in COMMITTEE.members[:4]:  # 4 of the 5 needed: not decided
        await case.execute_update(ViolationReportWorkflow.decide, CaseDecision(
            action=action(case_id, "decide:dismissed", member, ctx, summary), summary=summary))
    await harness.skipper.fast_forward(case, timedelta(hours=71))
    state: CaseState = await case.query(ViolationReportWorkflow.status)
    assert not state.escalated_to and state.reminders == 4  # reminded at 12 h, 36 h, 48 h and 60 h
    await harness.skipper.fast_forward(case, timedelta(hours=1, minutes=5))
    state = await eventually(lambda: case.query(ViolationReportWorkflow.status), lambda s: bool(s.escalated_to))
    assert state.escalated_to == keys.vote_id(keys.case_proposal_id(case_id))
    with pytest.raises((WorkflowUpdateFailedError, RPCError)):  # the committee's window is over (or the case too)
        await case.execute_update(ViolationReportWorkflow.decide, CaseDecision(
            action=action(case_id, "decide:dismissed", COMMITTEE.members[5], ctx, summary), summary=summary))
    kinds = [e.kind for e in await harness.resources.audit.latest(50) if e.subject == case_id]
    assert "charter.case.unacknowledged" in kinds and "charter.case.escalated" in kinds
    # the vote inherits the skipped clock; nobody votes, so no quorum: the case closes unresolved, audited as such
    result: CaseResult = await harness.client.get_workflow_handle(case_id, result_type=CaseResult).result()
    assert result.outcome == "unresolved" and result.decided_by == [state.escalated_to]


@pytest.mark.parametrize("source", [CaseSource.REPORTER, CaseSource.SYSTEM])
async def test_a_case_is_not_opened_around_the_intake(harness: Harness, source: CaseSource) -> None:
    """Anyone reaching Temporal can start a workflow: a case started directly (past the rate limit, with windows of
    its own choosing, or posing as a system finding) fails at once."""
    report = make_report(REPORT, COMMITTEE).submission
    inp = CaseInput(sealed_report=report.sealed_report, receipt_hash=report.receipt_hash, source=source,
                    pow_nonce=report.pow_nonce, decide_within=timedelta(seconds=1))
    with pytest.raises(WorkflowFailureError) as err:
        await harness.client.execute_workflow(ViolationReportWorkflow.run, inp, id=keys.case_id(report.receipt_hash),
                                              task_queue=harness.task_queue)
    assert isinstance(err.value.cause, ApplicationError) and err.value.cause.type == REPORT_REFUSED
