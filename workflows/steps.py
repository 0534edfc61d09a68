"""Search attributes every workflow publishes, so `westworld stuck` and the UI find what waits and why."""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

STEP = SearchAttributeKey.for_keyword("WestworldStep")
STEP_SINCE = SearchAttributeKey.for_datetime("WestworldStepSince")
PROPOSAL_ID = SearchAttributeKey.for_keyword("ProposalId")
VOTE_STATE = SearchAttributeKey.for_keyword("VoteState")
DOCUMENT_ID = SearchAttributeKey.for_keyword("DocumentId")

# Registered by `westworld up` and the test fixtures: name -> Temporal type name.
SEARCH_ATTRIBUTES: dict[str, str] = {
    STEP.name: "Keyword",
    STEP_SINCE.name: "Datetime",
    PROPOSAL_ID.name: "Keyword",
    VOTE_STATE.name: "Keyword",
    "ExperimentName": "Keyword",
    "AgentId": "Keyword",
    "DocumentId": "Keyword",
}


def set_step(step: str, *extra: SearchAttributeUpdate[str]) -> None:
    """Publish the current step and since when (workflow time), plus any of the part's own keys."""
    workflow.upsert_search_attributes([STEP.value_set(step), STEP_SINCE.value_set(workflow.now()), *extra])
