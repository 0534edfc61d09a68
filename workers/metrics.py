"""Metrics: the SDK's on ``worker_metrics_port``, the project's own counters on the next port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, start_http_server
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from workers.settings import Settings


class Metrics:
    """The worker's own counters, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.votes_accepted = Counter("westworld_votes_accepted", "Votes weighed and stored.",
                                      registry=self.registry)
        self.votes_rejected = Counter("westworld_votes_rejected", "Votes refused by the store or the chain.",
                                      ["reason"], registry=self.registry)
        self.audit_appends = Counter("westworld_audit_appends", "Audit log entries appended.",
                                     registry=self.registry)
        self.audit_failures = Counter("westworld_audit_append_failures", "Audit appends that failed.",
                                      registry=self.registry)


METRICS = Metrics()


def make_runtime(settings: Settings) -> Runtime:
    return Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(bind_address=f"127.0.0.1:{settings.worker_metrics_port}")))


def start_own_metrics(settings: Settings, metrics: Metrics = METRICS) -> None:
    start_http_server(settings.worker_metrics_port + 1, addr="127.0.0.1", registry=metrics.registry)
