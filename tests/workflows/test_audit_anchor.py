"""AuditAnchorWorkflow: verifies the log, anchors (key, size, root) on the real chain, refuses a tampered log;
AuditVerifyWorkflow: the report `westworld audit verify` prints, made in the worker."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from eth_typing import HexStr
from temporalio.client import WorkflowFailureError

from activities.anchor import find_latest_anchor
from activities.sql.schema import audit_entries
from tests.workflows.conftest import Harness
from westworld.audit_anchor import parse_anchor
from westworld.audit_trust import AuditVerifyInput
from westworld.keys import audit_verify_id
from workflows.audit_anchor import AuditAnchorWorkflow
from workflows.audit_verify import AuditVerifyWorkflow


async def test_anchor_puts_the_verified_root_on_chain(harness: Harness) -> None:
    log = harness.resources.audit
    await log.append("test.decision", "anchor", {"n": 1})
    head = await log.head()
    result = await harness.client.execute_workflow(
        AuditAnchorWorkflow.run, id=f"audit-anchor-{uuid.uuid4()}", task_queue=harness.task_queue)
    assert (result.tree_size, result.root) == (head.tree_size, head.root)
    assert result.tx_hash is not None
    tx = await harness.resources.chain.w3.eth.get_transaction(HexStr(result.tx_hash))
    assert log.heads is not None
    assert parse_anchor(bytes(tx["input"])) == (head.tree_size, head.root, log.heads.public_key)
    latest = (await log.latest(1))[0]
    assert (latest.seq, latest.kind, latest.payload["tx"]) == (result.audit_seq, "audit.anchor", result.tx_hash)


async def test_a_tampered_log_is_not_anchored(harness: Harness) -> None:
    log = harness.resources.audit
    await log.append("test.decision", "tamper", {"decision": "approved"})
    async with harness.resources.database.engine.begin() as conn:
        await conn.execute(sa.update(audit_entries).where(audit_entries.c.seq == 0)
                           .values(payload='{"decision":"rejected"}'))
    with pytest.raises(WorkflowFailureError) as exc:
        await harness.client.execute_workflow(
            AuditAnchorWorkflow.run, id=f"audit-anchor-{uuid.uuid4()}", task_queue=harness.task_queue)
    assert "entry 0" in str(exc.value.cause)


async def test_verify_workflow_reports_in_the_worker_against_the_chain_anchor(harness: Harness) -> None:
    log = harness.resources.audit
    await log.append("test.decision", "verify", {"n": 1})
    await harness.client.execute_workflow(
        AuditAnchorWorkflow.run, id=f"audit-anchor-{uuid.uuid4()}", task_queue=harness.task_queue)
    result = await harness.client.execute_workflow(
        AuditVerifyWorkflow.run, AuditVerifyInput(last=2), id=audit_verify_id(str(uuid.uuid4())),
        task_queue=harness.task_queue)
    head = await log.head()
    assert (result.report.ok, result.report.tree_size, result.report.root) == (True, 2, head.root)
    assert result.report.anchor is not None and result.report.anchor.tree_size == 1
    assert result.report.anchor_proof is not None and result.report.anchor_proof.verify()
    assert [e.kind for e in result.entries] == ["test.decision", "audit.anchor"]


async def test_the_latest_anchor_is_found_through_the_sender_index_and_by_reading_blocks(harness: Harness) -> None:
    log = harness.resources.audit
    assert log.heads is not None
    chain = harness.resources.chain
    assert await find_latest_anchor(chain.w3, chain.relayer.address, log.heads.public_key) is None
    for n in (1, 2):
        await log.append("test.decision", "anchor", {"n": n})
        await harness.client.execute_workflow(
            AuditAnchorWorkflow.run, id=f"audit-anchor-{uuid.uuid4()}", task_queue=harness.task_queue)
    by_index = await find_latest_anchor(chain.w3, chain.relayer.address, log.heads.public_key)
    by_blocks = await find_latest_anchor(chain.w3, chain.relayer.address, log.heads.public_key, index=False)
    assert by_index is not None and by_index == by_blocks
    assert by_index.tree_size == 3  # the second anchor: two decisions and the first anchor's own entry
    assert await find_latest_anchor(chain.w3, harness.voters[0].address, log.heads.public_key) is None
