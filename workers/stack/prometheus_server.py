"""Launcher of the embedded Prometheus (Debian package ``prometheus``) that scrapes the local sandboxes' nodes.

Sandboxes register their nodes as file_sd target files, ``<targets dir>/<sandbox id>.json``, each target labelled
``sandbox``, ``arm`` and ``node``; Prometheus watches the directory, so a new sandbox is scraped within a scrape
interval of being written, and a removed file stops its scrapes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from westworld.charter_sync import CHARTER_JOB, fail_closed_relabel
from westworld.errors import StartError
from workers.stack import processes

CONFIG_NAME = "prometheus.json"  # YAML is a superset of JSON: no YAML writer needed


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        raise StartError("prometheus is not installed: `apt-get install -y --no-install-recommends "
                                   "prometheus` (./dev up and ./dev test install it)")
    return found


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def render_config(targets_dir: Path, scrape_interval: float, static_targets: dict[str, str] | None = None) -> str:
    """The config: one file_sd job over ``targets_dir/*.json``, plus ``job name -> host:port`` static jobs."""
    interval = _duration(scrape_interval)
    jobs: list[dict[str, object]] = [{
        "job_name": "mesh",
        "file_sd_configs": [{"files": [str(targets_dir / "*.json")], "refresh_interval": "1s"}],
    }]
    for name, target in (static_targets or {}).items():
        job: dict[str, object] = {"job_name": name, "static_configs": [{"targets": [target]}]}
        if name == CHARTER_JOB:  # closed until the charter sync writes the charter's rules (and reloads)
            job["metric_relabel_configs"] = fail_closed_relabel()
        jobs.append(job)
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }
    return json.dumps(config, indent=2)


def prometheus_args(port: int, home: Path, scrape_interval: float, static_targets: dict[str, str] | None = None,
                    targets_dir: Path | None = None) -> list[str]:
    """Write the config under ``home`` and return the command line (TSDB in ``home/tsdb``, listening on loopback)."""
    targets = targets_dir or home / "targets"
    targets.mkdir(parents=True, exist_ok=True)
    config = home / CONFIG_NAME
    config.write_text(render_config(targets, scrape_interval, static_targets))
    return [prometheus_binary(), f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={home / 'tsdb'}", "--storage.tsdb.retention.time=2d", "--log.level=warn",
            "--web.enable-lifecycle",  # POST /-/reload: the charter sync reloads the scrape rules it rewrote
            "--web.enable-admin-api"]  # delete_series + clean_tombstones: consent withdrawals and retention purges


def start_prometheus(port: int, home: Path, scrape_interval: float,
                     static_targets: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start Prometheus and return it once it listens (raises ``StartError`` naming its log otherwise)."""
    log = home / "prometheus.log"
    proc = processes.spawn(prometheus_args(port, home, scrape_interval, static_targets), log)
    try:
        processes.wait_for_port(proc, port, "prometheus", log)
    except StartError:
        processes.stop(proc)
        raise
    return proc
