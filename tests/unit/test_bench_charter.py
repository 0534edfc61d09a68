"""`./dev bench charter` on real processes: a short run prints the kernel filter's figure (or why it is not measured)
and the gate's ratio, leaving no network namespace behind; SIGTERM while the C sender runs between two namespaces
stops the sender, deletes the namespaces (and the veth and tc filters in them) and exits 128 + SIGTERM."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.test_bench_signals import alive, descendants

REPO = Path(__file__).resolve().parents[2]
BENCH = [sys.executable, "-m", "tests.bench", "charter", "--"]


def namespaces_of(pid: int) -> list[str]:
    """The bench's network namespaces (named wwbench<its pid>a/b) that still exist."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"wwbench{pid % 100000}")]


def bench_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("wwbench")}


def test_a_short_run_prints_both_figures_and_leaves_nothing() -> None:
    before = bench_namespaces()
    done = subprocess.run([*BENCH, "--skip", "rights", "--rounds", "1", "--seconds", "0.3",
                           "--gate-datagrams", "3000"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    kernel = out.split("-- kernel filter")[1].split("-- userspace gate")[0]
    assert "THE FIGURE" in kernel or "not measured: " in kernel, kernel
    if "THE FIGURE" in kernel:
        assert "datagrams judged = all sent" in kernel
    assert "the gate's ratio to the bare loop: " in out
    assert bench_namespaces() <= before


def test_sigterm_while_sending_leaves_no_process_nor_namespace() -> None:
    if os.geteuid() != 0 or shutil.which("gcc") is None:
        pytest.skip("the kernel part needs root and gcc")
    bench = subprocess.Popen([*BENCH, "--skip", "gate", "--skip", "rights", "--seconds", "3"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[int, str] = {}
    runner_child = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and bench.poll() is None:
            seen |= descendants(bench.pid)
            if any(c.split()[:1] and c.split()[0].endswith("/charter_sender") for c in seen.values()):
                break
            time.sleep(0.05)
        assert bench.poll() is None, f"the bench ended before its sender ran: {bench.communicate()}"
        runner_child = min(p for p, c in seen.items() if "tests.bench.charter" in c)
        assert namespaces_of(runner_child), "the sender runs but no namespace is there"
        bench.send_signal(signal.SIGTERM)
        bench.wait(timeout=60)
        assert bench.returncode == 128 + signal.SIGTERM
        deadline = time.monotonic() + 20
        while (left := {p: c for p, c in seen.items() if alive(p)}) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"still running after the benchmark was stopped: {left}"
        assert namespaces_of(runner_child) == []
    finally:
        for pid in [bench.pid, *seen]:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for ns in namespaces_of(runner_child) if runner_child else []:
            subprocess.run(["ip", "netns", "del", ns], check=False)
