"""End to end: the `westworld` CLI brings a private stack up on free ports, runs a vote, verifies, goes down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from tests.fixtures.stack_env import stack_ports_env
from westworld.keys import vote_id
from workers.cli.common import EXIT_NO

pytestmark = pytest.mark.e2e


def run(env: dict[str, str], *args: str, ok: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`westworld ARGS`; a run that overruns `timeout` fails with what it printed so far (where it hung)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "workers.main", *args], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        out, errout = (b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
                       for b in (err.stdout, err.stderr))
        raise AssertionError(f"westworld {' '.join(args)} still running after {timeout:.0f} s; it printed:\n"
                             f"{out}\n{errout}") from None
    if ok and proc.returncode != 0:
        raise AssertionError(f"westworld {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    data = tmp_path_factory.mktemp("stack")
    env = {**os.environ, **stack_ports_env(data)}
    run(env, "up", timeout=300)
    try:
        yield env
    finally:
        run(env, "down", ok=False)


def test_up_twice_is_a_no_op_and_status_shows_health(stack_env: dict[str, str]) -> None:
    again = run(stack_env, "up")
    for name in ("temporal", "chain", "codec-server", "charter-gate", "prometheus", "ipfs", "arlocal", "worker", "web"):
        assert f"{name:13} already running" in again.stdout, again.stdout
    assert "started" not in again.stdout, again.stdout
    status = run(stack_env, "status").stdout
    assert status.count(" up (pid ") == 9, status  # with charter-gate and web


def test_vote_through_the_cli(stack_env: dict[str, str], tmp_path: Path) -> None:
    data = Path(stack_env["WESTWORLD_DATA_DIR"])
    demo = run(stack_env, "demo", "--only", "vote", timeout=240).stdout
    assert "APPROVED" in demo and "executed" in demo.lower()
    assert "=== demo: vote passed in" in demo
    keys = sorted((data / "demo-keys").glob("*.key"))
    assert len(keys) >= 3
    pid = f"cli-{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "proposal.yaml"
    spec.write_text(f"proposal:\n  id: {pid}\n  title: Rotate relay keys\nkind: emergency\n")  # the policy's quorum
    assert "started vote:" + pid in run(stack_env, "vote", "propose", str(spec)).stdout
    assert "already exists" in run(stack_env, "vote", "propose", str(spec), ok=False).stderr
    accepted = run(stack_env, "vote", "cast", pid, "--choice", "for", "--key", str(keys[0])).stdout
    assert "accepted" in accepted
    again = run(stack_env, "vote", "cast", pid, "--choice", "against", "--key", str(keys[0]), ok=False)
    assert again.returncode == 1 and "AlreadyVoted" in again.stderr
    stranger = tmp_path / "stranger.key"
    stranger.write_text(Account.create("stranger").key.hex())
    nopower = run(stack_env, "vote", "cast", pid, "--choice", "for", "--key", str(stranger), ok=False)
    assert "NoVotingPower" in nopower.stderr
    assert "unknown proposal" in run(stack_env, "vote", "status", "no-such-proposal", ok=False).stderr
    assert f"{pid}: open" in run(stack_env, "vote", "status", pid).stdout
    assert vote_id(pid) in run(stack_env, "stuck", "--older-than", "0s").stdout
    assert "audit log OK" in run(stack_env, "audit", "verify").stdout


# What each part's demo must show (beyond finishing): `./dev up` runs them all; here each part gets its own time.
PART_SHOWS = {
    "experiments": ("-> PROMOTED (20 of 20 node(s) on 1.4.0)", "FAIL (score 0.0)", "-> ROLLED BACK"),
    "capabilities": ("-> allowed: executed on 3 nodes", "signature refused"),
    "shelter": ("emergency request to plaintext",),
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("part", list(PART_SHOWS))
def test_each_part_demo_on_the_stack(stack_env: dict[str, str], part: str) -> None:
    """Runs after the vote demo (file order): it funded the voters the other parts use."""
    out = run(stack_env, "demo", "--only", part, "--part-timeout", "9m", timeout=570).stdout
    assert f"=== demo: {part} passed in" in out, out
    for line in PART_SHOWS[part]:
        assert line in out, f"{line!r} missing from the {part} demo:\n{out}"


def _live_nodes(env: dict[str, str]) -> str:
    return run(env, "agent", "peers", "list").stdout.strip().splitlines()[-1]  # "N nodes, M peers"


@pytest.mark.timeout(900)
def test_the_demo_passes_again_on_the_same_data_dir(stack_env: dict[str, str]) -> None:
    """Runs after every part's first demo (file order): a second run of each on the same data dir passes too and
    leaves the capability registry as it found it (what a run registers for its own mesh, it deregisters)."""
    before = _live_nodes(stack_env)
    out = run(stack_env, "demo", "--part-timeout", "9m", timeout=870).stdout
    for part, shows in {"vote": ("APPROVED",), **PART_SHOWS}.items():
        assert f"=== demo: {part} passed in" in out, out
        for line in shows:
            assert line in out, f"{line!r} missing from the second {part} demo:\n{out}"
    assert _live_nodes(stack_env) == before


def test_demo_part_timeout_names_what_still_runs(stack_env: dict[str, str]) -> None:
    out = run(stack_env, "demo", "--only", "vote", "--part-timeout", "1s", ok=False)
    assert out.returncode != 0
    assert "did not finish within 1 s" in out.stdout and "DemoTimeout" in out.stderr, out.stdout + out.stderr
    usage = run({**stack_env, "COLUMNS": "300"}, "demo", "--part-timeout", "ten", ok=False)
    assert usage.returncode == 2 and "'--part-timeout': 'ten'" in usage.stderr, usage.stderr


def test_malformed_proposal_names_each_problem(stack_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("proposal:\n  id: Not Valid!\nquorum: 2\n")
    out = run(stack_env, "vote", "propose", str(bad), ok=False).stderr
    assert "proposal.id" in out and "proposal.title" in out and "quorum" in out
    broken = tmp_path / "broken.yaml"
    broken.write_text("proposal: [unclosed\n")
    assert "malformed YAML" in run(stack_env, "vote", "propose", str(broken), ok=False).stderr


def test_tampered_audit_log_is_named(stack_env: dict[str, str]) -> None:
    import sqlite3

    db = Path(stack_env["WESTWORLD_DATA_DIR"]) / "westworld.db"
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT seq, payload FROM audit_entries ORDER BY seq LIMIT 1").fetchone()
        payload = json.loads(row[1])
        payload["decision"] = "rejected"
        conn.execute("UPDATE audit_entries SET payload = ? WHERE seq = ?", (json.dumps(payload), row[0]))
    out = run(stack_env, "audit", "verify", ok=False)
    assert out.returncode == EXIT_NO and f"entry {row[0]}" in out.stdout
