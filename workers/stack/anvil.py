"""Finding, starting and stopping anvil (npm ``@foundry-rs/anvil``), shared by `westworld up` and the test fixtures."""

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
ANVIL = REPO / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
CONTRACTS_BUILD = REPO / "contracts" / "build" / "Contracts.json"
DEV_CHAIN_ID = 31337


def find_anvil() -> Path:
    """The anvil binary installed by npm; ``StartError`` telling how to install it if it is missing."""
    if not ANVIL.exists():
        raise StartError(f"anvil not found at {ANVIL}; run `./dev up` (it runs npm install)")
    return ANVIL


def anvil_args(port: int, state_file: Path | None = None) -> list[str]:
    """Command line of a local dev chain (id 31337) on 127.0.0.1:``port``, persisted to ``state_file`` if given."""
    # --max-persisted-states 0: anvil spills every historical block state beyond those it keeps in memory to
    # ~/.foundry/anvil/tmp and never removes them (22 GB for one test session here, until the disk was full);
    # nothing reads a state that old (no call names a past block: the Governor and the token keep their own
    # checkpoints), so states past the in-memory ones are dropped instead
    args = [str(find_anvil()), "--host", "127.0.0.1", "--port", str(port), "--silent",
            "--chain-id", str(DEV_CHAIN_ID), "--max-persisted-states", "0"]
    if state_file is not None:
        args += ["--state", str(state_file)]
    return args


def chain_id(url: str, timeout: float = 1.0) -> int | None:
    """``eth_chainId`` of the node at ``url``, or None if it does not answer."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (http to a local node)
            return int(json.loads(resp.read())["result"], 16)
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return None


def start_anvil(port: int, log_path: Path, state_file: Path | None = None,
                timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """Start anvil and return once it answers ``eth_chainId``; ``StartError`` naming its log otherwise."""
    proc = processes.spawn(anvil_args(port, state_file), log_path)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if chain_id(url) is not None:
            return proc
        if proc.poll() is not None:
            raise StartError(f"anvil exited with code {proc.returncode} before answering on {url}; "
                                       f"see {log_path}")
        time.sleep(0.05)
    stop(proc)
    raise StartError(f"anvil did not answer eth_chainId on {url} within {timeout:.0f}s; see {log_path}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop an anvil started by ``start_anvil``."""
    processes.stop(proc)
