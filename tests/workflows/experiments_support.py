"""What the experiment and canary workflow tests share: the worker pointed at the session's real Prometheus
(its file_sd directory is where the worker's local sandboxes register their nodes), small specs, node checks."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.prometheus import PrometheusServer
from westworld.experiment import Direction, MetricSpec, Threshold
from westworld.sandbox import NodeRef

RELAY_ERRORS = MetricSpec(
    name="relay_errors", query="sum(rate(mesh_relay_errors_total{selector}[5s])) or vector(0)",
    threshold=Threshold(max=0.3), tolerance=0.5, critical=True)
DELIVERY = MetricSpec(
    name="delivery_ratio",
    query="sum(rate(mesh_messages_delivered_total{selector}[5s])) / sum(rate(mesh_messages_sent_total{selector}[5s]))",
    direction=Direction.HIGHER, threshold=Threshold(min=0.5), tolerance=0.05, failure_limit=2)


@pytest.fixture
def settings_overrides(prometheus: PrometheusServer, tmp_path: Path) -> dict[str, Any]:
    """The worker's sandboxes write their scrape targets where the session's Prometheus looks; userspace chaos
    (no network namespaces) keeps these tests quick on the shared machine."""
    link = tmp_path / "prometheus" / "targets"
    link.parent.mkdir(parents=True, exist_ok=True)
    prometheus.targets_dir.mkdir(parents=True, exist_ok=True)
    link.symlink_to(prometheus.targets_dir, target_is_directory=True)
    return {"prometheus_url": prometheus.url, "sandbox_namespaces": False}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def spec(name: str, version: str, *, duration: str = "8s", vote: bool = False, rollout: dict[str, Any] | None = None,
         metrics: list[dict[str, Any]] | None = None, chaos: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "objective": f"{version} is no worse than 1.4.0",
        "duration": duration, "interval": "1s", "dao_vote_required": vote,
        "baseline": {"version": "1.4.0"}, "workload": {"version": version, "nodes": 3},
        "chaos": chaos if chaos is not None else [
            {"kind": "latency", "start": "1s", "duration": "2s", "nodes": [0], "latency_ms": 5}],
        "metrics": metrics or [RELAY_ERRORS.model_dump(mode="json"), DELIVERY.model_dump(mode="json")],
        "judge": {"min_samples": 3},
        "vote": {"window": "72h"},  # the policy's quorum (0.04): a looser one fails the child vote's start
    }
    if rollout is not None:
        body["rollout"] = rollout
    return {"metadata": {"name": name}, "spec": body}


async def node_versions(nodes: list[NodeRef]) -> dict[str, str | None]:
    """Each node's version as its admin API reports it (None: it does not answer)."""
    out: dict[str, str | None] = {}
    async with httpx.AsyncClient(timeout=2.0) as http:
        for n in nodes:
            try:
                out[n.id] = (await http.get(f"{n.admin_url}/status")).json()["version"]
            except httpx.TransportError:
                out[n.id] = None
    return out
