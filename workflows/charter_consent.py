"""CharterConsentWorkflow: one data subject's consents, granted and withdrawn by signed EIP-712 messages.

One workflow per subject (id ``consent:<address>``), not one for everybody: a subject's messages are ordered by
their nonce, and one workflow per subject orders them without a lock (its updates run one at a time) while
different subjects never wait for each other; nobody's history grows with the whole population's, and the id is
the business key a client rebuilds from the address. Clients send with update-with-start, so the first message
starts it. The consents in force live in the store (the source of truth a new run reads back), never in an input.

The ``submit`` update's validator refuses, without touching history, a message not signed by its subject (nobody
grants for somebody else), for another subject, for a metric that is not consent-only in the charter in force,
expired, or with a nonce not above the subject's last (a replay). The handler records it (the store refuses a
reused nonce again, across runs), puts it in force at the gate and, for a withdrawal, purges the subject's series
of that metric at the gate and in Prometheus (timed), then audits it (``charter.consent.granted`` /
``charter.consent.withdrawn`` with the purge counts and seconds).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    from westworld.charter_consent import ConsentRequest, consent_hash, typed_data
    from westworld.charter_data import (
        ApplyConsentResult,
        ConsentInput,
        ConsentReceipt,
        ConsentRules,
        ConsentState,
        RecordConsentInput,
        SubjectConsents,
    )
    from westworld.errors import CONSENT_REJECTED, CONSENT_REPLAYED
    from workflows.audit import append_audit
    from workflows.steps import set_step

READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
APPLY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


def _refuse(message: str, type: str = CONSENT_REJECTED) -> ApplicationError:
    return ApplicationError(message, type=type, non_retryable=True)


def check_message(req: ConsentRequest, subject: str, rules: ConsentRules, last_nonce: int, now: int) -> str:
    """The message's EIP-712 hash if it may be accepted; a typed refusal otherwise (pure: validator and handler)."""
    if req.subject.lower() != subject.lower():
        raise _refuse(f"this is the consent workflow of {subject.lower()}, not of {req.subject.lower()}")
    if req.metric not in rules.consent_metrics:
        raise _refuse(f"{req.metric!r} is not a consent-only metric of charter v{rules.charter_version} "
                      f"(those are {rules.consent_metrics})")
    if req.expiry < now:
        raise _refuse(f"the consent message expired at {req.expiry} (now {now})")
    if req.nonce <= last_nonce:
        raise _refuse(f"nonce {req.nonce} is not above {last_nonce}, the last one {subject.lower()} used: a "
                      "signed message counts once", CONSENT_REPLAYED)
    try:
        signer = Account.recover_message(encode_typed_data(full_message=typed_data(req, rules.context)),
                                         signature=bytes.fromhex(req.signature.removeprefix("0x")))
    except Exception as exc:
        raise _refuse(f"the consent signature is malformed: {exc}") from None
    if signer.lower() != subject.lower():
        raise _refuse(f"the consent for {req.metric!r} is signed by {signer.lower()}, not by its subject "
                      f"{subject.lower()}: nobody grants or withdraws for somebody else")
    return consent_hash(req, rules.context)


@workflow.defn
class CharterConsentWorkflow:
    @workflow.init
    def __init__(self, input: ConsentInput) -> None:
        self._subject = input.subject.lower()
        self._rules: ConsentRules | None = None
        self._consents: SubjectConsents | None = None
        self._messages = 0
        self._busy = False

    @workflow.query
    def state(self) -> ConsentState:
        c = self._consents or SubjectConsents()
        return ConsentState(subject=self._subject, granted=c.granted, last_nonce=c.last_nonce,
                            messages=self._messages)

    @workflow.run
    async def run(self, input: ConsentInput) -> ConsentState:
        set_step("loading consents")
        self._rules = await workflow.execute_activity(
            "charter_consent_rules", result_type=ConsentRules, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=READ_RETRY)
        self._consents = await workflow.execute_activity(
            "charter_subject_consents", self._subject, result_type=SubjectConsents,
            start_to_close_timeout=timedelta(seconds=30), retry_policy=READ_RETRY)
        set_step("waiting for consent messages")
        await workflow.wait_condition(lambda: self._messages >= input.continue_after
                                      or workflow.info().is_continue_as_new_suggested())
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(ConsentInput(subject=self._subject, continue_after=input.continue_after))

    @workflow.update
    async def submit(self, req: ConsentRequest) -> ConsentReceipt:
        """Accept a signed grant or withdrawal; the receipt says what was purged and how fast."""
        await workflow.wait_condition(lambda: self._consents is not None and not self._busy)
        assert self._rules is not None and self._consents is not None
        self._busy = True  # one message at a time: nonces are checked against what is recorded
        try:
            digest = check_message(req, self._subject, self._rules, self._consents.last_nonce,
                                   int(workflow.now().timestamp()))
            await workflow.execute_activity(
                "charter_record_consent", RecordConsentInput(request=req, consent_hash=digest,
                                                             workflow_id=workflow.info().workflow_id),
                start_to_close_timeout=timedelta(seconds=30), retry_policy=READ_RETRY)
            self._consents.last_nonce = req.nonce
            applied = await workflow.execute_activity(
                "charter_apply_consent", req, result_type=ApplyConsentResult,
                start_to_close_timeout=timedelta(minutes=2), retry_policy=APPLY_RETRY)
            granted = set(self._consents.granted)
            (granted.add if req.grant else granted.discard)(req.metric)
            self._consents.granted = sorted(granted)
            self._messages += 1
            receipt = await append_audit(
                f"charter.consent.{'granted' if req.grant else 'withdrawn'}", self._subject, {
                    "metric": req.metric, "nonce": str(req.nonce), "consent_hash": digest,
                    "gate": applied.gate, "gate_series_purged": applied.gate_series_purged,
                    "prometheus_series_purged": applied.prometheus_series_purged,
                    "purge_seconds": applied.purge_seconds})
            return ConsentReceipt(consent_hash=digest, metric=req.metric, grant=req.grant, applied=applied,
                                  audit_seq=receipt.seq)
        finally:
            self._busy = False

    @submit.validator
    def _validate(self, req: ConsentRequest) -> None:
        if self._rules is None or self._consents is None:
            return  # the first message of update-with-start: the handler checks once the rules are read
        check_message(req, self._subject, self._rules, self._consents.last_nonce, int(workflow.now().timestamp()))
