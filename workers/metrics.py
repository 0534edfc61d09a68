"""Worker metrics: the Temporal SDK's own on one port, the project's counters on the next.

The SDK's Rust core binds its own Prometheus endpoint, so the two cannot share a port: the SDK's metrics
are on ``settings.worker_metrics_port`` and the project's counters (:class:`Metrics`, in a dedicated
registry, never the process-global one) on ``settings.worker_metrics_port + 1``. Both serve ``/metrics``.
"""

from __future__ import annotations

import threading
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, start_http_server
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from workers.settings import Settings

BIND_HOST = "127.0.0.1"


def make_runtime(settings: Settings, host: str = BIND_HOST) -> Runtime:
    """A Temporal runtime exporting the SDK's metrics on ``host:settings.worker_metrics_port``."""
    prometheus = PrometheusConfig(bind_address=f"{host}:{settings.worker_metrics_port}")
    return Runtime(telemetry=TelemetryConfig(metrics=prometheus))


class Metrics:
    """The project's own counters, in their own registry.

    Args:
        registry: Where the counters are registered; a fresh registry if not given, so several instances
            (one per worker, one per test) never collide.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.votes_accepted = Counter(
            "westworld_votes_accepted", "Votes accepted and recorded.", registry=self.registry
        )
        self.votes_rejected = Counter(
            "westworld_votes_rejected", "Votes refused, by reason.", ["reason"], registry=self.registry
        )
        self.audit_appends = Counter(
            "westworld_audit_appends", "Entries appended to the audit log.", registry=self.registry
        )
        self.audit_append_failures = Counter(
            "westworld_audit_append_failures", "Failed audit log appends.", registry=self.registry
        )
        self.activity_errors = Counter(
            "westworld_activity_errors",
            "Activity attempts that raised, by activity type and error type.",
            ["activity", "type"],
            registry=self.registry,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def vote_accepted(self) -> None:
        """Count one accepted vote."""
        self.votes_accepted.inc()

    def vote_rejected(self, reason: str) -> None:
        """Count one refused vote (``reason`` should be an error type constant: few distinct values)."""
        self.votes_rejected.labels(reason=reason).inc()

    def audit_appended(self) -> None:
        """Count one audit log append."""
        self.audit_appends.inc()

    def audit_append_failed(self) -> None:
        """Count one failed audit log append."""
        self.audit_append_failures.inc()

    def activity_failed(self, activity_type: str, error_type: str) -> None:
        """Count one failed activity attempt."""
        self.activity_errors.labels(activity=activity_type, type=error_type).inc()

    def serve(self, port: int, host: str = BIND_HOST) -> None:
        """Expose the counters on ``http://host:port/metrics`` from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("metrics are already served")
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)

    @property
    def port(self) -> int | None:
        """The port served on, if serving."""
        return None if self._server is None else int(self._server.server_port)

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def start_own_metrics(settings: Settings, metrics: Metrics | None = None, host: str = BIND_HOST) -> Metrics:
    """Serve the project's counters on ``host:settings.worker_metrics_port + 1``.

    Args:
        settings: Where the port comes from.
        metrics: The counters to expose; new ones if not given.
        host: Address to bind.

    Returns:
        The served counters (hand them to :class:`MetricsInterceptor` and the activities).
    """
    metrics = metrics if metrics is not None else Metrics()
    metrics.serve(settings.worker_metrics_port + 1, host)
    return metrics


def error_type(err: BaseException) -> str:
    """The label for an error: an ``ApplicationError``'s type, else the exception class name."""
    if isinstance(err, ApplicationError) and err.type:
        return err.type
    return type(err).__name__


class MetricsInterceptor(Interceptor):
    """Worker interceptor counting failed activity attempts in ``westworld_activity_errors_total``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap activity execution."""
        return _FailedAttemptCounter(next, self.metrics)


class _FailedAttemptCounter(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, metrics: Metrics) -> None:
        super().__init__(next)
        self._metrics = metrics

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except Exception as err:  # cancellation is a BaseException and is not counted
            self._metrics.activity_failed(activity.info().activity_type, error_type(err))
            raise
