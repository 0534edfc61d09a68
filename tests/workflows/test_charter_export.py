"""DataExportWorkflow on a real Temporal server, anvil (the deployed Charter is the signature's domain), SQLite and
the session's Prometheus: the user signs, the bundle arrives sealed to their key and opens only with it, and holds
their consents and the audit entries naming them; a request signed by someone else is refused."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey
from temporalio.client import WorkflowFailureError

from activities.charter_rights import open_bundle
from tests.fixtures.harness import Harness
from tests.fixtures.prometheus import PrometheusServer
from tests.workflows.charter_rights_support import context, make_committee, write_charter
from westworld import keys
from westworld.chain import Deployment
from westworld.charter_data import ExportInput, ExportResult, read_bundle
from westworld.charter_rights import ExportRequest, sign_export
from westworld.errors import EXPORT_REFUSED
from workers.settings import charter_gate_key_file
from workflows.data_export import DataExportWorkflow

FAR = 2**40


@pytest.fixture
def settings_overrides(prometheus: PrometheusServer, tmp_path: Path) -> dict[str, Any]:
    charter = write_charter(tmp_path / "charter.yaml", make_committee())
    return {"charter_file": charter, "prometheus_url": prometheus.url, "ipfs_api_url": "http://127.0.0.1:9"}


def signed(deployment: Deployment, subject_key: str, signer_key: str, public_key: bytes, nonce: int) -> ExportRequest:
    subject = Account.from_key(subject_key).address
    req = ExportRequest(subject=subject, public_key=public_key.hex(), nonce=nonce, expiry=FAR)
    return req.model_copy(update={"signature": sign_export(req, context(deployment), signer_key)})


async def test_export_delivered_sealed_to_the_user(harness: Harness, deployment: Deployment) -> None:
    # the gate's pseudonym key, as `up` makes it
    charter_gate_key_file(harness.settings).write_text(secrets.token_hex(32))
    user = Account.create("export-user")
    user_box = PrivateKey.generate()
    await harness.resources.audit.append("shelter.access.requested", "req-1", {"requester": user.address})
    req = signed(deployment, user.key.hex(), user.key.hex(), bytes(user_box.public_key), nonce=1)
    result: ExportResult = await harness.client.execute_workflow(
        DataExportWorkflow.run, ExportInput(request=req), id=keys.export_id(user.address, 1),
        task_queue=harness.task_queue)
    assert not result.overdue
    sealed = Path(result.delivery.file).read_bytes()
    with pytest.raises(CryptoError):
        open_bundle(sealed, bytes(PrivateKey.generate()))  # nobody else opens it
    bundle = read_bundle(open_bundle(sealed, bytes(user_box)))
    assert bundle["subject"] == user.address.lower()
    sections = {s["name"]: s for s in bundle["sections"]}
    assert set(sections) == {"votes", "consents", "shelter_requests", "audit_entries", "metric_series"}
    assert all(s["what"] and s["retention"] for s in sections.values())
    kinds = [e["kind"] for e in sections["audit_entries"]["rows"]]
    assert "shelter.access.requested" in kinds and "charter.export.requested" in kinds
    assert [e["kind"] for e in sections["shelter_requests"]["rows"]] == ["shelter.access.requested"]
    assert "shelter_requests.csv" in bundle["csv_files"]
    history = json.dumps((await harness.client.get_workflow_handle(keys.export_id(user.address, 1))
                          .fetch_history()).to_json_dict())
    assert "req-1" not in history  # the records stay in the activity; only the digest and references travel


async def test_export_signed_by_someone_else_is_refused(harness: Harness, deployment: Deployment) -> None:
    user, thief = Account.create("victim"), Account.create("thief")
    req = signed(deployment, user.key.hex(), thief.key.hex(), bytes(PrivateKey.generate().public_key), nonce=7)
    with pytest.raises(WorkflowFailureError) as err:
        await harness.client.execute_workflow(
            DataExportWorkflow.run, ExportInput(request=req), id=keys.export_id(user.address, 7),
            task_queue=harness.task_queue)
    cause = err.value.cause
    assert getattr(cause, "type", None) == EXPORT_REFUSED
    assert "only the subject may ask for their data" in str(cause)
