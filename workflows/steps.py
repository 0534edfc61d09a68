"""Search attributes every workflow publishes, so `westworld stuck` and the UI find what waits and why."""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

from westworld import keys
from westworld.keys import SEARCH_ATTRIBUTES

STEP = SearchAttributeKey.for_keyword(keys.STEP_ATTR)
STEP_SINCE = SearchAttributeKey.for_datetime(keys.STEP_SINCE_ATTR)
PROPOSAL_ID = SearchAttributeKey.for_keyword(keys.PROPOSAL_ID_ATTR)
VOTE_STATE = SearchAttributeKey.for_keyword(keys.VOTE_STATE_ATTR)
DOCUMENT_ID = SearchAttributeKey.for_keyword(keys.DOCUMENT_ID_ATTR)
EXPERIMENT_NAME = SearchAttributeKey.for_keyword(keys.EXPERIMENT_NAME_ATTR)
AGENT_ID = SearchAttributeKey.for_keyword(keys.AGENT_ID_ATTR)

__all__ = ["AGENT_ID", "DOCUMENT_ID", "EXPERIMENT_NAME", "PROPOSAL_ID", "SEARCH_ATTRIBUTES", "STEP", "STEP_SINCE",
           "VOTE_STATE", "set_step"]


def set_step(step: str, *extra: SearchAttributeUpdate[str]) -> None:
    """Publish the current step and since when (workflow time), plus any of the part's own keys."""
    workflow.upsert_search_attributes([STEP.value_set(step), STEP_SINCE.value_set(workflow.now()), *extra])
