"""Starting and stopping arlocal (npm ``arlocal``, a local Arweave gateway), shared by `westworld up` and the tests."""

from __future__ import annotations

import subprocess
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


def stop(proc: subprocess.Popen[bytes]) -> None:
    processes.stop(proc)
