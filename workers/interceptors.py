"""The worker's error interceptor: the one place a ``WestworldError`` raised in an activity becomes an
``ApplicationError``.

A :class:`~westworld.errors.PermanentError` becomes a non-retryable ``ApplicationError`` (one attempt, whatever the
caller's retry policy); a :class:`~westworld.errors.TransientError` a retryable one (after its ``delay`` if it names
one). Both carry the error's ``type`` constant and its message, so a workflow (and a person reading the failure)
sees ``InvalidInput: experiment name 'X' is not a DNS label``, not a Python class name. Anything else is left as
it is: an unexpected exception is retried, as Temporal does by default.
"""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from westworld.errors import TransientError, WestworldError


def application_error(err: WestworldError) -> ApplicationError:
    """What an activity's typed error looks like to the workflow: same type, same message."""
    if isinstance(err, TransientError):
        return ApplicationError(err.message, type=err.type, next_retry_delay=err.delay)
    return ApplicationError(err.message, type=err.type, non_retryable=True)


class TypedFailureInterceptor(Interceptor):
    """Worker interceptor turning the activities' ``WestworldError`` into typed ``ApplicationError``."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap activity execution."""
        return _TypedFailures(next)


class _TypedFailures(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except WestworldError as err:
            raise application_error(err) from err
