"""StoreDocumentWorkflow: encrypt a staged document and replicate its ciphertext to IPFS, Arweave and Sia.

encrypt (the activity reads the plaintext the CLI staged, wraps a fresh data key to the key epoch's master public
key, indexes the document, deletes the staging file) → replicate to each requested network in parallel (each
replica read back and hashed) → audit. History holds only public data: ids, hashes, locators, sealed boxes.
A network that is not configured (Sia without renterd) or fails is recorded as such; fewer verified replicas
than ``min_good_replicas`` fail the workflow, after auditing it (the index keeps the document, so the replica
audit can complete it later).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld.errors import REPLICATION_FAILED
    from westworld.shelter import (
        EncryptDocumentInput,
        EncryptedDocument,
        Network,
        ReplicaRef,
        ReplicaState,
        ReplicateInput,
        StoreDocumentInput,
        StoreDocumentState,
        StoreStep,
    )
    from workflows.audit import append_audit
    from workflows.steps import DOCUMENT_ID, set_step

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                    maximum_attempts=8)


def failure_text(err: BaseException) -> str:
    cause = err.cause if isinstance(err, ActivityError) and err.cause is not None else err
    return str(cause)[:500]


@workflow.defn
class StoreDocumentWorkflow:
    """One document. Workflow id: ``document:<document id>``."""

    def __init__(self) -> None:
        self._state: StoreDocumentState | None = None

    def _step(self, step: StoreStep) -> None:
        assert self._state is not None
        self._state.step = step
        set_step(step.value)

    @workflow.query
    def status(self) -> StoreDocumentState:
        assert self._state is not None
        return self._state

    @workflow.run
    async def run(self, inp: StoreDocumentInput) -> StoreDocumentState:
        self._state = StoreDocumentState(document_id=inp.document_id, step=StoreStep.ENCRYPTING)
        set_step(StoreStep.ENCRYPTING.value, DOCUMENT_ID.value_set(inp.document_id))
        try:
            doc = await workflow.execute_activity(
                "encrypt_document", EncryptDocumentInput(document_id=inp.document_id, title=inp.title),
                result_type=EncryptedDocument, start_to_close_timeout=inp.encrypt_timeout, retry_policy=RETRY,
            )
        except ActivityError as err:
            self._state.error = failure_text(err)
            self._step(StoreStep.FAILED)
            raise
        self._state.ciphertext_sha256 = doc.ciphertext_sha256

        self._step(StoreStep.REPLICATING)
        networks = list(dict.fromkeys(inp.networks))
        results = await asyncio.gather(*(
            workflow.execute_activity(
                "replicate_document",
                ReplicateInput(document_id=doc.document_id, ciphertext_sha256=doc.ciphertext_sha256, network=net),
                result_type=ReplicaRef, start_to_close_timeout=inp.replicate_timeout,
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                                         maximum_attempts=inp.replicate_attempts),
            ) for net in networks), return_exceptions=True)
        replicas: list[ReplicaRef] = []
        for net, res in zip(networks, results, strict=True):
            if isinstance(res, ReplicaRef):
                replicas.append(res)
            elif isinstance(res, ActivityError):
                replicas.append(ReplicaRef(network=Network(net), locator="", sha256="", ok=False,
                                           state=ReplicaState.UNREACHABLE, detail=failure_text(res)))
            elif isinstance(res, BaseException):
                raise res
        self._state.replicas = replicas
        good = [r for r in replicas if r.ok]

        self._step(StoreStep.INDEXING)
        stored = len(good) >= inp.min_good_replicas
        await append_audit("shelter.document.stored" if stored else "shelter.document.store_failed", doc.document_id, {
                                "key_epoch": doc.key_epoch, "ciphertext_sha256": doc.ciphertext_sha256,
                                "size": doc.size,
                                "replicas": [{"network": r.network.value, "locator": r.locator,
                                              "state": r.state.value} for r in replicas]})
        if not stored:
            self._state.error = (f"{len(good)} verified replica(s) of {doc.document_id}, "
                                 f"{inp.min_good_replicas} required: "
                                 + "; ".join(f"{r.network.value}: {r.state.value} {r.detail}" for r in replicas))
            self._step(StoreStep.FAILED)
            raise ApplicationError(self._state.error, type=REPLICATION_FAILED, non_retryable=True)
        self._step(StoreStep.DONE)
        return self._state
