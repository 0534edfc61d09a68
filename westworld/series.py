"""Metric collection models: PromQL queries evaluated per series key (an arm, a node group) over time.

A query's PromQL may contain the placeholder ``{selector}``; it is replaced by the label matchers of each
series key, e.g. ``rate(mesh_messages_delivered_total{selector}[5s])`` with ``{"sandbox": "exp-a", "arm":
"baseline"}`` becomes ``rate(mesh_messages_delivered_total{sandbox="exp-a",arm="baseline"}[5s])``.
Label values are escaped, so a value cannot break out of its matcher.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta

from pydantic import BaseModel, Field, field_validator

from westworld.errors import InvalidInput

SELECTOR = "{selector}"
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class MetricQuery(BaseModel):
    name: str = Field(description="Name of the figure (e.g. p95_latency); the key of its results.")
    promql: str = Field(description='PromQL; "{selector}" is replaced by each series key\'s label matchers.')

    @field_validator("promql")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("promql is empty")
        return value


class CollectInput(BaseModel):
    collection_id: str = Field(description="Business key of this collection (e.g. <experiment>:metrics).")
    queries: list[MetricQuery]
    selectors: dict[str, dict[str, str]] = Field(description="series key -> label matchers")
    duration: timedelta = Field(description="How long to collect.")
    interval: timedelta = Field(timedelta(seconds=5), description="Time between two evaluations.")


class ScrapeReadyInput(BaseModel):
    """Wait until Prometheus has scraped every target of each series key often enough for ``rate()`` to answer."""

    selectors: dict[str, dict[str, str]] = Field(description="series key -> label matchers of its targets")
    targets: dict[str, int] = Field(description="series key -> how many targets (nodes) must have been scraped")
    scrapes: int = Field(2, ge=1, le=100, description="Successful scrapes per target (2: a rate() has a value).")
    timeout: timedelta = Field(timedelta(minutes=2), description="Then fail, naming what is missing.")
    poll: timedelta = Field(timedelta(milliseconds=500))


class ScrapeReadyResult(BaseModel):
    waited_s: float
    scraped: dict[str, int] = Field(description="series key -> targets with enough successful scrapes")


class Point(BaseModel):
    at: datetime
    value: float | None = Field(description="None when the query returned no sample or NaN.")


class Series(BaseModel):
    query: str = Field(description="The MetricQuery's name.")
    key: str = Field(description="The series key (a key of CollectInput.selectors).")
    points: list[Point] = Field(default_factory=list)


class CollectResult(BaseModel):
    series: list[Series]


class InstantQueryInput(BaseModel):
    queries: list[MetricQuery]
    selectors: dict[str, dict[str, str]]


class InstantQueryResult(BaseModel):
    values: dict[str, dict[str, float | None]] = Field(description="query name -> series key -> value")


def escape_label_value(value: str) -> str:
    """Escape a value for a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_selector(labels: Mapping[str, str]) -> str:
    """``{a="x",b="y"}`` from label matchers; a label name PromQL does not accept is ``InvalidInput``."""
    parts = []
    for name, value in labels.items():
        if not _LABEL_NAME.match(name):
            raise InvalidInput(f"label name {name!r} is not a valid Prometheus label name")
        parts.append(f'{name}="{escape_label_value(value)}"')
    return "{" + ",".join(parts) + "}"


def expand(query: str, labels: Mapping[str, str]) -> str:
    """The PromQL of ``query`` with each ``{selector}`` replaced by the label matchers ``labels``."""
    return query.replace(SELECTOR, render_selector(labels))

