"""Wiring of the experiments part (Cradle: experiments in a sandbox, the judge, canary rollouts) into the worker.

``WORKFLOWS`` are registered on the worker; ``open_activities`` builds the part's activity classes with their
clients (opened here, closed when the worker stops) and yields the bound activity methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from activities.evidence import EvidenceActivities
from activities.http import HttpClient, open_http
from activities.prometheus import PrometheusActivities
from activities.sandbox.backend import SandboxActivities, SandboxBackend
from activities.sandbox.kube_api import client_from_kubeconfig
from activities.sandbox.kubernetes import KubernetesSandbox
from activities.sandbox.local import LocalSandbox
from activities.sql.audit_log import AuditLog
from activities.sql.database import Database
from westworld.sandbox import Backend
from workers.settings import Settings
from workflows.canary import CanaryRolloutWorkflow
from workflows.experiment import ExperimentWorkflow

WORKFLOWS: tuple[type, ...] = (ExperimentWorkflow, CanaryRolloutWorkflow)
KUBE_CONFIG_SETTING = "WESTWORLD_KUBE_CONFIG"
"""The environment setting of :attr:`Settings.kube_config`, named in every error that it fixes."""


def sandbox_backends(settings: Settings, http: HttpClient) -> dict[Backend, SandboxBackend]:
    """The sandbox backends this worker can reach (the local one always; kubernetes when ``kube_config`` is set)."""
    backends: dict[Backend, SandboxBackend] = {
        Backend.LOCAL: LocalSandbox(http, settings.data_dir, settings.prometheus_targets_dir,
                                    namespaces=settings.sandbox_namespaces),
    }
    if settings.kube_config:
        backends[Backend.KUBERNETES] = KubernetesSandbox(
            client_from_kubeconfig(settings.kube_config, KUBE_CONFIG_SETTING),
            source=f"{KUBE_CONFIG_SETTING}={settings.kube_config}")
    return backends


def sandbox_activities(settings: Settings, http: HttpClient) -> SandboxActivities:
    """The sandbox activities over :func:`sandbox_backends`; a backend not configured says which setting does it."""
    return SandboxActivities(sandbox_backends(settings, http), how_to_configure={
        Backend.KUBERNETES: f"set {KUBE_CONFIG_SETTING} to the cluster's kubeconfig file and restart the worker"})


@contextlib.asynccontextmanager
async def open_activities(settings: Settings, database: Database, audit: AuditLog) -> AsyncIterator[list[Any]]:
    del database, audit
    async with open_http(10.0) as http:
        sandbox = sandbox_activities(settings, http)
        prometheus = PrometheusActivities(http, settings.resolved_prometheus_url)
        evidence = EvidenceActivities(settings.data_dir / "evidence")
        yield [*sandbox.activities(), prometheus.collect_metrics, prometheus.query_metrics, prometheus.await_scraped,
               prometheus.watch_metrics,
               evidence.store_evidence]
