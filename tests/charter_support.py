"""Test support shared by the charter sync and adversary tests: the gate's scrape job on the session's Prometheus,
the worker's charter settings, and reading the audit log and Prometheus's TSDB."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures.prometheus import PrometheusServer
from westworld.audit import AuditEntry
from westworld.charter_sync import CHARTER_JOB, fail_closed_relabel
from workers.stack import processes
from workers.worker import Resources


def config_file(prometheus: PrometheusServer) -> Path:
    return prometheus.targets_dir.parent / "prometheus.json"


def charter_settings(prometheus: PrometheusServer, **extra: Any) -> dict[str, Any]:
    """Worker settings: a gate on free loopback ports, the session's Prometheus config and URL."""
    return {"charter_gate_port": processes.free_port(), "charter_gate_udp_port": processes.free_port(),
            "prometheus_config_file": config_file(prometheus), "prometheus_url": prometheus.url, **extra}


def reload(prometheus: PrometheusServer) -> None:
    httpx.post(f"{prometheus.url}/-/reload", timeout=10).raise_for_status()


@contextlib.contextmanager
def gate_job(prometheus: PrometheusServer, targets: list[str]) -> Iterator[None]:
    """The session's Prometheus scrapes ``targets`` under the gate's job (closed rules until the sync writes the
    charter's); removed again afterwards."""
    path = config_file(prometheus)
    config = json.loads(path.read_text())
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] != CHARTER_JOB]
    config["scrape_configs"].append({"job_name": CHARTER_JOB, "static_configs": [{"targets": targets}],
                                     "metric_relabel_configs": fail_closed_relabel()})
    path.write_text(json.dumps(config, indent=2))
    reload(prometheus)
    try:
        yield
    finally:
        config = json.loads(path.read_text())
        config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] != CHARTER_JOB]
        path.write_text(json.dumps(config, indent=2))
        reload(prometheus)


def job_rules(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    config = json.loads(config_file(prometheus).read_text())
    rules: list[dict[str, Any]] = next(j for j in config["scrape_configs"]
                                       if j["job_name"] == CHARTER_JOB)["metric_relabel_configs"]
    return rules


async def audited(res: Resources, kind: str) -> list[AuditEntry]:
    return [e for e in await res.audit.latest(500) if e.kind == kind]
