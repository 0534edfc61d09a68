"""``watch_metrics`` against a real Prometheus scraping a real local mesh: one evaluation per fresh scrape of the
canary, and an early return once a faulty build's breach is confirmed."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.prometheus import PrometheusActivities
from activities.sandbox.local import LocalSandbox
from tests.fixtures.activity_env import InterceptedEnvironment
from tests.fixtures.prometheus import PrometheusServer
from westworld.canary import TARGETS_QUERY, WatchInput, group_query
from westworld.errors import INVALID_INPUT
from westworld.experiment import MetricSpec, Threshold
from westworld.sandbox import Arm, Backend, ProvisionInput, SandboxRef, Workload
from westworld.series import MetricQuery

RELAY_ERRORS = MetricSpec(name="relay_errors", query="sum(rate(mesh_relay_errors_total{selector}[3s])) or vector(0)",
                          threshold=Threshold(max=0.5), tolerance=0.5)


@pytest.fixture
async def mesh(prometheus: PrometheusServer, tmp_path: Path) -> AsyncIterator[tuple[SandboxRef, LocalSandbox]]:
    """Four nodes on 1.4.0, each scraped at least twice."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        sandbox = LocalSandbox(http, tmp_path, prometheus.targets_dir, namespaces=False)
        ref = await sandbox.provision(ProvisionInput(backend=Backend.LOCAL, sandbox_id=f"w-{uuid.uuid4().hex[:6]}",
                                                     arm=Arm.BASELINE, workload=Workload(version="1.4.0", nodes=4)),
                                      lambda _m: None)
        acts = PrometheusActivities(http, prometheus.url)
        scraped = MetricQuery(name="scraped", promql="count(sum_over_time(up{selector}[1m]) >= 2)")
        deadline = time.monotonic() + 30
        while (await acts.evaluate(scraped, "mesh", {"sandbox": ref.sandbox_id}, None) or 0) < 4:
            assert time.monotonic() < deadline, "the mesh was not scraped within 30 s"
            await asyncio.sleep(0.25)
        try:
            yield ref, sandbox
        finally:
            await sandbox.teardown(ref)


def watch(ref: SandboxRef, canary: list[str], span: timedelta) -> WatchInput:
    labels = {"sandbox": ref.sandbox_id}
    stable = [n.id for n in ref.nodes if n.id not in canary]
    return WatchInput(metrics=[RELAY_ERRORS], span=span, targets=group_query(TARGETS_QUERY, labels, "node", canary),
                      queries=[MetricQuery(name="relay_errors.canary",
                                           promql=group_query(RELAY_ERRORS.query, labels, "node", canary)),
                               MetricQuery(name="relay_errors.stable",
                                           promql=group_query(RELAY_ERRORS.query, labels, "node", stable))])


async def test_a_healthy_canary_is_evaluated_once_per_fresh_scrape(
        mesh: tuple[SandboxRef, LocalSandbox], prometheus: PrometheusServer) -> None:
    ref, _ = mesh
    async with httpx.AsyncClient(timeout=5.0) as http:
        acts = PrometheusActivities(http, prometheus.url)
        began = time.monotonic()
        result = await InterceptedEnvironment().run(acts.watch_metrics, watch(ref, [ref.nodes[0].id],
                                                                              timedelta(seconds=3)))
    took = time.monotonic() - began
    assert not result.breach and 2.9 < took < 4.0
    times = [s.scraped_at for s in result.samples]
    # Each sample is a new scrape of the canary: strictly later than the one before, about one interval apart.
    assert len(times) >= 3 and times == sorted(set(times)), times
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(prometheus.scrape_interval * 0.9 <= g <= prometheus.scrape_interval * 1.5 for g in gaps), gaps
    assert all(m.ok is True for s in result.samples for m in s.measurements)


async def test_a_faulty_canary_returns_at_the_first_failing_scrape(
        mesh: tuple[SandboxRef, LocalSandbox], prometheus: PrometheusServer) -> None:
    ref, _ = mesh
    canary = ref.nodes[0]
    async with httpx.AsyncClient(timeout=5.0) as http:
        (await http.post(f"{canary.admin_url}/version", json={"version": "1.5.0-rc1"})).raise_for_status()
        switched = time.monotonic()
        acts = PrometheusActivities(http, prometheus.url)
        result = await InterceptedEnvironment().run(acts.watch_metrics, watch(ref, [canary.id], timedelta(seconds=30)))
    took = time.monotonic() - switched
    assert result.breach, result
    assert took < 15, f"the breach took {took:.1f} s to be seen"  # the build drops ~0.8 relayed messages a second
    last = result.samples[-1].measurements[0]
    assert last.ok is False and last.stable == 0 and (last.canary or 0) > 0
    assert all(m.ok is True for s in result.samples[:-1] for m in s.measurements)  # it stopped at the first


async def test_a_watch_without_a_canary_query_is_refused(
        mesh: tuple[SandboxRef, LocalSandbox], prometheus: PrometheusServer) -> None:
    ref, _ = mesh
    bad = watch(ref, [ref.nodes[0].id], timedelta(seconds=1)).model_copy(update={"queries": []})
    async with httpx.AsyncClient(timeout=5.0) as http:
        with pytest.raises(ApplicationError, match="no canary query for relay_errors") as err:
            await InterceptedEnvironment().run(PrometheusActivities(http, prometheus.url).watch_metrics, bad)
    assert err.value.type == INVALID_INPUT and err.value.non_retryable
