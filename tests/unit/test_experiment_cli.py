"""`westworld experiment validate` (no servers needed): OK summary, or every problem and exit code 1."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from workers.cli.experiment import experiment_app, progress_bar

EXAMPLES = Path(__file__).parents[2] / "deploy" / "experiments"


def test_validate_a_good_spec() -> None:
    out = CliRunner().invoke(experiment_app, ["validate", str(EXAMPLES / "good.yaml")])
    assert out.exit_code == 0, out.output
    assert "OK — mesh-node-1-4-0: 1.4.0 vs 1.3.0, 3 node(s) per arm for 30s, 2 fault(s)" in out.output


def test_validate_lists_every_problem_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("metadata:\n  name: X\nspec:\n  duration: 5s\n  interval: 1s\n  chaos: [{kind: boom}]\n")
    out = CliRunner().invoke(experiment_app, ["validate", str(bad)])
    assert out.exit_code == 1
    for line in ("metadata.name (line 2): 'X' is not a DNS label", "spec.objective (line 4): required",
                 "spec.chaos[0].kind (line 6): Input should be 'latency', 'packet_loss', 'partition' or 'node_kill' "
                 "(got 'boom')", "spec.chaos[0].duration (line 6): required", "spec.metrics (line 4): required"):
        assert line in out.output, out.output
    missing = CliRunner().invoke(experiment_app, ["validate", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "cannot read" in missing.output


def test_progress_bar() -> None:
    assert progress_bar(0.5, 10) == "[#####-----]  50%"
    assert progress_bar(2.0, 4) == "[####] 100%" and progress_bar(-1, 4) == "[----]   0%"


def test_start_refuses_a_rollout_agent_without_its_token_before_connecting(tmp_path: Path) -> None:
    spec = tmp_path / "agent.yaml"
    spec.write_text((EXAMPLES / "good.yaml").read_text() + "    agent: cradle-bot\n")
    (tmp_path / "data").mkdir()
    out = CliRunner().invoke(experiment_app, ["start", str(spec), "--data-dir", str(tmp_path / "data")])
    assert out.exit_code == 1
    assert "spec.rollout.agent: agent 'cradle-bot' needs its capability token at start" in out.output, out.output
    valid = CliRunner().invoke(experiment_app, ["validate", str(spec)])
    assert valid.exit_code == 0 and "rollout planned as agent 'cradle-bot'" in valid.output, valid.output
