"""Worker metrics: the project's counters count and are scraped over HTTP, apart from the SDK's endpoint."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput

from workers.metrics import Metrics, MetricsInterceptor, make_runtime, start_own_metrics
from workers.settings import Settings, load_settings
from workers.stack import processes


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scraped samples by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    own_port = processes.free_port()
    return load_settings(data_dir=tmp_path, worker_metrics_port=own_port - 1)


@pytest.fixture
def served(settings: Settings) -> Iterator[Metrics]:
    metrics = start_own_metrics(settings)
    yield metrics
    metrics.close()


async def test_counters_are_served_on_the_port_after_the_sdk_one(settings: Settings, served: Metrics) -> None:
    assert served.port == settings.worker_metrics_port + 1
    served.vote_accepted()
    served.vote_accepted()
    served.vote_rejected("BallotExpired")
    served.audit_appended()
    served.audit_append_failed()
    served.activity_failed("record_vote", "ChainUnavailable")

    async with httpx.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{settings.worker_metrics_port + 1}/metrics")
    assert answer.status_code == 200
    got = samples(answer.text)
    assert got[("westworld_votes_accepted_total", ())] == 2
    assert got[("westworld_votes_rejected_total", (("reason", "BallotExpired"),))] == 1
    assert got[("westworld_audit_appends_total", ())] == 1
    assert got[("westworld_audit_append_failures_total", ())] == 1
    labels = (("activity", "record_vote"), ("type", "ChainUnavailable"))
    assert got[("westworld_activity_errors_total", labels)] == 1


async def test_instances_do_not_share_counters() -> None:
    first, second = Metrics(), Metrics()
    first.vote_accepted()
    assert first.registry.get_sample_value("westworld_votes_accepted_total") == 1
    assert second.registry.get_sample_value("westworld_votes_accepted_total") == 0


def test_close_frees_the_port(settings: Settings) -> None:
    metrics = start_own_metrics(settings)
    metrics.close()
    again = start_own_metrics(settings, Metrics())
    again.close()


class _RunActivity(ActivityInboundInterceptor):
    """The innermost link: run the activity function itself."""

    def __init__(self) -> None:
        pass

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        return await input.fn(*input.args)


async def _fails_permanently() -> None:
    raise ApplicationError("ballot is past its deadline", type="BallotExpired", non_retryable=True)


async def _fails_transiently() -> None:
    raise ConnectionError("chain RPC unreachable")


async def _succeeds() -> str:
    return "ok"


async def test_interceptor_counts_failed_activity_attempts() -> None:
    metrics = Metrics()
    chain = MetricsInterceptor(metrics).intercept_activity(_RunActivity())
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, activity_type="record_vote")

    def run(fn: Any) -> Any:
        call = ExecuteActivityInput(fn=fn, args=[], executor=None, headers={})
        return env.run(chain.execute_activity, call)

    assert await run(_succeeds) == "ok"
    with pytest.raises(ApplicationError):
        await run(_fails_permanently)
    with pytest.raises(ConnectionError):
        await run(_fails_transiently)
    def errors(error_type: str) -> float | None:
        labels = {"activity": "record_vote", "type": error_type}
        return metrics.registry.get_sample_value("westworld_activity_errors_total", labels)

    assert errors("BallotExpired") == 1
    assert errors("ConnectionError") == 1
    assert errors("str") is None  # a success is not counted


async def test_sdk_runtime_serves_its_own_endpoint(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, worker_metrics_port=processes.free_port())
    runtime = make_runtime(settings)  # the endpoint lives as long as the runtime
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"http://127.0.0.1:{settings.worker_metrics_port}/metrics")
    assert answer.status_code == 200
    assert "westworld_" not in answer.text  # the project's counters are on the next port, not here
    del runtime
