"""The charter demo against the harness's chain and worker, a real gate (with its kernel filter where it loads) and
the session's Prometheus scraping it: the charter in force, the adversary's forbidden series absent; then a consent
granted and withdrawn (purged from Prometheus), an export delivered and opened with the user's key, an anonymous
report decided by five committee signatures, and the audit entries of each.

The data dir holds what `westworld up` makes for a fresh stack (workers/stack/committee.py): the committee's report
key and ``local-charter.yaml``, which the settings pick. The session's Charter is already at the shipped file, so the
local file is version 2 here, put on chain by the timelock (anvil impersonation, reverted after the test): what a
DAO vote's executed calls do (the governor path is test_charter_sync's)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from temporalio.client import WorkflowExecutionStatus
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.types import RPCEndpoint

from activities.chain import ChainClient
from activities.charter_chain import LOCAL_CHARTER_NAME
from tests.charter_support import audited, charter_settings, gate_job
from tests.fixtures.fixed_ids import free_fixed_id
from tests.fixtures.prometheus import PrometheusServer
from tests.workflows.conftest import Harness, eventually
from westworld.chain import CHARTER, TIMELOCK, Deployment
from westworld.charter import charter_hash
from westworld.charter_sync import CharterSyncInput
from westworld.keys import CHARTER_SYNC_ID, REPORT_INTAKE_ID
from workers.demo.charter import run_charter_demo
from workers.gate import server as charter_gate
from workers.stack.committee import write_local_charter
from workflows.charter_sync import CharterSyncWorkflow


@pytest.fixture
def settings_overrides(prometheus: PrometheusServer, tmp_path: Path) -> dict[str, Any]:
    write_local_charter(tmp_path, version=2)  # tmp_path is the harness's data dir
    return charter_settings(prometheus, charter_kernel_device="lo", prometheus_scrape_interval=0.5,
                            ipfs_api_url="http://127.0.0.1:9")  # no IPFS here: the bundle stays in the data dir


@pytest.fixture
async def local_charter_on_chain(harness: Harness, chain_isolated: ChainClient, deployment: Deployment
                                 ) -> AsyncIterator[None]:
    assert harness.settings.charter_file.name == LOCAL_CHARTER_NAME  # the settings picked the data dir's charter
    w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(chain_isolated.w3.provider.endpoint_uri))
    timelock = to_checksum_address(deployment.address(TIMELOCK))
    await w3.provider.make_request(RPCEndpoint("anvil_impersonateAccount"), [timelock])
    await w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [timelock, hex(10**18)])
    charter = w3.eth.contract(address=to_checksum_address(deployment.address(CHARTER)), abi=deployment.abis[CHARTER])
    digest = charter_hash(harness.settings.charter_file.read_bytes())
    try:
        tx = await charter.functions.amend(2, bytes.fromhex(digest)).transact({"from": timelock})
        await w3.eth.wait_for_transaction_receipt(tx)
        yield
    finally:
        await w3.provider.make_request(RPCEndpoint("anvil_stopImpersonatingAccount"), [timelock])
        await w3.provider.disconnect()


@pytest.fixture
async def gate(harness: Harness) -> AsyncIterator[charter_gate.RunningGate]:
    running = await charter_gate.start(harness.settings, kernel=True)
    try:
        yield running
    finally:
        await running.close()


async def test_the_charter_demo_runs_on_the_stack(harness: Harness, local_charter_on_chain: None,
                                                  gate: charter_gate.RunningGate,
                                                  prometheus: PrometheusServer) -> None:
    lines: list[str] = []
    with gate_job(prometheus, [f"127.0.0.1:{harness.settings.charter_gate_port}"]):
        await free_fixed_id(harness.client, CHARTER_SYNC_ID)
        await free_fixed_id(harness.client, REPORT_INTAKE_ID)
        await harness.client.start_workflow(CharterSyncWorkflow.run, CharterSyncInput(poll_interval=1.0),
                                             id=CHARTER_SYNC_ID, task_queue=harness.task_queue)
        try:
            # the demo starts workflows on the settings' task queue: the harness's worker listens on its own
            await run_charter_demo(harness.settings.model_copy(update={"task_queue": harness.task_queue}),
                                   lines.append)
        finally:
            await free_fixed_id(harness.client, CHARTER_SYNC_ID, "test over")
            await free_fixed_id(harness.client, REPORT_INTAKE_ID, "test over")
    text = "\n".join(lines)
    print(text)
    assert "version 2" in text and "(in force)" in text
    assert "none outside the charter" in text
    assert "gate drops:" in text and "no_consent" in text
    opened = re.search(r"forbidden metrics seen: the charter sync opened violation case (case:[0-9a-f]{32})", text)
    assert opened, text
    # its first workflow task has run (a refused opening would have failed it there): accepted, and open
    case = await eventually(harness.client.get_workflow_handle(opened[1]).describe,
                            lambda d: d.status is not WorkflowExecutionStatus.RUNNING or d.history_length >= 4)
    assert case.status is WorkflowExecutionStatus.RUNNING, case.status
    if gate.state.kernel is not None:
        assert "kernel filter: loaded at tc egress of lo" in text
    # consent: the withdrawal purged the one series at the gate and in Prometheus, none left
    assert re.search(r"purged 1 series at the gate and 1 in Prometheus", text), text
    assert "returns no sample of it" in text
    # export: delivered, not overdue, opened with the user's key, with the consents the user signed
    assert "overdue False" in text and re.search(r"opened with the user's key: .*consents 2", text), text
    # report: decided by five signatures within the window
    assert re.search(r"decided 'upheld' by 5 signatures", text) and "inside the 72 h window" in text, text
    # audit: each step's entries, with their sequence numbers, and they are in the log
    audit_line = next(line for line in lines if line.startswith("audit log (verified"))
    for kind in ("charter.consent.granted", "charter.consent.withdrawn", "charter.export.requested",
                 "charter.export.delivered", "charter.case.opened", "charter.case.decided"):
        assert kind in audit_line, (kind, audit_line)
        assert (await audited(harness.resources, kind))
