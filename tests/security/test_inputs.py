"""Hostile input files and a missing stack: every one refused with a clear message naming what and where.

Never a traceback, never silent. One class per rule (docs/security.md, "Bad input"): not UTF-8; unbounded
durations; alias bombs and deep nesting; duplicate keys; a stack that does not answer; a data dir that does not
exist. The CLI is driven as a user drives it (the root `westworld` app, or the installed executable).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from typer.testing import CliRunner, Result

from activities.chain import ChainClient
from activities.policy import DEFAULT_POLICY_FILE, PolicyActivities, read_policy_file
from tests.fixtures.activity_env import InterceptedEnvironment
from tests.workflows.conftest import Harness
from westworld.errors import INVALID_INPUT, POLICY_INVALID, InvalidInput
from westworld.experiment_run import ExperimentInput
from westworld.rollout import CanaryInput
from westworld.vote import DaoVoteInput
from workers.cli.common import EXIT_UNREACHABLE
from workers.cli.experiment import read_spec
from workers.cli.inputs import load_model
from workers.codec import create_keyring
from workers.main import app
from workers.stack.processes import free_port
from workflows.experiment import ExperimentWorkflow

SPEC = (Path(__file__).parents[2] / "deploy" / "experiments" / "good.yaml").read_text()
PROPOSAL = "proposal:\n  id: mesh-mtu-1400\n  title: Lower the MTU to 1400\nkind: normal\n"
CANARY = "name: mtu-rollout\nversion: 1.4.0\nmesh_nodes: 3\n"
# (name, command before FILE, a valid document, a top-level key it has and the line of that key)
INPUTS = [
    pytest.param(["vote", "propose"], PROPOSAL, ("kind", 4), id="proposal"),
    pytest.param(["experiment", "validate"], SPEC, ("kind", 3), id="spec-validate"),
    pytest.param(["experiment", "start"], SPEC, ("kind", 3), id="spec-start"),
    pytest.param(["experiment", "rollout", "start"], CANARY, ("version", 2), id="canary"),
]
ALLOWED = "(allowed: 0s to 3650d, i.e. 10 years)"
LAUGHS = 'l0: &l0 "lol"\n' + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir as `westworld up` leaves it, as far as a client needs: the payload keys."""
    d = tmp_path / "data"
    d.mkdir()
    create_keyring(d / "codec-keys.json")
    return d


def cli(args: list[str], data_dir: Path | None = None, **env: str | None) -> Result:
    return CliRunner().invoke(app, args + (["--data-dir", str(data_dir)] if data_dir else []), env=env)


