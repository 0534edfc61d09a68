"""Prometheus activities against a real Prometheus scraping a real local sandbox."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.prometheus import PrometheusActivities
from activities.sandbox.local import LocalSandbox
from tests.fixtures.activity_env import InterceptedEnvironment
from tests.fixtures.prometheus import PrometheusServer
from westworld.errors import INVALID_INPUT, METRICS_UNAVAILABLE
from westworld.sandbox import Arm, Backend, ProvisionInput, SandboxRef, Workload
from westworld.series import (
    CollectInput,
    InstantQueryInput,
    MetricQuery,
    Point,
    ScrapeReadyInput,
    Series,
    expand,
    render_selector,
)
from workers.stack import processes

UP = MetricQuery(name="nodes_up", promql="sum(up{selector})")
SENT = MetricQuery(name="sent_rate", promql="sum(rate(mesh_messages_sent_total{selector}[2s]))")


@pytest.fixture(scope="module")
async def scraped(prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[SandboxRef]:
    """Two 2-node sandboxes (baseline, treatment) scraped by the session's Prometheus."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        sandbox = LocalSandbox(http, Path(tmp_path_factory.mktemp("prom-sandboxes")), prometheus.targets_dir)
        name = f"p-{uuid.uuid4().hex[:6]}"
        refs = [await sandbox.provision(ProvisionInput(backend=Backend.LOCAL, sandbox_id=f"{name}-{arm.value}",
                                                       arm=arm, workload=Workload(version="1.4.0", nodes=2)),
                                        lambda _m: None) for arm in (Arm.BASELINE, Arm.TREATMENT)]
        acts = PrometheusActivities(http, prometheus.url)
        deadline = time.monotonic() + 20
        both = {ref.arm.value: ref.labels for ref in refs}
        while None in (await acts.query_metrics(InstantQueryInput(queries=[SENT], selectors=both))
                       ).values["sent_rate"].values():
            assert time.monotonic() < deadline, "the sandboxes were not scraped within 20s"
            await asyncio.sleep(0.25)
        await asyncio.sleep(2.5)  # a full [2s] rate window of scrapes: rates early in a series are underestimated
        try:
            yield refs[0]
        finally:
            for ref in refs:
                await sandbox.teardown(ref)


@pytest.fixture
async def acts(prometheus: PrometheusServer) -> AsyncIterator[PrometheusActivities]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        yield PrometheusActivities(http, prometheus.url)


def selectors(ref: SandboxRef) -> dict[str, dict[str, str]]:
    name = ref.sandbox_id.removesuffix("-baseline")
    return {"baseline": {"sandbox": f"{name}-baseline"}, "treatment": {"sandbox": f"{name}-treatment"}}


def test_selectors_escape_label_values() -> None:
    assert render_selector({"sandbox": 'a"b\\c', "arm": "x"}) == '{sandbox="a\\"b\\\\c",arm="x"}'
    assert expand("rate(m{selector}[5s])", {"arm": "t"}) == 'rate(m{arm="t"}[5s])'


async def test_instant_query_per_series_key(scraped: SandboxRef, acts: PrometheusActivities) -> None:
    result = await InterceptedEnvironment().run(acts.query_metrics, InstantQueryInput(
        queries=[UP, SENT], selectors=selectors(scraped)))
    assert result.values["nodes_up"] == {"baseline": 2.0, "treatment": 2.0}
    rates = result.values["sent_rate"]
    assert all(v is not None and v > 5 for v in rates.values()), rates  # ~10 probes/s per node


async def test_collect_heartbeats_every_interval(scraped: SandboxRef, acts: PrometheusActivities) -> None:
    env = InterceptedEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    inp = CollectInput(collection_id="c1", queries=[UP, SENT], selectors=selectors(scraped),
                       duration=timedelta(seconds=2), interval=timedelta(milliseconds=500))
    started = time.monotonic()
    result = await env.run(acts.collect_metrics, inp)
    assert time.monotonic() - started >= 1.9
    assert len(beats) == 5  # ticks at 0, 0.5, 1, 1.5, 2 s
    assert [len(s["points"]) for s in beats[2]["series"]] == [3, 3, 3, 3]
    assert {(s.query, s.key) for s in result.series} == {(q, k) for q in ("nodes_up", "sent_rate")
                                                         for k in ("baseline", "treatment")}
    for series in result.series:
        assert len(series.points) == 5
        assert all(b.at - a.at == timedelta(milliseconds=500) for a, b in zip(series.points, series.points[1:],
                                                                              strict=False))
        if series.query == "nodes_up":
            assert [p.value for p in series.points] == [2.0] * 5


async def test_collect_resumes_from_heartbeat_details(scraped: SandboxRef, acts: PrometheusActivities) -> None:
    """A retried attempt keeps what the last heartbeat held and fills the ticks it missed from history."""
    started = datetime.now(UTC) - timedelta(seconds=3)
    kept = [Series(query="nodes_up", key=key, points=[Point(at=started, value=-1.0)])
            for key in ("baseline", "treatment")]
    env = InterceptedEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_details=[{"started": started.isoformat(),
                                                     "series": [s.model_dump(mode="json") for s in kept]}])
    inp = CollectInput(collection_id="c2", queries=[UP], selectors=selectors(scraped),
                       duration=timedelta(seconds=4), interval=timedelta(seconds=1))
    t0 = time.monotonic()
    result = await env.run(acts.collect_metrics, inp)
    assert time.monotonic() - t0 < 2.5  # only the last ~1 s was waited for
    for series in result.series:
        assert series.points[0] == Point(at=started, value=-1.0)  # from the heartbeat, not re-evaluated
        assert [p.at for p in series.points] == [started + timedelta(seconds=i) for i in range(5)]
        assert [p.value for p in series.points[1:]] == [2.0] * 4  # missed ticks evaluated at their own time


