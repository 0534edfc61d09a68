"""A benchmark stopped with SIGTERM (or SIGHUP: its terminal went away) stops what it started.

The servers a benchmark starts (Temporal dev server, anvil, Prometheus, etcd, kube-apiserver) run in sessions of
their own (``workers/stack/processes.spawn``), so a signal to the benchmark does not reach them, and Python's default
SIGTERM ends the process without running its ``finally`` blocks: they kept running. With :func:`stop_on_signals`
the signal becomes ``SystemExit(128 + signal)`` in the main thread, so every ``finally``/``with`` that stops a server
runs (under ``asyncio.run`` the main task is cancelled and unwinds); a second signal during that cleanup is ignored.
A server whose start the signal interrupted (started, not yet handed to the code that stops it) is stopped at exit:
every child process still running then is terminated (killed after 5 s).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _exit(signum: int, _frame: FrameType | None) -> None:
    for s in SIGNALS:  # once: the cleanup that follows runs undisturbed
        signal.signal(s, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def stop_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into SystemExit, so the benchmark's cleanup runs, and stop any child process still
    running at exit (call first thing in ``main``)."""
    for s in SIGNALS:
        signal.signal(s, _exit)
    atexit.register(stop_children)


def children() -> list[int]:
    """This process's child processes that are still running (zombies excluded)."""
    found = []
    for task in Path("/proc/self/task").glob("*"):
        with contextlib.suppress(OSError):
            for pid in (task / "children").read_text().split():
                with contextlib.suppress(OSError, IndexError):
                    if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                        found.append(int(pid))
    return found


def stop_children(grace: float = 5.0) -> None:
    """SIGTERM every running child, SIGKILL those still there after ``grace`` seconds, and reap them."""
    pids = children()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        for pid in list(pids):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    pids.remove(pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def run_child(args: list[str]) -> int:
    """Run one benchmark as a child process; a SIGTERM or SIGHUP to this runner is passed on to it and its exit
    awaited (it stops its own servers), then this runner exits with ``128 + signal``."""
    child = subprocess.Popen(args)
    got: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        got.append(signum)
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in SIGNALS}
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if got:
        sys.exit(128 + got[0])
    return code