def refused(result: Result, code: int = 1) -> str:
    """The output of a command refused with ``code``, one line (typer boxes wrap); no traceback, nothing raised."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return " ".join(result.output.replace("│", " ").split())


def write(tmp_path: Path, content: str | bytes, name: str = "input.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_the_documents_attacked_below_are_valid_as_written(tmp_path: Path) -> None:
    assert load_model(write(tmp_path, PROPOSAL), DaoVoteInput).proposal.id == "mesh-mtu-1400"
    assert load_model(write(tmp_path, CANARY), CanaryInput).mesh_nodes == 3
    assert read_spec(write(tmp_path, SPEC))[0].name == "mesh-node-1-4-0"


class TestNotUtf8:
    @pytest.mark.parametrize(("command", "document", "key"), INPUTS)
    def test_an_input_file_is_refused_naming_the_byte(self, tmp_path: Path, data_dir: Path, command: list[str],
                                                      document: str, key: tuple[str, int]) -> None:
        raw = document.encode() + b"# caf\xe9\n"
        file = write(tmp_path, raw)
        out = refused(cli([*command, str(file)], None if command[-1] == "validate" else data_dir))
        assert f"error: {file}: not UTF-8 at byte {len(document.encode()) + 5}" in out

    def test_a_utf16_file_is_refused_at_byte_0(self, tmp_path: Path) -> None:
        file = write(tmp_path, PROPOSAL.encode("utf-16"))
        assert f"{file}: not UTF-8 at byte 0" in refused(cli(["experiment", "validate", str(file)]))

    async def test_the_policy_file_is_refused_naming_the_byte(self, tmp_path: Path,
                                                             chain_client: ChainClient) -> None:
        shipped = DEFAULT_POLICY_FILE.read_bytes()
        bad = write(tmp_path, shipped + b"# caf\xe9\n", "policy.yaml")
        with pytest.raises(ValueError, match=rf"^{bad}: not UTF-8 at byte {len(shipped) + 5}"):
            read_policy_file(bad)
        with pytest.raises(ApplicationError) as err:
            await InterceptedEnvironment().run(PolicyActivities(chain_client, bad).load_policy)
        assert err.value.type == POLICY_INVALID and err.value.non_retryable
        assert f"{bad}: not UTF-8 at byte {len(shipped) + 5}" in str(err.value)

    def test_key_files_are_refused_naming_the_byte(self, tmp_path: Path, data_dir: Path) -> None:
        key = write(tmp_path, b'{"id": "caf\xe9"}', "alice.key")
        out = refused(cli(["shelter", "pending", "--key", str(key)], data_dir))
        assert f"error: {key}: not UTF-8 at byte 11" in out
        public = write(tmp_path, b"[1]", "bob.key.pub")
        out = refused(cli(["shelter", "guardians", "init", "--guardian", str(public), "--guardian", str(key),
                           "--threshold", "2"], data_dir))
        assert f"error: {public}: not a guardian public key file: expected a JSON object" in out

    def test_the_settings_file_is_refused_naming_the_byte(self, tmp_path: Path, data_dir: Path) -> None:
        config = write(tmp_path, b'temporal_address = "caf\xe9"\n', "westworld.toml")
        out = refused(cli(["stuck"], data_dir, WESTWORLD_CONFIG=str(config)))
        assert f"error: {config}: not UTF-8 at byte 23" in out


class TestBoundedDurations:
    @pytest.mark.parametrize(("value", "problem"), [
        ("99999999999999", f"99999999999999 is longer than 10 years {ALLOWED}"),
        (".inf", f"inf is not a finite duration {ALLOWED}"),
        ("99999999999d", f"'99999999999d' is longer than 10 years {ALLOWED}"),
        (".nan", f"nan is not a finite duration {ALLOWED}"),
        ("-5", f"-5 is negative {ALLOWED}"),
        ("P99999999D", f"'P99999999D' is longer than 10 years {ALLOWED}"),
    ])
    def test_experiment_spec_durations_name_their_path_and_range(self, tmp_path: Path, value: str,
                                                                  problem: str) -> None:
        file = write(tmp_path, SPEC.replace("duration: 30s", f"duration: {value}", 1))
        assert f"spec.duration (line 8): {problem}" in refused(cli(["experiment", "validate", str(file)]))

    @pytest.mark.parametrize(("value", "problem"), [
        ("99999999999999", "99999999999999 is longer than 10 years"),
        (".inf", "inf is not a finite duration"),
        (".nan", "nan is not a finite duration"),
        ("P4000D", "'P4000D' is longer than 10 years"),
    ])
    def test_proposal_and_canary_durations_name_their_path_and_range(self, tmp_path: Path, data_dir: Path,
                                                                      value: str, problem: str) -> None:
        # a proposal and a canary read durations as a spec does (westworld/durations.py): the same words
        proposal = write(tmp_path, PROPOSAL + f"voting_window: {value}\n", "proposal.yaml")
        assert f"voting_window: {problem} {ALLOWED}" in refused(cli(["vote", "propose", str(proposal)], data_dir))
        canary = write(tmp_path, CANARY + f"bake_time: {value}\n", "canary.yaml")
        out = refused(cli(["experiment", "rollout", "start", str(canary)], data_dir))
        assert f"bake_time: {problem} {ALLOWED}" in out

    def test_a_negative_canary_duration(self, tmp_path: Path, data_dir: Path) -> None:
        canary = write(tmp_path, CANARY + "peer_wait: -60\n")
        out = refused(cli(["experiment", "rollout", "start", str(canary)], data_dir))
        assert f"peer_wait: -60 is negative {ALLOWED}" in out

    @pytest.mark.parametrize(("command", "option"), [(["stuck"], "--older-than"), (["demo"], "--part-timeout")])
    @pytest.mark.parametrize("value", ["99999999999d", "9" * 400 + "w"])
    def test_cli_durations_are_usage_errors_with_the_range(self, data_dir: Path, command: list[str], option: str,
                                                            value: str) -> None:
        out = refused(cli([*command, option, value], data_dir), code=2)
        assert f"Invalid value for '{option}': '{value[:40]}' is longer than 10 years {ALLOWED}" in out

    @pytest.mark.parametrize("value", [".nan", ".inf"])
    def test_numbers_are_finite_too(self, tmp_path: Path, data_dir: Path, value: str) -> None:
        """A NaN threshold never trips: a canary whose metric could never fail is refused, not run."""
        canary = write(tmp_path, CANARY + f"metrics:\n  - {{name: p95, query: 'up{{selector}}', threshold: "
                                          f"{{max: {value}}}}}\n")
        out = refused(cli(["experiment", "rollout", "start", str(canary)], data_dir))
        assert "metrics.0.threshold.max: Input should be a finite number" in out
        spec = write(tmp_path, SPEC.replace("threshold: {max: 0.5}", f"threshold: {{max: {value}}}", 1))
        out = refused(cli(["experiment", "validate", str(spec)]))
        assert "spec.metrics[0].threshold.max (line 35): Input should be a finite number" in out

    def test_a_policy_duration_beyond_ten_years(self, tmp_path: Path) -> None:
        text = DEFAULT_POLICY_FILE.read_text().replace("window_max: 2592000", "window_max: 99999999999999")
        with pytest.raises(ValueError, match=r"votes\.window_max"):
            read_policy_file(write(tmp_path, text, "policy.yaml"))


class TestAliasBombsAndDeepNesting:
    ATTACKS = [
        pytest.param(LAUGHS, "refused as a possible alias bomb", id="billion-laughs"),
        pytest.param("x: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested deeper than 64 levels", id="deep"),
        pytest.param("x: &a [1, *a]\n", "an alias refers to the collection that contains it", id="recursive"),
        pytest.param("x: [" + ", ".join(["&a 1"] + ["*a"] * 200) + "]\n", "more than 100 aliases", id="aliases"),
        pytest.param("x: " + "y" * 300_000 + "\n", "larger than the 262144 bytes an input document may have",
                     id="too-large"),
    ]

    @pytest.mark.parametrize(("command", "document", "key"), INPUTS)
    @pytest.mark.parametrize(("attack", "problem"), ATTACKS)
    def test_an_input_file_is_refused_fast(self, tmp_path: Path, data_dir: Path, command: list[str], document: str,
                                           key: tuple[str, int], attack: str, problem: str) -> None:
        file = write(tmp_path, document + attack)
        started = time.perf_counter()
        out = refused(cli([*command, str(file)], None if command[-1] == "validate" else data_dir))
        assert time.perf_counter() - started < 5
        assert f"error: {file}" in out and problem in out

    @pytest.mark.parametrize(("attack", "problem"), ATTACKS)
    def test_the_policy_file_is_refused_fast(self, tmp_path: Path, attack: str, problem: str) -> None:
        started = time.perf_counter()
        with pytest.raises(ValueError, match=problem):
            read_policy_file(write(tmp_path, DEFAULT_POLICY_FILE.read_text() + attack, "policy.yaml"))
        assert time.perf_counter() - started < 5

    async def test_a_workflow_started_with_an_alias_bomb_fails_at_once(self, harness: Harness) -> None:
        """Anyone who reaches Temporal can start ExperimentWorkflow with spec text: the worker must not hang."""
        started = time.perf_counter()
        with pytest.raises(WorkflowFailureError) as err:
            await harness.client.execute_workflow(
                ExperimentWorkflow.run, ExperimentInput(spec_yaml=SPEC + LAUGHS),
                id=f"experiment:bomb-{uuid.uuid4().hex[:8]}", task_queue=harness.task_queue)
        cause = err.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == INVALID_INPUT and cause.non_retryable
        assert "alias bomb" in cause.message
        assert time.perf_counter() - started < 30

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(
        st.lists(st.sampled_from(["a: ", "&x ", "*x", "[", "]", "{", "}", ", ", "\n", "  ", "- ", "<<: *x\n",
                                  "kind: ", "proposal:\n", "  id: ", "voting_window: ", ".inf", "9" * 30, "'",
                                  "\x00", "\t", "!!binary ", "? "]), max_size=50).map("".join),
        st.binary(max_size=200)))
    def test_fuzz_only_a_model_or_a_typed_refusal_comes_back(self, content: str | bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            file = write(Path(tmp), PROPOSAL.encode() + (content.encode() if isinstance(content, str) else content))
            for read in (lambda: load_model(file, DaoVoteInput), lambda: load_model(file, CanaryInput),
                         lambda: read_spec(file), lambda: read_policy_file(file)):
                started = time.perf_counter()
                message = str(file)
                try:
                    read()
                except InvalidInput as err:
                    message = err.message
                except ValueError as err:  # read_policy_file's refusal (the activity makes it PolicyInvalid)
                    message = str(err)
                assert message.startswith(str(file)), message
                assert time.perf_counter() - started < 5


class TestDuplicateKeys:
    @pytest.mark.parametrize(("command", "document", "key"), INPUTS)
    def test_a_repeated_key_is_refused_naming_it_and_both_lines(self, tmp_path: Path, data_dir: Path,
                                                                command: list[str], document: str,
                                                                key: tuple[str, int]) -> None:
        name, first = key
        file = write(tmp_path, document + f"{name}: again\n")
        line = document.count("\n") + 1
        out = refused(cli([*command, str(file)], None if command[-1] == "validate" else data_dir))
        assert f"error: {file}:{line}:1: duplicate key '{name}' (first at line {first})" in out

    def test_a_repeated_nested_key(self, tmp_path: Path) -> None:
        file = write(tmp_path, SPEC.replace("  name: mesh-node-1-4-0\n", "  name: mesh-node-1-4-0\n  name: other\n"))
        assert f"{file}:6:3: duplicate key 'name' (first at line 5)" in refused(cli(["experiment", "validate",
                                                                                      str(file)]))

    def test_the_policy_file(self, tmp_path: Path) -> None:
        text = DEFAULT_POLICY_FILE.read_text().replace('  quorum_min: "0.04"\n',
                                                       '  quorum_min: "0.04"\n  quorum_min: "0.01"\n')
        policy = write(tmp_path, text, "policy.yaml")
        with pytest.raises(ValueError, match=rf"^{policy}:8:3: duplicate key 'quorum_min' \(first at line 7\)"):
            read_policy_file(policy)


class TestStackDown:
    @pytest.mark.parametrize("command", [
        ["stuck"], ["vote", "status", "mesh-mtu-1400"], ["experiment", "status", "x"], ["experiment", "abort", "x"],
        ["experiment", "rollout", "pause", "x"], ["halt", "status"],
    ], ids=" ".join)
    def test_every_command_says_the_stack_is_down(self, data_dir: Path, command: list[str]) -> None:
        address = f"127.0.0.1:{free_port()}"
        out = refused(cli(command, data_dir, WESTWORLD_TEMPORAL_ADDRESS=address), EXIT_UNREACHABLE)
        assert f"error: cannot reach Temporal at {address}: is the stack up? run `westworld up`" in out

    def test_a_valid_proposal_meets_the_same_message(self, tmp_path: Path, data_dir: Path) -> None:
        address = f"127.0.0.1:{free_port()}"
        out = refused(cli(["vote", "propose", str(write(tmp_path, PROPOSAL))], data_dir,
                          WESTWORLD_TEMPORAL_ADDRESS=address), EXIT_UNREACHABLE)
        assert f"cannot reach Temporal at {address}: is the stack up? run `westworld up`" in out

    def test_the_installed_command_exits_3_without_a_traceback(self, data_dir: Path) -> None:
        address = f"127.0.0.1:{free_port()}"
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "westworld"), "stuck", "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "WESTWORLD_TEMPORAL_ADDRESS": address})
        assert proc.returncode == EXIT_UNREACHABLE, proc.stderr
        assert proc.stderr.strip() == f"error: cannot reach Temporal at {address}: is the stack up? run `westworld up`"

    def test_the_chain_down_is_named(self, data_dir: Path) -> None:
        """`vote cast` reads the chain; any command that reaches a chain that does not answer says so."""
        import typer

        from workers.cli.common import WestworldGroup

        rpc = f"http://127.0.0.1:{free_port()}"
        probe = typer.Typer(cls=WestworldGroup)

        @probe.command()
        def nonce() -> None:
            import asyncio

            asyncio.run(ChainClient.read_ballot_nonce(rpc, "0x" + "11" * 20, "0x" + "22" * 20))

        @probe.command()
        def other() -> None:
            pass

        result = CliRunner().invoke(probe, ["nonce"], env={"WESTWORLD_CHAIN_RPC_URL": rpc})
        out = refused(result, EXIT_UNREACHABLE)
        assert f"error: cannot reach the chain at {rpc.removeprefix('http://')}: is the stack up? run " \
               "`westworld up`" in out


class TestMissingDataDir:
    @pytest.mark.parametrize("command", [
        ["stuck"], ["status"], ["down"], ["keys", "rotate"], ["vote", "status", "p"], ["experiment", "status", "x"],
        ["experiment", "rollout", "abort", "x"], ["halt", "status"], ["shelter", "keygen", "--name", "alice"],
    ], ids=" ".join)
    def test_a_command_refuses_a_data_dir_that_does_not_exist(self, tmp_path: Path, command: list[str]) -> None:
        nowhere = tmp_path / "typo"
        out = refused(cli(command, nowhere))
        assert f"error: no Westworld data dir at {nowhere}: run `westworld up` or pass --data-dir" in out
        assert not nowhere.exists()  # no new database, no new key

    def test_the_default_data_dir_too(self, tmp_path: Path) -> None:
        nowhere = tmp_path / "xdg" / "westworld"
        out = refused(cli(["keys", "rotate"], XDG_DATA_HOME=str(tmp_path / "xdg"), WESTWORLD_DATA_DIR=None))
        assert f"no Westworld data dir at {nowhere}" in out and not nowhere.exists()

    def test_a_file_is_not_a_data_dir(self, tmp_path: Path) -> None:
        file = write(tmp_path, "x", "data")
        assert f"no Westworld data dir at {file}" in refused(cli(["stuck"], file))


class TestSettings:
    def test_a_missing_config_file_is_not_silently_ignored(self, tmp_path: Path, data_dir: Path) -> None:
        missing = tmp_path / "westworld.tmol"
        out = refused(cli(["stuck"], data_dir, WESTWORLD_CONFIG=str(missing)))
        assert f"error: WESTWORLD_CONFIG={missing}: cannot read: No such file or directory" in out

    def test_a_malformed_config_file_names_the_line(self, tmp_path: Path, data_dir: Path) -> None:
        config = write(tmp_path, 'temporal_address = "a"\ntemporal_address = "b"\n', "westworld.toml")
        out = refused(cli(["stuck"], data_dir, WESTWORLD_CONFIG=str(config)))
        assert f"error: {config}: malformed TOML: Cannot overwrite a value (at line 2" in out

    def test_a_setting_of_the_wrong_type_names_its_variable(self, data_dir: Path) -> None:
        out = refused(cli(["stuck"], data_dir, WESTWORLD_TEMPORAL_UI_PORT="eighty"))
        assert "error: invalid settings: temporal_ui_port (WESTWORLD_TEMPORAL_UI_PORT): Input should be a valid " \
               "integer" in out
