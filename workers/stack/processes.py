"""Starting and stopping the local processes the stack and the test fixtures share (Temporal dev server).

Each ``start_*`` returns a running ``subprocess.Popen`` once the service answers, or raises ``StartError``
with what went wrong and where its log is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from westworld.errors import StartError

MAX_IN_FLIGHT_UPDATES = 500


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def venv_bin(name: str) -> Path:
    """A console script installed next to the running interpreter (temporal, temporal-test-server...)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise StartError(f"{name} is not installed at {path}; run `./dev up` (it installs the pinned packages)")
    return path


def spawn(args: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a process in its own session, output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def wait_for_port(proc: subprocess.Popen[bytes] | None, port: int, what: str, log_path: Path,
                  timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise StartError(f"{what} exited with code {proc.returncode} before listening on {port}; see {log_path}")
        time.sleep(0.05)
    raise StartError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s; see {log_path}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a process started by ``spawn`` (SIGTERM to its group, SIGKILL after ``timeout``)."""
    stop_pid(proc.pid, timeout)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1)


def stop_pid(pid: int, timeout: float = 10.0) -> bool:
    """Stop a process group by its leader's pid; False if it was not running."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


QUEUE_READER_RPS = 1000


def temporal_args(
    *,
    db_file: Path | None,
    port: int,
    ui_port: int | None,
    http_port: int,
    metrics_port: int,
    search_attributes: Mapping[str, str],
    time_skipping: bool = False,
    codec_endpoint: str | None = None,
) -> list[str]:
    """Command line of the Temporal CLI dev server (SQLite file, UI, the project's search attributes)."""
    args = [str(venv_bin("temporal")), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
            "--http-port", str(http_port), "--metrics-port", str(metrics_port), "--log-level", "warn",
            "--sqlite-pragma", "journal_mode=WAL", "--sqlite-pragma", "synchronous=NORMAL"]
    if db_file is not None:
        args += ["--db-filename", str(db_file)]
    if ui_port is None:
        args += ["--headless"]
    else:
        args += ["--ui-port", str(ui_port), "--ui-ip", "127.0.0.1", "--ui-disable-news-fetch"]
        if codec_endpoint:
            args += ["--ui-codec-endpoint", codec_endpoint]
    # Votes are updates to one workflow: allow many concurrent voters (server default: 10 in flight).
    args += ["--dynamic-config-value", f"history.maxInFlightUpdates={MAX_IN_FLIGHT_UPDATES}"]
    # The dev server has one history shard, and its queue readers fetch at most 20 times a second per shard by default
    # (history.<queue>ProcessorMaxPollRPS): past a short burst every workflow task waited up to 50 ms before a worker
    # got it — the "50 ms per activity" steps callers saw (2 activities: 150 ms p50; with this: 27 ms). An idle
    # reader still only reads when told there are new tasks.
    for queue in ("transfer", "timer", "visibility"):
        args += ["--dynamic-config-value", f"history.{queue}ProcessorMaxPollRPS={QUEUE_READER_RPS}"]
    for name, kind in search_attributes.items():
        args += ["--search-attribute", f"{name}={kind}"]
    if time_skipping:
        args += ["--dynamic-config-value", "frontend.WorkflowTimeSkippingEnabled=true",
                 "--dynamic-config-value", 'history.timerProcessorMaxTimeShift="10ms"']
    return args

