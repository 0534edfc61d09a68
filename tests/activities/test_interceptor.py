"""The worker's error interceptor on a real Temporal server: an activity's PermanentError fails it at once with its
type and message (one attempt, whatever the retry policy allows); a TransientError is retried with its type.
The worker the project runs registers it in ``workers/worker.py`` ``build_worker`` (every workflow test's worker)."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Interceptor, Worker

from westworld.errors import CHAIN_NOT_READY, VOTE_NO_POWER, ChainNotReady, InvalidInput, VoteRejected
from workers.interceptors import TypedFailureInterceptor
from workers.metrics import Metrics, MetricsInterceptor
from workflows.runner_sandbox import workflow_runner

ATTEMPTS: Counter[str] = Counter()


@activity.defn(name="refuse_input")
async def refuse_input(key: str) -> str:
    ATTEMPTS[key] += 1
    raise InvalidInput(f"{key}: field 'x' is not a number")


@activity.defn(name="refuse_vote")
def refuse_vote(key: str) -> str:  # a sync activity (thread pool) goes through the same interceptor
    ATTEMPTS[key] += 1
    raise VoteRejected(f"{key} had no voting power", type=VOTE_NO_POWER)


@activity.defn(name="not_ready_twice")
async def not_ready_twice(key: str) -> str:
    ATTEMPTS[key] += 1
    if ATTEMPTS[key] < 3:
        raise ChainNotReady(f"{key}: chain time has not passed the snapshot yet", delay=timedelta(milliseconds=50))
    return f"ready after {ATTEMPTS[key]} attempts"


@workflow.defn(sandboxed=False)
class CallOnceWorkflow:
    @workflow.run
    async def run(self, name: str, key: str) -> str:
        return str(await workflow.execute_activity(
            name, key, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_attempts=5)))


async def _run(client: Client, worker_interceptors: list[Interceptor], name: str) -> str:
    key = f"{name}-{uuid.uuid4().hex[:8]}"
    queue = f"interceptor-{uuid.uuid4()}"
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        async with Worker(client, task_queue=queue, workflows=[CallOnceWorkflow],
                          activities=[refuse_input, refuse_vote, not_ready_twice], activity_executor=pool,
                          interceptors=worker_interceptors, workflow_runner=workflow_runner()):
            try:
                return await client.execute_workflow(CallOnceWorkflow.run, args=[name, key], id=key,
                                                     task_queue=queue, execution_timeout=timedelta(seconds=60))
            finally:
                ATTEMPTS[name] = ATTEMPTS.pop(key, 0)


def _cause(err: pytest.ExceptionInfo[WorkflowFailureError]) -> ApplicationError:
    activity_error = err.value.cause
    assert isinstance(activity_error, ActivityError), activity_error
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


@pytest.mark.parametrize(("name", "type_", "words"), [
    ("refuse_input", "InvalidInput", "field 'x' is not a number"),
    ("refuse_vote", VOTE_NO_POWER, "had no voting power"),
])
async def test_a_permanent_error_fails_the_activity_once_with_its_type(temporal_client: Client, name: str,
                                                                       type_: str, words: str) -> None:
    with pytest.raises(WorkflowFailureError) as err:
        await _run(temporal_client, [TypedFailureInterceptor()], name)
    cause = _cause(err)
    assert (cause.type, cause.non_retryable) == (type_, True)
    assert words in cause.message
    assert ATTEMPTS[name] == 1  # the retry policy allowed 5


async def test_a_transient_error_is_retried_with_its_type(temporal_client: Client) -> None:
    metrics = Metrics()
    got = await _run(temporal_client, [MetricsInterceptor(metrics), TypedFailureInterceptor()], "not_ready_twice")
    assert got == "ready after 3 attempts"
    failed = metrics.registry.get_sample_value(
        "westworld_activity_errors_total", {"activity": "not_ready_twice", "type": CHAIN_NOT_READY})
    assert failed == 2  # each failed attempt counted under the error's type, as before


async def test_without_the_interceptor_a_permanent_error_would_be_retried(temporal_client: Client) -> None:
    """The control: the SDK alone retries any exception, so the one attempt above is the interceptor's doing."""
    with pytest.raises(WorkflowFailureError) as err:
        await _run(temporal_client, [], "refuse_input")
    cause = _cause(err)
    assert (cause.type, cause.non_retryable) == ("InvalidInput", False)
    assert ATTEMPTS["refuse_input"] == 5
