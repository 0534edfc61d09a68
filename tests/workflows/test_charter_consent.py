"""CharterConsentWorkflow and RetentionPurgeWorkflow on a real Temporal server, anvil, a real charter gate (UDP in,
/metrics out) and the session's Prometheus scraping it: a signed grant lets the subject's consent-only series
through to Prometheus; a forged or replayed message is refused; a withdrawal purges the series at the gate and in
Prometheus's TSDB (admin API), timed and audited. The retention purge deletes superseded consent messages and
expired export bundles and audits the counts."""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from activities.charter_enforce import CharterEnforcement
from activities.sql.charter_store import CharterStore
from tests.charter_support import audited, charter_settings, config_file, reload
from tests.fixtures.harness import Harness, eventually
from tests.fixtures.prometheus import PrometheusServer
from tests.workflows.charter_rights_support import context, make_committee, write_charter
from westworld import keys
from westworld.chain import Deployment
from westworld.charter import charter_hash, load_charter
from westworld.charter_consent import ConsentRequest, sign
from westworld.charter_data import ConsentInput, ConsentReceipt, RetentionPurgeResult
from westworld.charter_sync import CHARTER_JOB, CharterEnforceInput, metric_relabel_configs
from westworld.errors import CONSENT_REJECTED, CONSENT_REPLAYED
from workers.gate import server as charter_gate
from workers.settings import charter_gate_token_file
from workers.stack.schedules import DECLARED, Declared, _schedule
from workflows.charter_consent import CharterConsentWorkflow
from workflows.retention_purge import RetentionPurgeWorkflow

METRIC = "mesh_user_session_seconds"  # consent-only in the charter


@pytest.fixture
def settings_overrides(prometheus: PrometheusServer, tmp_path: Path) -> dict[str, Any]:
    return charter_settings(prometheus, charter_file=write_charter(tmp_path / "charter.yaml", make_committee()))


@contextlib.contextmanager
def scraped_with_charter_rules(prometheus: PrometheusServer, target: str, charter_file: Path) -> Iterator[None]:
    path = config_file(prometheus)
    config = json.loads(path.read_text())
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] != CHARTER_JOB]
    config["scrape_configs"].append({"job_name": CHARTER_JOB, "static_configs": [{"targets": [target]}],
                                     "metric_relabel_configs": metric_relabel_configs(
                                         load_charter(charter_file.read_bytes()))})
    path.write_text(json.dumps(config, indent=2))
    reload(prometheus)
    try:
        yield
    finally:
        config = json.loads(path.read_text())
        config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] != CHARTER_JOB]
        path.write_text(json.dumps(config, indent=2))
        reload(prometheus)


@pytest.fixture
async def gate(harness: Harness, prometheus: PrometheusServer) -> AsyncIterator[charter_gate.RunningGate]:
    s = harness.settings
    running = await charter_gate.start(s, kernel=False)
    content = s.charter_file.read_bytes()
    token = charter_gate_token_file(s).read_text().strip()
    async with httpx.AsyncClient() as http:  # the gate runs on this event loop
        (await http.put(f"{s.charter_gate_url}/charter", content=content, timeout=10, headers={
            "Authorization": f"Bearer {token}", charter_gate.HASH_HEADER: charter_hash(content)})).raise_for_status()
    with scraped_with_charter_rules(prometheus, f"127.0.0.1:{s.charter_gate_port}", s.charter_file):
        yield running
    await running.close()


def consent(deployment: Deployment, subject: LocalAccount, grant: bool, nonce: int,
            signer: LocalAccount | None = None) -> ConsentRequest:
    req = ConsentRequest(subject=subject.address, metric=METRIC, grant=grant, nonce=nonce, expiry=2**40)
    return req.model_copy(update={"signature": sign(req, context(deployment), (signer or subject).key.hex())})


async def submit(h: Harness, req: ConsentRequest) -> ConsentReceipt:
    receipt: ConsentReceipt = await h.client.execute_update_with_start_workflow(
        CharterConsentWorkflow.submit, req, start_workflow_operation=WithStartWorkflowOperation(
            CharterConsentWorkflow.run, ConsentInput(subject=req.subject), id=keys.consent_id(req.subject),
            task_queue=h.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING))
    return receipt


