"""docs/getting-started.md, run as a new user runs it: every ```sh/```bash/```console block, in order, against a real
stack in a temporary data dir, so the page cannot drift from what the commands do.

Each block runs in its own ``bash -e -o pipefail`` (a failing command fails the block), in the folder the previous
block ended in (a ``cd`` carries over, as in one terminal), with a temporary ``HOME`` and the stack's ``WESTWORLD_*``
settings on free ports (``TEMPORAL_ADDRESS`` for Temporal's own CLI). A block must exit 0, or the code its
``# exit: N`` line names, and print every ``# expect: TEXT`` of its lines (stdout and stderr together).

One substitution, and only one: ``./dev up`` is what it runs after installing (the test environment is installed
already): ``westworld up``, ``westworld demo``, ``westworld status``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.stack_env import stack_ports_env
from workers.stack.processes import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "getting-started.md"
FENCE = re.compile(r"^```(sh|bash|console)[ \t]*\n(.*?)^```", re.S | re.M)
EXPECT = re.compile(r"^\s*# expect: (.+?)\s*$", re.M)
EXIT = re.compile(r"^\s*# exit: (\d+)\s*$", re.M)
DEV_UP = "westworld up\nwestworld demo\nwestworld status"
BLOCK_TIMEOUT = 900.0


@dataclass(frozen=True)
class Block:
    line: int
    script: str
    expects: tuple[str, ...]
    exit_code: int

    def __str__(self) -> str:
        return f"getting-started.md:{self.line}"


def shell_blocks(text: str) -> list[Block]:
    blocks = []
    for m in FENCE.finditer(text):
        body = m.group(2)
        if m.group(1) == "console":  # prompts are not part of the command
            body = "\n".join(line.removeprefix("$ ") for line in body.splitlines())
        code = EXIT.search(body)
        blocks.append(Block(text[: m.start()].count("\n") + 1, body.replace("./dev up", DEV_UP),
                            tuple(EXPECT.findall(body)), int(code.group(1)) if code else 0))
    return blocks


def test_the_page_is_what_the_test_reads() -> None:
    """The parser sees the page's steps: the stack, keys, power, a vote, an experiment, a document."""
    blocks = shell_blocks(PAGE.read_text())
    joined = "\n".join(b.script for b in blocks)
    for step in ("westworld up", "westworld vote keygen", "westworld vote faucet", "westworld vote delegate",
                 "westworld vote propose", "westworld experiment start", "westworld shelter store",
                 "westworld shelter open"):
        assert step in joined, step
    assert all(b.expects for b in blocks), [str(b) for b in blocks if not b.expects]
    assert any(b.exit_code == 1 for b in blocks)


@pytest.fixture(scope="module")
def user_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("home")
    temporal = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLUMNS": "200",
        "TEMPORAL_ADDRESS": temporal,
        **stack_ports_env(home / ".local" / "share" / "westworld", temporal),
    }
    env.pop("VIRTUAL_ENV", None)
    try:
        yield env
    finally:
        subprocess.run([sys.executable, "-m", "workers.main", "down"], env=env, capture_output=True, check=False,
                       timeout=120)


def run_block(block: Block, env: dict[str, str], cwd: Path, state: Path) -> tuple[int, str]:
    script = f"cd {str(cwd)!r}\n{block.script}\npwd > {str(state)!r}\n"
    try:
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], env=env, capture_output=True,
                              text=True, timeout=BLOCK_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as err:
        out = "".join(b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
                      for b in (err.stdout, err.stderr))
        raise AssertionError(f"{block} still running after {BLOCK_TIMEOUT:.0f} s; it printed:\n{out}") from None
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.timeout(3600)
def test_getting_started_runs_as_written(user_env: dict[str, str], tmp_path: Path) -> None:
    state = tmp_path / "cwd"
    cwd = REPO  # `./dev up` runs in the clone
    for block in shell_blocks(PAGE.read_text()):
        code, out = run_block(block, user_env, cwd, state)
        assert code == block.exit_code, (
            f"{block} exited {code}, the page says {block.exit_code}:\n{block.script}\n--- output ---\n{out}")
        missing = [e for e in block.expects if e not in out]
        assert not missing, f"{block} did not print {missing}:\n{block.script}\n--- output ---\n{out}"
        if state.exists():
            cwd = Path(state.read_text().strip())
