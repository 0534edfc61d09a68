"""Durations read the same way in a canary input file and in an experiment spec (``30s``, ``10m``, ``1h30m``,
ISO 8601), and a zero is accepted exactly where it means something: ``bake_time: 0s`` (one analysis right away, no
bake) in both, never as an analysis interval, a peer wait or a timeout."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.unit.test_experiment_spec import _with_rollout
from westworld.errors import InvalidInput
from westworld.experiment import parse_spec
from westworld.rollout import CanaryInput
from workers.cli.inputs import load_model

CANARY = """\
name: my-canary
version: 1.5.0
mesh_nodes: 5
steps: ["20%", "100%"]
bake_time: {bake}
analysis_interval: {interval}
peer_wait: {wait}
action_timeout: 90s
provision_timeout: 5m
"""


def canary(tmp_path: Path, bake: str = "0s", interval: str = "30s", wait: str = "1h") -> CanaryInput:
    path = tmp_path / "canary.yaml"
    path.write_text(CANARY.format(bake=bake, interval=interval, wait=wait))
    return load_model(path, CanaryInput)


def test_a_canary_file_reads_durations_as_a_spec_does_and_a_zero_bake(tmp_path: Path) -> None:
    inp = canary(tmp_path, bake="0s", interval="30s", wait="1h30m")
    assert (inp.bake_time, inp.analysis_interval, inp.peer_wait) == (
        timedelta(0), timedelta(seconds=30), timedelta(hours=1, minutes=30))
    assert (inp.action_timeout, inp.provision_timeout) == (timedelta(seconds=90), timedelta(minutes=5))
    assert canary(tmp_path, bake="PT10M").bake_time == timedelta(minutes=10)


@pytest.mark.parametrize(("field", "values"), [("interval", {"interval": "0s"}), ("wait", {"wait": "0s"})])
def test_a_zero_where_it_means_nothing_is_refused_by_name(tmp_path: Path, field: str,
                                                          values: dict[str, str]) -> None:
    with pytest.raises(InvalidInput) as err:
        canary(tmp_path, **values)
    assert {"interval": "analysis_interval", "wait": "peer_wait"}[field] in str(err.value)


def test_a_spec_accepts_a_zero_bake_and_still_refuses_a_zero_interval() -> None:
    spec = parse_spec(_with_rollout(bake_time="0s", analysis_interval="30s"))
    assert spec.spec.rollout is not None and spec.spec.rollout.bake_time == timedelta(0)
    with pytest.raises(InvalidInput, match=r"spec\.rollout\.analysis_interval: must be positive"):
        parse_spec(_with_rollout(bake_time="0s", analysis_interval="0s"))
    with pytest.raises(InvalidInput, match=r"spec\.rollout\.analysis_interval: must not exceed bake_time"):
        parse_spec(_with_rollout(bake_time="1m", analysis_interval="2m"))
