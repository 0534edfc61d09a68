"""CharterSyncWorkflow: keeps the charter the DAO put on chain in force at every enforcement point.

Each poll (a durable timer, ``poll_interval``; the ``sync_now`` signal wakes it early) reads the Charter contract
(``charter_on_chain``) and has ``charter_enforce`` load the charter file, refuse it unless its hash is the one on
chain, and push it to the gate, its kernel filter and the scrape rules. Audited: every application
(``charter.applied``, with what each layer did), every refusal (``charter.refused``, once per refused file and
version) and the drops counted since the last entry (``charter.drops``, by layer and reason). Only versions, hashes,
layer states and counts enter history; the file is read inside the activity.

Forbidden metrics seen (drops for a blocked or not whitelisted name, at the gate or in the kernel) open a violation
case (a ``ViolationReportWorkflow`` of source ``system``, sealed to the committee, counts only), at most one per
``forbidden_case_every`` (24 h); audited as ``charter.forbidden.case``.

Standing: workflow id ``charter-sync``, started by `westworld up`; it continues as new every
``continue_after_polls`` polls, handing over what it applied and audited.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from westworld.charter_sync import (
        FORBIDDEN_DROPS,
        CharterEnforceInput,
        CharterEnforceResult,
        CharterOnChain,
        CharterSyncInput,
        CharterSyncState,
        forbidden_report,
    )
    from workflows.audit import append_audit
    from workflows.steps import set_step
    from workflows.violation_report import open_system_case, seal_for_committee

READ_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
IN_FORCE = ("applied", "unchanged")
FORBIDDEN_CASES = "charter-sync-forbidden-cases"  # patch: forbidden metrics seen open a case


@workflow.defn
class CharterSyncWorkflow:
    @workflow.init
    def __init__(self, input: CharterSyncInput) -> None:
        self._state = CharterSyncState(applied_version=input.applied_version, applied_hash=input.applied_hash,
                                       violation_cases=list(input.violation_cases))
        self._input = input
        self._case_at = input.forbidden_case_at
        self._refused_key = input.refused_key
        self._audited = dict(input.audited_drops)
        self._poke = False

    @workflow.query
    def state(self) -> CharterSyncState:
        return self._state

    @workflow.signal
    def sync_now(self) -> None:
        """Poll now instead of at the next timer (after an amendment is executed)."""
        self._poke = True

    @workflow.run
    async def run(self, input: CharterSyncInput) -> None:
        set_step("syncing charter")
        for _ in range(input.continue_after_polls):
            await self._poll()
            self._poke = False
            with contextlib.suppress(TimeoutError):  # the timer ran out: the next poll is due
                await workflow.wait_condition(lambda: self._poke, timeout=input.poll_interval)
            if workflow.info().is_continue_as_new_suggested():
                break
        s = self._state
        workflow.continue_as_new(input.model_copy(update={
            "applied_version": s.applied_version, "applied_hash": s.applied_hash,
            "refused_key": self._refused_key, "audited_drops": self._audited, "forbidden_case_at": self._case_at,
            "violation_cases": s.violation_cases[-20:]}))

    async def _poll(self) -> None:
        chain: CharterOnChain = await workflow.execute_activity(
            "charter_on_chain", result_type=CharterOnChain, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=READ_RETRY)
        s = self._state
        s.polls += 1
        s.chain_version, s.chain_hash = chain.version, chain.policy_hash
        result: CharterEnforceResult = await workflow.execute_activity(
            "charter_enforce", CharterEnforceInput(version=chain.version, policy_hash=chain.policy_hash),
            result_type=CharterEnforceResult, start_to_close_timeout=timedelta(seconds=60), retry_policy=READ_RETRY)
        subject = f"charter:v{chain.version}"
        if result.refused:
            s.refused = result.refused
            key = f"{chain.version}:{chain.policy_hash}:{result.file_hash}"
            if key != self._refused_key:
                await append_audit("charter.refused", subject, {
                    "version": chain.version, "policy_hash": chain.policy_hash, "file_hash": result.file_hash,
                    "reason": result.refused, "in_force": {"version": s.applied_version, "hash": s.applied_hash}})
                self._refused_key = key
        else:
            s.refused, self._refused_key = "", ""
            s.layers = result.layers
            gate_in_force = any(x.layer == "gate" and x.state in IN_FORCE for x in result.layers)
            new = (chain.version, chain.policy_hash) != (s.applied_version, s.applied_hash)
            if gate_in_force and (new or result.changed):
                await append_audit("charter.applied", subject, {
                    "version": chain.version, "policy_hash": chain.policy_hash, "names": result.names,
                    "layers": [x.model_dump() for x in result.layers],
                    "previous": {"version": s.applied_version, "hash": s.applied_hash}})
                s.applied_version, s.applied_hash = chain.version, chain.policy_hash
        await self._audit_drops(subject, result.drops, chain.version)

    async def _audit_drops(self, subject: str, drops: dict[str, int], version: int) -> None:
        if any(v < self._audited.get(k, 0) for k, v in drops.items()):
            self._audited = {}  # the gate restarted: its counters began again
        delta = {k: v - self._audited.get(k, 0) for k, v in sorted(drops.items()) if v > self._audited.get(k, 0)}
        if delta:
            await append_audit("charter.drops", subject, {"dropped_since_last_entry": delta, "totals": drops})
            self._audited = dict(drops)
            in_force = self._state.applied_version > 0 and not self._state.refused  # a closed gate drops all
            if in_force and FORBIDDEN_DROPS & delta.keys() and workflow.patched(FORBIDDEN_CASES):
                await self._forbidden_case(subject, delta, drops, version)

    async def _forbidden_case(self, subject: str, delta: dict[str, int], drops: dict[str, int], version: int) -> None:
        """Open a violation case for forbidden metrics seen, unless one was opened within the period."""
        now = workflow.now()
        if self._case_at is not None and now - self._case_at < self._input.forbidden_case_every:
            return
        self._case_at = now
        forbidden = {k: v for k, v in delta.items() if k in FORBIDDEN_DROPS}
        try:
            sealed = await seal_for_committee(forbidden_report(delta, drops, version))
        except ActivityError as err:  # e.g. the charter names no committee key: say so, keep enforcing
            reason = str(err.cause or err)
            self._state.case_problem = reason
            await append_audit("charter.forbidden.uncased", subject, {
                "reason": reason, "forbidden_since_last_entry": forbidden})
            return
        self._state.case_problem = ""
        info = workflow.info()
        case = await open_system_case(sealed, info.workflow_id, info.run_id, self._state.polls)
        self._state.violation_cases.append(case)
        await append_audit("charter.forbidden.case", subject, {"case": case, "forbidden_since_last_entry": forbidden})
