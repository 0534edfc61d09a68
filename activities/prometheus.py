"""Prometheus activities: collect PromQL series over an experiment's run, and evaluate queries once.

``collect_metrics`` evaluates every query for every series key once per ``interval`` for ``duration`` and
heartbeats the points so far each interval. After a retry (a worker crash, a timeout) it resumes from the last
heartbeat: ticks it missed are evaluated at their own timestamps (Prometheus keeps the history), so the series
has no holes. Give the activity a ``heartbeat_timeout`` of a few intervals.

``watch_metrics`` evaluates a canary step's queries right after each fresh scrape of its canary nodes, so a
breach is seen one scrape after it happens rather than at the next analysis tick; it stops as soon as the spec's
tolerance confirms the breach (``westworld.canary.confirmed_breach``).

Errors: Prometheus unreachable or answering 5xx is ``MetricsUnavailable`` and retryable; a query Prometheus
refuses (syntax, type) or one that returns several series for one key is a non-retryable ``InvalidInput``
naming the query.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from temporalio import activity

from westworld.canary import WatchInput, WatchResult, WatchSample, confirmed_breach, sample_row
from westworld.errors import (
    METRICS_UNAVAILABLE,
    InvalidInput,
    PermanentError,
    TransientError,
    WestworldError,
)
from westworld.series import (
    SELECTOR,
    CollectInput,
    CollectResult,
    InstantQueryInput,
    InstantQueryResult,
    MetricQuery,
    Point,
    ScrapeReadyInput,
    ScrapeReadyResult,
    Series,
    expand,
)

MAX_POINTS = 20_000


class PrometheusActivities:
    """Built with an ``httpx.AsyncClient`` and the base URL of a Prometheus (or any PromQL HTTP API)."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self._http = http
        self._url = url.rstrip("/")

    async def evaluate(self, query: MetricQuery, key: str, labels: dict[str, str], at: datetime | None) -> float | None:
        """One instant query; None when it returns nothing or NaN."""
        try:
            promql = expand(query.promql, labels)
        except WestworldError as err:
            raise InvalidInput(f"query {query.name!r}, series {key!r}: {err.message}") from err
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        try:
            answer = await self._http.get(f"{self._url}/api/v1/query", params=params)
        except httpx.TransportError as err:
            raise TransientError(f"Prometheus at {self._url} is unreachable: {err!r}",
                                 type=METRICS_UNAVAILABLE) from err
        if answer.status_code in (400, 422):
            error = _json(answer).get("error", answer.text)
            raise InvalidInput(f"query {query.name!r} ({promql}) was refused by Prometheus: {error}")
        if answer.status_code != 200:
            raise TransientError(f"Prometheus at {self._url} answered {answer.status_code}: {answer.text[:200]}",
                                 type=METRICS_UNAVAILABLE)
        data = _json(answer).get("data", {})
        result = data.get("result")
        if data.get("resultType") == "scalar":
            return _number(result[1])
        if not result:
            return None
        if len(result) > 1:
            raise InvalidInput(
                f"query {query.name!r} ({promql}) returns {len(result)} series for {key!r}; aggregate it to one "
                f"(e.g. sum(...) or histogram_quantile(0.95, sum by (le) (rate(...))))")
        return _number(result[0]["value"][1])

    @activity.defn(name="query_metrics")
    async def query_metrics(self, inp: InstantQueryInput) -> InstantQueryResult:
        """Every query for every series key, now."""
        problem = _check(inp.queries, inp.selectors)
        if problem:
            raise InvalidInput(problem)
        values: dict[str, dict[str, float | None]] = {}
        for query in inp.queries:
            values[query.name] = {key: await self.evaluate(query, key, labels, None)
                                  for key, labels in inp.selectors.items()}
        return InstantQueryResult(values=values)

    @activity.defn(name="watch_metrics")
    async def watch_metrics(self, inp: WatchInput) -> WatchResult:
        """Evaluate every query after each fresh scrape of the canary nodes for ``span`` (at most ``max_samples``
        of them); return early with ``breach`` once the samples confirm one. Heartbeats each look (cancel it
        when the analysis tick comes).

        A scrape is fresh once every canary node has been scraped since the last evaluation (the oldest of their
        latest sample times moved). Between two, it sleeps until just before the next scrape is due (the scrape
        period read from the nodes' own ``up`` samples), then looks every ``poll``.
        """
        names = {q.name for q in inp.queries}
        if missing := [m.name for m in inp.metrics if f"{m.name}.canary" not in names]:
            raise InvalidInput(f"watch_metrics: no canary query for {', '.join(missing)}")
        fresh_query = MetricQuery(name="fresh scrape", promql=f"min(timestamp({inp.targets}))")
        loop = asyncio.get_running_loop()
        end = loop.time() + inp.span.total_seconds()
        poll = inp.poll.total_seconds()
        period = await self._scrape_period(inp.targets)
        samples: list[WatchSample] = []
        last: float | None = None
        while loop.time() < end:
            scraped = await self.evaluate(fresh_query, "canary", {}, None)
            if scraped is not None and last is not None and scraped > last:
                values = {q.name: await self.evaluate(q, "group", {}, None) for q in inp.queries}
                row = sample_row(inp.metrics, values, inp.reference)
                samples.append(WatchSample(scraped_at=datetime.fromtimestamp(scraped, UTC), measurements=row))
                if confirmed_breach(inp.metrics, [s.measurements for s in samples]) is not None:
                    return WatchResult(samples=samples, breach=True)
                if len(samples) >= inp.max_samples:
                    break
            if scraped is not None and (last is None or scraped > last):
                last = scraped
            activity.heartbeat(len(samples))
            wait = poll
            if period is not None and last is not None:
                wait = min(period, max(poll, last + period - datetime.now(UTC).timestamp() - poll))
            await asyncio.sleep(max(0.0, min(wait, end - loop.time())))
        return WatchResult(samples=samples, breach=False)

    async def _scrape_period(self, targets: str) -> float | None:
        """The shortest median gap between two scrapes of one of the ``targets`` over the last minute (None when
        Prometheus has too few samples to tell: the watch then looks every ``poll``)."""
        try:
            answer = await self._http.get(f"{self._url}/api/v1/query", params={"query": f"{targets}[1m]"})
        except httpx.TransportError as err:
            raise TransientError(f"Prometheus at {self._url} is unreachable: {err!r}",
                                 type=METRICS_UNAVAILABLE) from err
        if answer.status_code in (400, 422):
            raise InvalidInput(f"scrape targets {targets!r} were refused by Prometheus: "
                               f"{_json(answer).get('error', answer.text)}")
        gaps = []
        for series in _json(answer).get("data", {}).get("result", []) if answer.status_code == 200 else []:
            times = [float(t) for t, _ in series.get("values", [])]
            if len(times) >= 3:
                gaps.append(statistics.median(b - a for a, b in itertools.pairwise(times)))
        return min(gaps) if gaps else None

    @activity.defn(name="collect_metrics")
    async def collect_metrics(self, inp: CollectInput) -> CollectResult:
        """Evaluate every ``interval`` for ``duration``; heartbeats the points so far; resumes after a retry."""
        ticks = int(inp.duration / inp.interval) + 1 if inp.interval > timedelta(0) else 0
        problem = _check(inp.queries, inp.selectors)
        if inp.interval <= timedelta(0):
            problem = f"interval must be positive, got {inp.interval}"
        elif ticks * len(inp.queries) * len(inp.selectors) > MAX_POINTS:
            problem = (f"{ticks} ticks x {len(inp.queries)} queries x {len(inp.selectors)} keys is more than "
                       f"{MAX_POINTS} points (the heartbeat carries them all): lengthen the interval")
        if problem:
            raise InvalidInput(f"collection {inp.collection_id}: {problem}")
        started, series = _resume(inp)
        done = min(len(s.points) for s in series)
        for tick in range(done, ticks):
            at = started + tick * inp.interval
            wait = (at - datetime.now(UTC)).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            for s in series:
                if len(s.points) > tick:  # evaluated before the retry
                    continue
                query = next(q for q in inp.queries if q.name == s.query)
                s.points.append(Point(at=at, value=await self.evaluate(query, s.key, inp.selectors[s.key], at)))
            activity.heartbeat({"started": started.isoformat(),
                                "series": [s.model_dump(mode="json") for s in series]})
        return CollectResult(series=series)


    @activity.defn(name="await_scraped")
    async def await_scraped(self, inp: ScrapeReadyInput) -> ScrapeReadyResult:
        """Return once every target of each key has ``scrapes`` successful scrapes; heartbeats what it has seen.

        A run measured before Prometheus has found and scraped its nodes starts with empty samples (a ``rate()``
        needs two scrapes), which a loaded machine stretches to most of a short run. Fails (non-retryable
        ``MetricsUnavailable``) after ``timeout``, naming the keys still short of targets.
        """
        if missing := sorted(set(inp.targets) - set(inp.selectors)):
            raise InvalidInput(f"await_scraped: no selector for {', '.join(missing)}")
        query = MetricQuery(name="scraped targets",
                            promql=f"count(sum_over_time(up{SELECTOR}[10m]) >= {inp.scrapes})")
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + inp.timeout.total_seconds()
        while True:
            scraped = {key: int(await self.evaluate(query, key, inp.selectors[key], None) or 0)
                       for key in inp.targets}
            activity.heartbeat(scraped)
            short = {k: n for k, n in inp.targets.items() if scraped[k] < n}
            if not short:
                return ScrapeReadyResult(waited_s=round(loop.time() - began, 3), scraped=scraped)
            if loop.time() >= deadline:
                detail = "; ".join(f"{k}: {scraped[k]} of {n} node(s)" for k, n in sorted(short.items()))
                raise PermanentError(
                    f"Prometheus at {self._url} has not scraped every node {inp.scrapes} times within "
                    f"{inp.timeout.total_seconds():.0f} s ({detail}): is it running and reading the sandboxes' "
                    "scrape targets (file_sd in <data dir>/prometheus/targets)?", type=METRICS_UNAVAILABLE)
            await asyncio.sleep(inp.poll.total_seconds())


def _check(queries: list[MetricQuery], selectors: dict[str, dict[str, str]]) -> str | None:
    names = [q.name for q in queries]
    if not queries or not selectors:
        return "give at least one query and one selector"
    if len(set(names)) != len(names):
        return f"query names must be unique, got {names}"
    return None


def _resume(inp: CollectInput) -> tuple[datetime, list[Series]]:
    """The run's start and the points collected by earlier attempts (from the last heartbeat), or a fresh start."""
    fresh = [Series(query=q.name, key=k, points=[]) for q in inp.queries for k in inp.selectors]
    details = activity.info().heartbeat_details
    if not details:
        return datetime.now(UTC), fresh
    last: dict[str, Any] = details[-1] if isinstance(details[-1], dict) else {}
    try:
        started = datetime.fromisoformat(last["started"])
        saved = {(s.query, s.key): s for s in (Series.model_validate(x) for x in last["series"])}
    except (KeyError, TypeError, ValueError):
        return datetime.now(UTC), fresh
    return started, [saved.get((s.query, s.key), s) for s in fresh]


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        data = answer.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _number(text: Any) -> float | None:
    value = float(text)
    return None if math.isnan(value) or math.isinf(value) else value