def send(port: int, *lines: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto("\n".join(lines).encode(), ("127.0.0.1", port))


async def session_series(prometheus: PrometheusServer) -> list[dict[str, str]]:
    async with httpx.AsyncClient() as http:
        data: list[dict[str, str]] = (await http.get(f"{prometheus.url}/api/v1/series", params={
            "match[]": METRIC, "start": "0"})).json()["data"]
    return data


async def test_consent_grant_withdraw_purges(harness: Harness, deployment: Deployment, prometheus: PrometheusServer,
                                            gate: charter_gate.RunningGate) -> None:
    alice, bob = Account.create("alice"), Account.create("bob")
    # the session's Prometheus may still index another test's purged series (until its head GC): only new ones count
    earlier = await session_series(prometheus)
    with pytest.raises(WorkflowUpdateFailedError) as err:  # bob cannot grant for alice
        await submit(harness, consent(deployment, alice, True, 1, signer=bob))
    assert isinstance(err.value.cause, ApplicationError) and err.value.cause.type == CONSENT_REJECTED
    receipt = await submit(harness, consent(deployment, alice, True, 1))
    assert receipt.grant and receipt.applied.gate == "granted"
    with pytest.raises(WorkflowUpdateFailedError) as err:  # the same signed message again
        await submit(harness, consent(deployment, alice, True, 1))
    assert isinstance(err.value.cause, ApplicationError) and err.value.cause.type == CONSENT_REPLAYED

    async def sessions() -> list[dict[str, str]]:
        send(gate.udp_port, f"{METRIC}:42|g|#node:n1,user:{alice.address}",
             f"{METRIC}:7|g|#node:n1,user:{bob.address}")  # bob never consented: dropped at the gate
        return [x for x in await session_series(prometheus) if x not in earlier]

    kept = await eventually(sessions, lambda s: len(s) >= 1, timeout=30)
    assert len(kept) == 1 and kept[0]["user"].startswith("p1_")  # pseudonymised, never the address
    assert gate.state.gate is not None and gate.state.gate.counters.dropped["no_consent"] >= 1

    receipt = await submit(harness, consent(deployment, alice, False, 2))
    assert receipt.applied.gate == "withdrawn" and receipt.applied.gate_series_purged == 1
    assert receipt.applied.prometheus_series_purged == 1 and 0 < receipt.applied.purge_seconds < 10
    print(f"withdrawal purge (gate + Prometheus delete_series + clean_tombstones): "
          f"{receipt.applied.purge_seconds * 1000:.0f} ms")
    send(gate.udp_port, f"{METRIC}:43|g|#node:n1,user:{alice.address}")  # after withdrawal: dropped
    async with httpx.AsyncClient() as http:  # no sample of alice's is left in the TSDB (her series' empty index
        left = (await http.get(f"{prometheus.url}/api/v1/query", params={  # entry goes at the next head GC)
            "query": f"count_over_time({METRIC}[1h])"})).json()["data"]["result"]
    assert left == []
    entry = (await audited(harness.resources, "charter.consent.withdrawn"))[-1]
    assert entry.subject == alice.address.lower() and entry.payload["prometheus_series_purged"] == 1
    state = await harness.client.get_workflow_handle(keys.consent_id(alice.address)).query(
        CharterConsentWorkflow.state)
    assert state.granted == [] and state.last_nonce == 2
    await harness.client.get_workflow_handle(keys.consent_id(alice.address)).terminate("test over")


async def test_a_restarted_gate_gets_the_consents_in_force(harness: Harness, deployment: Deployment,
                                                           prometheus: PrometheusServer,
                                                           gate: charter_gate.RunningGate) -> None:
    """The gate opens no database: after a restart it knows no consent until the charter sync's enforce activity
    pushes the store's consents in force with the charter; then the consented series passes again, the other not."""
    dave, erin = Account.create("dave"), Account.create("erin")
    await submit(harness, consent(deployment, dave, True, 1))
    await submit(harness, consent(deployment, erin, True, 1))
    await submit(harness, consent(deployment, erin, False, 2))  # erin withdrew: not in force
    s = harness.settings
    await gate.close()
    restarted = await charter_gate.start(s, kernel=False)
    try:
        assert restarted.state.status()["consents"] == {"loaded": False, "in_force": 0}
        content = s.charter_file.read_bytes()
        async with httpx.AsyncClient(timeout=10) as http:
            enforcement = CharterEnforcement(http, s.charter_file, s.charter_gate_url, charter_gate_token_file(s),
                                             config_file(prometheus), prometheus.url,
                                             CharterStore(harness.resources.database).consents_in_force)
            result = await enforcement.enforce(CharterEnforceInput(
                version=load_charter(content).metadata.version, policy_hash=charter_hash(content)))
            gate_layer = next(x for x in result.layers if x.layer == "gate")
            assert gate_layer.state == "applied" and "1 consents in force loaded" in gate_layer.detail, result
            again = await enforcement.enforce(CharterEnforceInput(
                version=load_charter(content).metadata.version, policy_hash=charter_hash(content)))
            assert "consents" not in next(x for x in again.layers if x.layer == "gate").detail  # loaded once
        assert restarted.state.status()["consents"] == {"loaded": True, "in_force": 1}

        async def dave_now() -> list[dict[str, Any]]:
            send(restarted.udp_port, f"{METRIC}:99|g|#node:n2,user:{dave.address}",
                 f"{METRIC}:5|g|#node:n2,user:{erin.address}")
            async with httpx.AsyncClient() as http:
                data: list[dict[str, Any]] = (await http.get(f"{prometheus.url}/api/v1/query", params={
                    "query": METRIC})).json()["data"]["result"]
            return data

        result_now = await eventually(dave_now, lambda r: any(x["value"][1] == "99" for x in r), timeout=30)
        assert not any(x["value"][1] == "5" for x in result_now)  # erin's withdrawn consent was not revived
        assert restarted.state.gate is not None and restarted.state.gate.counters.dropped["no_consent"] >= 1
    finally:
        await restarted.close()
        for who in (dave, erin):
            await harness.client.get_workflow_handle(keys.consent_id(who.address)).terminate("test over")


async def test_retention_purge_deletes_what_outlived_it(harness: Harness, deployment: Deployment) -> None:
    store = CharterStore(harness.resources.database)
    carol = Account.create("carol")
    old = datetime.now(UTC) - timedelta(days=30)
    for nonce, grant in ((1, True), (2, False), (3, True)):
        req = consent(deployment, carol, grant, nonce)
        await store.record_consent(req, f"0x{nonce:064x}", "test", old if nonce < 3 else datetime.now(UTC))
    bundle = harness.settings.data_dir / "old.sealed"
    bundle.write_bytes(b"sealed")
    await store.record_export("export:old:1", carol.address, "00" * 32, "", str(bundle), old)
    result: RetentionPurgeResult = await harness.client.execute_workflow(
        RetentionPurgeWorkflow.run, id=f"{keys.RETENTION_PURGE_SCHEDULE}-test", task_queue=harness.task_queue)
    assert result.rows_by_table == {"charter_consents": 2, "charter_exports": 1} and result.bundles_deleted == 1
    assert not bundle.exists()
    charter = load_charter(harness.settings.charter_file.read_bytes())
    assert set(result.series_by_metric) == {m.name for m in charter.spec.metrics}
    assert [c.nonce for c in await store.consents_of(carol.address)] == [3]  # the message in force stays
    entry = (await audited(harness.resources, "charter.retention.purged"))[-1]
    assert entry.payload["rows_by_table"] == {"charter_consents": 2, "charter_exports": 1}


async def test_the_daily_schedule_runs_the_purge(harness: Harness) -> None:
    """The declared schedule, created for real and triggered now: the purge starts without input and is audited."""
    declared = next(d for d in DECLARED if d.schedule_id == keys.RETENTION_PURGE_SCHEDULE)
    assert declared.every == timedelta(days=1)
    sid = f"{keys.RETENTION_PURGE_SCHEDULE}-{uuid.uuid4().hex[:6]}"
    schedule = await harness.client.create_schedule(
        sid, _schedule(Declared(sid, declared.workflow, declared.every, declared.note), harness.task_queue))
    try:
        await schedule.trigger()

        async def first() -> str | None:
            async for wf in harness.client.list_workflows(
                    f'TaskQueue = "{harness.task_queue}" AND WorkflowId STARTS_WITH "{sid}"'):
                return wf.id
            return None

        wid = await eventually(first, lambda w: w is not None)
        assert wid is not None
        result = await harness.client.get_workflow_handle(wid, result_type=RetentionPurgeResult).result()
        assert METRIC in result.series_by_metric
        assert [e.seq for e in await audited(harness.resources, "charter.retention.purged")] == [result.audit_seq]
    finally:
        await schedule.delete()
