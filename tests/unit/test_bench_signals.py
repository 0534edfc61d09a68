"""A benchmark stopped with SIGTERM stops the servers it started: `./dev bench votes` (the runner, then the votes
benchmark, which starts a Temporal dev server and anvil in sessions of their own) is sent SIGTERM once both servers
run, and every process under it must be gone. Real processes; nothing is mocked."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> dict[int, str]:
    """Every process under ``pid`` (children of children too), with its command line."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found[int(child)] = cmd
                found |= descendants(int(child))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_a_benchmark_stopped_with_sigterm_stops_its_temporal_server_and_anvil() -> None:
    bench = subprocess.Popen([sys.executable, "-m", "tests.bench", "votes", "--", "--votes", "10", "--big", "0"],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and bench.poll() is None:
            seen |= descendants(bench.pid)
            if any("temporal server" in c for c in seen.values()) and any("anvil" in c for c in seen.values()):
                break
            time.sleep(0.1)
        assert bench.poll() is None, f"the benchmark ended before both servers ran: {bench.stderr.read()!r}"  # type: ignore[union-attr]
        assert any("anvil" in c for c in seen.values()), f"no anvil within 120 s: {seen}"
        bench.send_signal(signal.SIGTERM)
        bench.wait(timeout=60)
        assert bench.returncode == 128 + signal.SIGTERM
        deadline = time.monotonic() + 20
        while (left := {p: c for p, c in seen.items() if alive(p)}) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"still running after the benchmark was stopped: {left}"
    finally:
        for pid in [bench.pid, *seen]:  # never leak the servers, even when the test fails
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
