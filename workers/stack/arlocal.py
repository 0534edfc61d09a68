"""Starting and stopping arlocal (npm ``arlocal``, a local Arweave gateway), shared by `westworld up` and the tests."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from westworld.errors import StartError
from workers.stack import processes

REPO = Path(__file__).resolve().parents[2]
ARLOCAL = REPO / "node_modules" / "arlocal" / "bin" / "index.js"


def find_arlocal() -> Path:
    if not ARLOCAL.exists():
        raise StartError(f"arlocal not found at {ARLOCAL}; run `./dev up` (it runs npm install)")
    return ARLOCAL


def arlocal_args(port: int, db_dir: Path) -> list[str]:
    db_dir.mkdir(parents=True, exist_ok=True)
    # arlocal writes a `logs` file into its working directory whatever its flags: run it from its own data dir.
    return ["env", "-C", str(db_dir), "node", str(find_arlocal()), str(port), f"--dbpath={db_dir}", "--hidelogs"]


def network(url: str, timeout: float = 1.0) -> str | None:
    """The ``network`` field of ``/info`` (``arlocal.N.1`` on arlocal), or None if nothing answers."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/info", timeout=timeout) as resp:  # noqa: S310 (local)
            return str(json.loads(resp.read())["network"])
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return None


def start_arlocal(port: int, db_dir: Path, log_path: Path, timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """Start arlocal on 127.0.0.1:``port`` with its database in ``db_dir``; return once ``/info`` answers."""
    db_dir.mkdir(parents=True, exist_ok=True)
    proc = processes.spawn(arlocal_args(port, db_dir), log_path)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if network(url) is not None:
            return proc
        if proc.poll() is not None:
            raise StartError(f"arlocal exited with code {proc.returncode} before answering on {url}; "
                                       f"see {log_path}")
        time.sleep(0.1)
    processes.stop(proc)
    raise StartError(f"arlocal did not answer /info on {url} within {timeout:.0f}s; see {log_path}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    processes.stop(proc)
