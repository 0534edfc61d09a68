"""Initialising, starting and stopping a js-ipfs daemon (npm ``ipfs@0.66.1``), shared by `westworld up` and the tests.

js-ipfs serves the same ``/api/v0`` RPC as kubo (kubo itself cannot be installed here: its npm package downloads
the binary). The repo is initialised offline: no bootstrap peers, MDNS and webRTCStar discovery off, no preload,
and every listener (API, Gateway, Swarm) on a loopback port, so the node never dials out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from westworld.errors import StartError
from workers.stack import processes

REPO = Path(__file__).resolve().parents[2]
JSIPFS = REPO / "node_modules" / "ipfs" / "src" / "cli.js"


def find_jsipfs() -> Path:
    if not JSIPFS.exists():
        raise StartError(f"js-ipfs not found at {JSIPFS}; run `./dev up` (it runs npm install)")
    return JSIPFS


def _env(repo: Path) -> dict[str, str]:
    return {"IPFS_PATH": str(repo), "IPFS_MONITORING": "", "DEBUG": ""}


def init_repo(repo: Path, api_port: int, gateway_port: int, swarm_port: int, log_path: Path) -> None:
    """Create (once) and configure (every time: the ports may change) an offline js-ipfs repo at ``repo``."""
    if not (repo / "config").exists():
        repo.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            subprocess.run(["node", str(find_jsipfs()), "init", "--empty-repo"], env={**os.environ, **_env(repo)},
                           stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120)
    config_file = repo / "config"
    config = json.loads(config_file.read_text())
    config["Addresses"].update({
        "Swarm": [f"/ip4/127.0.0.1/tcp/{swarm_port}"],
        "API": f"/ip4/127.0.0.1/tcp/{api_port}",
        "Gateway": f"/ip4/127.0.0.1/tcp/{gateway_port}",
        "Delegates": [],
    })
    config["Addresses"].pop("RPC", None)  # a second RPC listener js-ipfs does not need
    config["Bootstrap"] = []
    config["Discovery"] = {"MDNS": {"Enabled": False, "Interval": 10}, "webRTCStar": {"Enabled": False}}
    config_file.write_text(json.dumps(config, indent=2))


def _clear_stale_lock(repo: Path) -> None:
    """A daemon killed hard leaves ``repo.lock`` (a directory) and ``api`` behind, and they stop the next start.
    They are removed only when the API address they name does not answer (no live daemon owns the repo)."""
    api_file = repo / "api"
    if api_file.exists():
        addr = api_file.read_text().strip().split("/")  # /ip4/127.0.0.1/tcp/PORT
        if len(addr) >= 5 and api_version(f"http://{addr[2]}:{addr[4]}") is not None:
            raise StartError(f"a js-ipfs daemon already runs on {repo} (API {api_file.read_text()})")
        api_file.unlink()
    if (repo / "repo.lock").is_dir():
        shutil.rmtree(repo / "repo.lock")


def daemon_args() -> list[str]:
    return ["node", str(find_jsipfs()), "daemon", "--offline", "--enable-preload=false"]


def api_version(api_url: str, timeout: float = 1.0) -> str | None:
    """The daemon's version from ``/api/v0/version``, or None if it does not answer."""
    req = urllib.request.Request(f"{api_url.rstrip('/')}/api/v0/version", method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (http to a local daemon)
            return str(json.loads(resp.read())["Version"])
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return None


def start_ipfs(repo: Path, api_port: int, log_path: Path, timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """Start js-ipfs on ``repo`` (initialised if needed) and return once its RPC answers; ``StartError`` else."""
    gateway_port, swarm_port = processes.free_port(), processes.free_port()
    init_repo(repo, api_port, gateway_port, swarm_port, log_path)
    _clear_stale_lock(repo)
    proc = processes.spawn(daemon_args(), log_path, env=_env(repo))
    url = f"http://127.0.0.1:{api_port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api_version(url) is not None:
            return proc
        if proc.poll() is not None:
            raise StartError(f"js-ipfs exited with code {proc.returncode} before answering on {url}; "
                                       f"see {log_path}")
        time.sleep(0.1)
    processes.stop(proc)
    raise StartError(f"js-ipfs did not answer /api/v0/version on {url} within {timeout:.0f}s; "
                               f"see {log_path}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    processes.stop(proc)


def stack_args(repo: Path, api_port: int, log_path: Path) -> list[str]:
    """Command line for `westworld up`: the repo is initialised/configured first, IPFS_PATH passed via ``env``."""
    init_repo(repo, api_port, processes.free_port(), processes.free_port(), log_path)
    _clear_stale_lock(repo)
    return ["env", f"IPFS_PATH={repo}", *daemon_args()]
