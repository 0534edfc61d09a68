"""Finding and starting anvil (npm @foundry-rs/anvil), shared by `westworld up` and the test fixtures."""

from __future__ import annotations

import subprocess
from pathlib import Path

from workers import processes

REPO = Path(__file__).resolve().parents[1]
ANVIL = REPO / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
CONTRACTS_BUILD = REPO / "contracts" / "build" / "Contracts.json"


def find_anvil() -> Path:
    if not ANVIL.exists():
        raise processes.StartError(f"anvil not found at {ANVIL}; run `./dev up` (it runs npm install)")
    return ANVIL


def anvil_args(port: int, state_file: Path | None = None) -> list[str]:
    args = [str(find_anvil()), "--host", "127.0.0.1", "--port", str(port), "--silent", "--chain-id", "31337"]
    if state_file is not None:
        args += ["--state", str(state_file)]
    return args


def start_anvil(port: int, log_path: Path, state_file: Path | None = None) -> subprocess.Popen[bytes]:
    proc = processes.spawn(anvil_args(port, state_file), log_path)
    processes.wait_for_port(proc, port, "anvil", log_path)
    return proc
