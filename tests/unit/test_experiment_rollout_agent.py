"""Who the approved rollout's steps act as: the spec names the agent (``spec.rollout.agent``), the token comes
beside the spec at start (``rollout_capability_token``); any mismatch fails before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from westworld.errors import InvalidInput
from westworld.experiment import parse_spec
from westworld.experiment_run import ExperimentInput

GOOD = Path(__file__).parents[2] / "deploy" / "experiments" / "good.yaml"


def _spec(agent: str | None = None, rollout: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(GOOD.read_text())
    if not rollout:
        del data["spec"]["rollout"]
    elif agent is not None:
        data["spec"]["rollout"]["agent"] = agent
    return data


def _agent(data: dict[str, Any], **fields: Any) -> tuple[str, str] | None:
    return ExperimentInput(spec=data, **fields).rollout_agent(parse_spec(data))


def test_the_spec_names_the_agent_and_the_input_carries_its_token() -> None:
    assert _agent(_spec("cradle-bot"), rollout_capability_token="tok") == ("cradle-bot", "tok")
    assert _agent(_spec("cradle-bot"), rollout_agent_id="cradle-bot", rollout_capability_token="tok") == (
        "cradle-bot", "tok")


def test_without_an_agent_the_steps_act_directly() -> None:
    assert _agent(_spec()) is None
    assert _agent(_spec(rollout=False), rollout_capability_token="tok") is None  # nothing to roll out


def test_the_agent_may_still_come_from_the_input() -> None:
    assert _agent(_spec(), rollout_agent_id="legacy-bot", rollout_capability_token="tok") == ("legacy-bot", "tok")


@pytest.mark.parametrize(("agent", "fields", "expected"), [
    ("cradle-bot", {}, "spec.rollout.agent: agent 'cradle-bot' needs its capability token at start"),
    (None, {"rollout_agent_id": "legacy-bot"}, "rollout_agent_id: agent 'legacy-bot' needs its capability token"),
    (None, {"rollout_capability_token": "tok"}, "rollout_capability_token: give the agent it was minted for"),
    ("cradle-bot", {"rollout_agent_id": "other-bot", "rollout_capability_token": "tok"},
     "rollout_agent_id: 'other-bot' is not spec.rollout.agent ('cradle-bot')"),
])
def test_mismatches_are_named(agent: str | None, fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        _agent(_spec(agent), **fields)
    assert exc.value.message.startswith(expected), exc.value.message
