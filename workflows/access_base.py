"""What the two access workflows (``DocumentAccessWorkflow``, ``EmergencyAccessWorkflow``) share.

:class:`AccessWorkflowBase` holds one request's state (the ``ShareBox``, decision, step, deadline, vote) and its
handlers: the ``submit_share`` update with its validator and the ``status`` and ``share_task`` queries. The SDK
registers handlers a ``@workflow.defn`` class inherits (it collects them with ``inspect.getmembers``), so each
subclass only adds its ``@workflow.init``/``@workflow.run`` and the few words and waits that differ (hooks below).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from westworld import keys
    from westworld.errors import WestworldError
    from westworld.notify import GuardianNotice
    from westworld.policy import NetworkPolicy
    from westworld.shelter import DocumentRecord
    from westworld.shelter_access import (
        AccessDecision,
        AccessRequest,
        AccessResult,
        AccessState,
        ShareSubmission,
        ShareTask,
        VoteTerms,
        access_terms,
    )
    from westworld.vote import DaoVoteInput, DaoVoteResult, Proposal, VoteKind
    from workflows.dao_vote import DaoVoteWorkflow
    from workflows.shelter_shares import STORE_RETRY, ShareBox, audit, epoch_for, load_document, notify, refusal
    from workflows.steps import DOCUMENT_ID, set_step


POLICY_PATCH = "access-terms-from-policy"  # runs started before it took the requester's terms as given
LEGACY_QUORUM, LEGACY_APPROVAL = Decimal("0.04"), Decimal("0.5")  # VoteTerms' defaults before the policy


async def load_policy() -> NetworkPolicy:
    """The network policy in force (the activity refuses a policy file whose hash the DAO did not put on chain)."""
    policy: NetworkPolicy = await workflow.execute_activity(
        "load_policy", result_type=NetworkPolicy, start_to_close_timeout=timedelta(seconds=30),
        retry_policy=STORE_RETRY)
    return policy


def refused_by_policy(err: WestworldError) -> ApplicationError:
    return ApplicationError(err.message, type=err.type, non_retryable=True)


def access_vote_input(r: AccessRequest, terms: VoteTerms, kind: VoteKind, early_close: bool = True) -> DaoVoteInput:
    return DaoVoteInput(
        proposal=Proposal(
            id=keys.access_proposal_id(r.request_id, emergency=kind is VoteKind.EMERGENCY),
            title=f"{'EMERGENCY: ' if kind is VoteKind.EMERGENCY else ''}open document {r.document_id} "
                  f"for {r.requester}"[:200],
            body=f"Reason given: {r.reason}\n\nRequest {r.request_id}; if approved, {r.requester} may "
                 "reconstruct the shelter key locally from k guardians' shares.",
        ),
        kind=kind, voting_window=terms.voting_window,
        quorum=LEGACY_QUORUM if terms.quorum is None else terms.quorum,
        approval_threshold=LEGACY_APPROVAL if terms.approval_threshold is None else terms.approval_threshold,
        backend=terms.backend, early_close=early_close,
    )


class AccessWorkflowBase:
    """One access request's state and handlers; subclasses run it and word the reminders."""

    KIND: ClassVar[str]
    AUDIT: ClassVar[str]  # audit kinds are ``<AUDIT>.requested`` and ``<AUDIT>.<decision>``

    def __init__(self, request: AccessRequest, reminder_every: timedelta) -> None:
        self._request = request
        self._reminder_every = reminder_every
        self._box = ShareBox(workflow.info().workflow_id, request.request_id)
        self._decision = AccessDecision.PENDING
        self._step = "checking request"
        self._deadline: datetime | None = None
        self._vote: DaoVoteResult | None = None
        self._document: DocumentRecord | None = None
        self._reminders = 0

    # -- hooks -------------------------------------------------------------------------------------
    def _share_step(self) -> str:
        """The step shown while shares come in."""
        raise NotImplementedError

    def _reminder_message(self) -> str:
        raise NotImplementedError

    def _reminder_pause(self) -> timedelta:
        return self._reminder_every

    def _refuse_if_not_collecting(self) -> None:
        """For the validator: raise if this request takes no shares yet (default: it takes them from the start)."""

    def _audit_extra(self) -> dict[str, Any]:
        """More fields for the decision's audit entry."""
        return {}

    # -- steps -------------------------------------------------------------------------------------
    async def _terms_in_force(self, vote: VoteTerms, kind: VoteKind, *, share_window: timedelta | None = None,
                              window: timedelta | None = None) -> VoteTerms:
        """The vote terms under the network policy; a request asking looser fails here, before anything is done
        (``LooserThanPolicy``, non-retryable, naming the policy's limit)."""
        policy = await load_policy()
        try:
            return access_terms(policy, workflow.info().workflow_id, vote, kind, reminder_every=self._reminder_every,
                                share_window=share_window, window=window)
        except WestworldError as err:
            raise refused_by_policy(err) from err

    async def _open_request(self, **extra: Any) -> AccessResult | None:
        """Load the document and its live key epoch and audit the request; the refusal's result if that fails."""
        r = self._request
        self._step_to("checking request", AccessDecision.PENDING)
        try:
            self._document = await load_document(r.document_id)
            self._box.epoch = await epoch_for(self._document)
        except (ActivityError, ApplicationError) as err:  # unknown document, key not held: refused, audited
            return await self._finish(AccessDecision.DENIED, f"refused: {refusal(err)}")
        await audit(f"{self.AUDIT}.requested", r.request_id, {
            "kind": self.KIND, "document_id": r.document_id, "requester": r.requester, "reason": r.reason,
            "requester_public_key": r.requester_public_key, "epoch": self._box.epoch.epoch, **extra,
        })
        return None

    async def _start_vote(
        self, terms: VoteTerms, kind: VoteKind,
    ) -> workflow.ChildWorkflowHandle[DaoVoteWorkflow, DaoVoteResult]:
        vote_input = access_vote_input(self._request, terms, kind)
        return await workflow.start_child_workflow(
            DaoVoteWorkflow.run, vote_input, id=keys.vote_id(vote_input.proposal.id),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )

    async def _remind(self) -> None:
        """Remind the guardians who have not answered, every ``_reminder_pause()``, until the deadline."""
        assert self._deadline is not None
        r = self._request
        while not self._box.full and workflow.now() < self._deadline:
            await notify(GuardianNotice(
                workflow_id=workflow.info().workflow_id, request_id=r.request_id, document_id=r.document_id,
                kind=self.KIND, guardians=self._box.waiting_for(), deadline=self._deadline,
                reminder=self._reminders, message=self._reminder_message(),
            ))
            self._reminders += 1
            await workflow.sleep(self._reminder_pause())

    async def _finish(self, decision: AccessDecision, reason: str) -> AccessResult:
        self._step_to("recording decision", decision)
        epoch = self._box.epoch
        seq = await audit(f"{self.AUDIT}.{decision.value}", self._request.request_id, {
            "kind": self.KIND, "document_id": self._request.document_id, "reason": reason,
            "guardians": sorted(self._box.accepted), "vote_decision": self._vote.decision if self._vote else None,
            **self._audit_extra(),
        })
        self._step_to("done", decision)
        return AccessResult(
            request=self._request, kind=self.KIND, decision=decision, reason=reason,
            epoch=epoch.epoch if epoch else None, threshold=epoch.threshold if epoch else None,
            salt=epoch.salt if epoch else None, commitments=epoch.commitments() if epoch else {},
            master_public_key=epoch.master_public_key if epoch else None, document=self._document,
            shares=list(self._box.accepted.values()) if decision is AccessDecision.GRANTED else [],
            vote=self._vote, audit_seq=seq,
        )

    def _step_to(self, step: str, decision: AccessDecision) -> None:
        self._step, self._decision = step, decision
        set_step(step, DOCUMENT_ID.value_set(self._request.document_id))

    # -- handlers ----------------------------------------------------------------------------------
    @workflow.update
    async def submit_share(self, sub: ShareSubmission) -> int:
        """Accept a guardian's share sealed to the requester; returns how many shares are in."""
        n = self._box.accept(sub)
        self._step_to(self._share_step(), AccessDecision.COLLECTING)
        return n

    @submit_share.validator
    def _validate_share(self, sub: ShareSubmission) -> None:
        self._refuse_if_not_collecting()
        self._box.check(sub, self._deadline)

    @workflow.query
    def status(self) -> AccessState:
        epoch = self._box.epoch
        return AccessState(
            request=self._request, kind=self.KIND, decision=self._decision, step=self._step,
            deadline=self._deadline, epoch=epoch.epoch if epoch else None,
            threshold=epoch.threshold if epoch else None, submitted=sorted(self._box.accepted),
            waiting_for=self._box.waiting_for(), vote_decision=self._vote.decision if self._vote else None,
        )

    @workflow.query
    def share_task(self, guardian_id: str) -> ShareTask | None:
        """What guardian ``guardian_id`` needs to answer (None if not a guardian of the epoch)."""
        return self._box.task(guardian_id, self._request.requester_public_key)
