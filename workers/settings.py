"""Settings: the only place that reads the environment.

Every field can be set by an environment variable ``WESTWORLD_<FIELD>`` (upper case) or in a TOML file named
by ``WESTWORLD_CONFIG``; the environment wins over the file. The README's settings table mirrors this class.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from activities.charter_chain import DEFAULT_CHARTER_FILE, LOCAL_CHARTER_NAME
from activities.policy import DEFAULT_POLICY_FILE
from westworld.documents import decode_utf8
from westworld.errors import SettingsError

# anvil's first well-known development account: only ever funded on a local dev chain.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "westworld"


class Settings(BaseSettings):
    """Westworld settings (env ``WESTWORLD_<NAME>``, or the TOML file named by ``WESTWORLD_CONFIG``)."""

    model_config = SettingsConfigDict(env_prefix="WESTWORLD_", extra="forbid")

    data_dir: Path = Field(default_factory=_default_data_dir, description="State, logs and databases.")
    temporal_address: str = Field("127.0.0.1:7233", description="Temporal frontend host:port.")
    temporal_namespace: str = Field("default", description="Temporal namespace.")
    task_queue: str = Field("westworld", description="Task queue of the worker.")
    temporal_ui_port: int = Field(8233, description="Port of the Temporal UI started by `westworld up`.")
    temporal_http_port: int = Field(7243, description="Temporal HTTP API port started by `westworld up`.")
    temporal_metrics_port: int = Field(7235, description="Temporal server metrics port.")
    chain_rpc_url: str = Field("http://127.0.0.1:8545", description="EVM JSON-RPC endpoint.")
    chain_deployer_key: str = Field(ANVIL_DEV_KEY, description="Key that deploys contracts and relays votes.")
    chain_dev_time_travel: bool = Field(
        True, description="On a local dev chain (id 31337), advance chain time to deadlines the workflow reached."
    )
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means SQLite in the data dir. PostgreSQL: postgresql+asyncpg://..."
    )
    codec_key_file: Path | None = Field(None, description="Payload encryption keys (JSON); default in data dir.")
    codec_server_port: int = Field(8234, description="Port of the codec server the Temporal UI calls.")
    web_port: int = Field(8235, description="Port of the web process `westworld up` starts (the vote intake).")
    web_url: str = Field("", description="Where the CLI posts votes; empty means http://127.0.0.1:<web_port>.")
    codec_cors_origin: str = Field("http://127.0.0.1:8233", description="Origin allowed to call the codec server.")
    worker_metrics_port: int = Field(9464, description="Prometheus endpoint of the worker (SDK + own counters).")
    snapshot_hub_url: str = Field("https://hub.snapshot.org", description="Snapshot hub (GraphQL at /graphql).")
    snapshot_sequencer_url: str = Field("https://seq.snapshot.org", description="Snapshot sequencer endpoint.")
    snapshot_space: str = Field("westworld.eth", description="Snapshot space of the DAO.")
    notify_webhook_url: str = Field("", description="Webhook for notifications; empty logs them only.")
    ipfs_api_url: str = Field("http://127.0.0.1:5001", description="IPFS RPC (kubo /api/v0; js-ipfs locally).")
    arweave_url: str = Field("http://127.0.0.1:1984", description="Arweave gateway (arlocal here); empty: no Arweave.")
    arweave_wallet_file: Path | None = Field(None, description="Arweave JWK wallet; default in the data dir (created).")
    sia_url: str = Field("", description="Sia renterd API root; empty: Sia replicas are recorded as not configured.")
    sia_password: str = Field("", description="renterd API password (HTTP basic auth, empty user).")
    prometheus_port: int = Field(9090, description="Port of the Prometheus that `westworld up` starts.")
    prometheus_url: str = Field("", description="PromQL endpoint; empty means the embedded one on prometheus_port.")
    prometheus_scrape_interval: float = Field(1.0, gt=0, description="Scrape interval (s) of the embedded Prometheus.")
    sandbox_namespaces: bool = Field(
        True, description="Local sandboxes: network namespaces + kernel chaos when root; false forces userspace mode."
    )
    kube_config: str = Field(
        "", description="Kubeconfig of the cluster for kubernetes sandboxes and rollouts; empty: not configured."
    )
    policy_file: Path = Field(DEFAULT_POLICY_FILE, description="The network policy the DAO set (its SHA-256 must be "
                              "MeshConfig's `policy.sha256` on chain); see docs/security.md.")
    charter_file: Path = Field(DEFAULT_CHARTER_FILE, description="The Anti-Delos charter (its SHA-256 must be the "
                               "Charter contract's policyHash on chain, else it is refused); see "
                               "docs/charter-enforcement.md.")
    charter_gate_port: int = Field(9470, description="HTTP port of the charter gate: /metrics (what Prometheus "
                                   "scrapes), /status, and the worker's authenticated PUT /charter.")
    charter_gate_udp_port: int = Field(8125, description="UDP port the charter gate receives node telemetry on.")
    charter_gate_host: str = Field("127.0.0.1", description="Address the charter gate listens on (UDP and HTTP).")
    charter_kernel: bool = Field(True, description="The gate loads the eBPF filter at the telemetry's egress where "
                                 "the kernel allows (root, bcc, headers); false: the userspace gate only.")
    charter_kernel_device: str = Field("", description="Interface the telemetry leaves by; empty: the route to "
                                       "charter_gate_host (lo for a gate on 127.0.0.1).")
    prometheus_config_file: Path | None = Field(None, description="The Prometheus config the charter sync rewrites "
                                                "(metric_relabel_configs); default: the embedded one's.")
    anomaly_watch: bool = Field(
        True, description="`westworld up` starts the network's anomaly watch (workflow anomaly-watch, default "
        "thresholds) unless it runs; false leaves starting it to `westworld agent watch`."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = os.environ.get("WESTWORLD_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @model_validator(mode="after")
    def _local_charter(self) -> Settings:
        """The data dir's charter (``local-charter.yaml``: the shipped one plus the committee's report key, made by
        `westworld up` before it deploys the Charter; workers/stack/committee.py) when none was set."""
        local = self.data_dir / LOCAL_CHARTER_NAME
        if self.charter_file == DEFAULT_CHARTER_FILE and local.is_file():
            self.charter_file = local
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'westworld.db'}"

    @property
    def resolved_codec_key_file(self) -> Path:
        return self.codec_key_file or self.data_dir / "codec-keys.json"

    @property
    def contracts_file(self) -> Path:
        """Deployed contract addresses and ABIs, written by `westworld up`, read by the chain activities."""
        return self.data_dir / "contracts.json"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def resolved_web_url(self) -> str:
        return self.web_url.rstrip("/") or f"http://127.0.0.1:{self.web_port}"

    @property
    def resolved_prometheus_url(self) -> str:
        return self.prometheus_url or f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def resolved_prometheus_config(self) -> Path:
        return self.prometheus_config_file or self.data_dir / "prometheus" / "prometheus.json"

    @property
    def charter_gate_url(self) -> str:
        return f"http://{self.charter_gate_host}:{self.charter_gate_port}"

    @property
    def prometheus_targets_dir(self) -> Path:
        """file_sd target files (one per sandbox) the embedded Prometheus watches."""
        return self.data_dir / "prometheus" / "targets"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and the optional TOML file), with explicit overrides on top.

    Raises:
        SettingsError: naming each bad setting with its variable, or the config file and what is wrong with it
            (missing, not UTF-8 at byte N, malformed TOML at line L), never silently ignoring it.
    """
    _check_config_file(os.environ.get("WESTWORLD_CONFIG"))
    try:
        return Settings(**overrides)
    except ValidationError as err:
        fields = [str(e["loc"][0]) if e["loc"] else "(settings)" for e in err.errors()]
        problems = [f"{f} (WESTWORLD_{f.upper()}): {e['msg']}" for f, e in zip(fields, err.errors(), strict=True)]
        raise SettingsError("invalid settings: " + "; ".join(problems)) from err


def _check_config_file(name: str | None) -> None:
    if not name:
        return
    path = Path(name)
    try:
        content = path.read_bytes()
    except OSError as err:  # pydantic-settings would silently ignore a missing file
        raise SettingsError(f"WESTWORLD_CONFIG={name}: cannot read: {err.strerror}") from err
    try:
        tomllib.loads(decode_utf8(content, name))
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"{name}: malformed TOML: {err}") from err


def charter_gate_token_file(s: Settings) -> Path:
    """The token the worker presents to the charter gate's control routes (made by the gate, mode 0600)."""
    return s.data_dir / "charter-gate-token"


def charter_gate_key_file(s: Settings) -> Path:
    """The charter's pseudonymisation key (HMAC), held by the gate and the worker's export (mode 0600)."""
    return s.data_dir / "charter-pseudonym.key"