async def test_bad_promql_is_permanent_and_named(scraped: SandboxRef, acts: PrometheusActivities) -> None:
    bad = MetricQuery(name="p95_latency", promql="histogram_quantile(0.95, sum by (le) (rate(x{selector}[5s]))")
    with pytest.raises(ApplicationError) as err:
        await InterceptedEnvironment().run(acts.query_metrics, InstantQueryInput(queries=[bad],
                                                                              selectors=selectors(scraped)))
    assert err.value.type == INVALID_INPUT and err.value.non_retryable
    assert "'p95_latency'" in err.value.message and "refused by Prometheus" in err.value.message

    several = MetricQuery(name="per_node", promql="up{selector}")
    with pytest.raises(ApplicationError) as err:
        await InterceptedEnvironment().run(acts.query_metrics, InstantQueryInput(queries=[several],
                                                                              selectors=selectors(scraped)))
    assert err.value.type == INVALID_INPUT and "returns 2 series" in err.value.message


async def test_unreachable_prometheus_is_retryable() -> None:
    url = f"http://127.0.0.1:{processes.free_port()}"
    async with httpx.AsyncClient(timeout=2.0) as http:
        acts = PrometheusActivities(http, url)
        with pytest.raises(ApplicationError) as err:
            await InterceptedEnvironment().run(acts.query_metrics, InstantQueryInput(
                queries=[UP], selectors={"a": {"sandbox": "x"}}))
    assert err.value.type == METRICS_UNAVAILABLE and not err.value.non_retryable
    assert url in err.value.message and "unreachable" in err.value.message


async def test_collect_input_errors_are_permanent_and_say_what(acts: PrometheusActivities) -> None:
    env = InterceptedEnvironment()
    too_long = CollectInput(collection_id="c3", queries=[UP, SENT], selectors={"a": {}, "b": {}},
                            duration=timedelta(hours=2), interval=timedelta(seconds=1))
    with pytest.raises(ApplicationError) as err:
        await env.run(acts.collect_metrics, too_long)
    assert err.value.non_retryable and "c3" in err.value.message and "lengthen the interval" in err.value.message
    twice = too_long.model_copy(update={"queries": [UP, UP], "duration": timedelta(seconds=1)})
    with pytest.raises(ApplicationError) as err:
        await env.run(acts.collect_metrics, twice)
    assert err.value.type == INVALID_INPUT and "unique" in err.value.message


async def test_hostile_label_values_stay_inside_their_matcher(acts: PrometheusActivities) -> None:
    """Prometheus itself parses the rendered selector: a value with quotes, braces and a newline matches nothing."""
    hostile = {"sandbox": 'x"} or vector(1) # \\ \n'}
    result = await InterceptedEnvironment().run(acts.query_metrics, InstantQueryInput(queries=[UP],
                                                                                   selectors={"h": hostile}))
    assert result.values == {"nodes_up": {"h": None}}


async def test_await_scraped_returns_once_every_node_has_a_rate(prometheus: PrometheusServer,
                                                                acts: PrometheusActivities, tmp_path: Path) -> None:
    """A fresh sandbox: the activity waits until both nodes were scraped twice, after which a rate() answers."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        sandbox = LocalSandbox(http, tmp_path, prometheus.targets_dir)
        ref = await sandbox.provision(ProvisionInput(backend=Backend.LOCAL, sandbox_id=f"w-{uuid.uuid4().hex[:6]}",
                                                     arm=Arm.TREATMENT, workload=Workload(version="1.4.0", nodes=2)),
                                      lambda _m: None)
        try:
            env = InterceptedEnvironment()
            beats: list[Any] = []
            env.on_heartbeat = lambda *d: beats.append(d[0])
            ready = await env.run(acts.await_scraped, ScrapeReadyInput(selectors={"t": ref.labels}, targets={"t": 2}))
            assert ready.scraped == {"t": 2} and beats and beats[-1] == {"t": 2}
            rate = MetricQuery(name="sent", promql="sum(rate(mesh_messages_sent_total{selector}[5s]))")
            now = await env.run(acts.query_metrics, InstantQueryInput(queries=[rate], selectors={"t": ref.labels}))
            assert now.values["sent"]["t"] is not None
        finally:
            await sandbox.teardown(ref)


async def test_await_scraped_names_what_was_never_scraped(scraped: SandboxRef, acts: PrometheusActivities) -> None:
    env = InterceptedEnvironment()
    inp = ScrapeReadyInput(selectors={**selectors(scraped), "ghost": {"sandbox": "no-such-sandbox"}},
                           targets={"baseline": 2, "ghost": 1}, timeout=timedelta(seconds=1.5))
    with pytest.raises(ApplicationError) as err:
        await env.run(acts.await_scraped, inp)
    assert err.value.type == METRICS_UNAVAILABLE and err.value.non_retryable
    assert "ghost: 0 of 1 node(s)" in err.value.message and "baseline" not in err.value.message
    with pytest.raises(ApplicationError) as err:
        await env.run(acts.await_scraped, inp.model_copy(update={"targets": {"nobody": 1}}))
    assert err.value.type == INVALID_INPUT and "nobody" in err.value.message
