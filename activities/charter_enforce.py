"""Putting the charter in force at every enforcement point: the gate (userspace), its kernel filter, and the scrape.

``charter_enforce`` reads the configured charter file and refuses it unless its SHA-256 is the hash the Charter
contract holds (and its version the contract's). Then it pushes the bytes to the charter gate (``PUT /charter``
with the gate's token; the gate re-checks the hash, validates, and sets its kernel map), writes the charter's
``metric_relabel_configs`` into every Prometheus job that scrapes the gate and reloads Prometheus when they changed,
and reads back the drop counters for the audit trail. Idempotent: a charter already in force is ``unchanged``
everywhere and nothing is reloaded.

A gate or Prometheus that does not answer is reported as ``unavailable`` (the sync tries again at its next poll;
meanwhile the gate, closed until a charter is pushed, drops everything).

The gate opens no database, so after it starts it holds no consents: when its answer says they are not loaded, the
activity reads the consents in force from the store (``consents``, the worker's CharterStore) and pushes them
(``PUT /consents``) right after the charter, so a restarted gate lets consented series through again at the same
poll that reopens it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from temporalio import activity

from activities.charter_chain import read_charter_file
from westworld.charter import Charter, charter_hash
from westworld.charter_sync import (
    CHARTER_JOB,
    CharterEnforceInput,
    CharterEnforceResult,
    LayerState,
    metric_relabel_configs,
)
from westworld.errors import CharterInvalid, InvalidInput

HASH_HEADER = "X-Charter-Hash"
ConsentSource = Callable[[], Awaitable[list[tuple[str, str]]]]


class CharterEnforcement:
    """The enforcement points of one host: the gate at ``gate_url`` and the Prometheus configured in ``config``."""

    def __init__(self, http: httpx.AsyncClient, charter_file: Path, gate_url: str, gate_token_file: Path,
                 prometheus_config: Path, prometheus_url: str, consents: ConsentSource | None = None) -> None:
        self.http = http
        self.charter_file = charter_file
        self.gate_url = gate_url.rstrip("/")
        self.gate_token_file = gate_token_file
        self.prometheus_config = prometheus_config
        self.prometheus_url = prometheus_url.rstrip("/")
        self.consents = consents

    async def enforce(self, inp: CharterEnforceInput) -> CharterEnforceResult:
        try:
            content, charter = read_charter_file(self.charter_file)
        except CharterInvalid as err:
            return self._refused(inp, "", f"{self.charter_file} is not a valid charter: {err.message}")
        except InvalidInput as err:
            return self._refused(inp, "", err.message)
        digest = charter_hash(content)
        if digest != inp.policy_hash.lower():
            return self._refused(inp, digest, f"{self.charter_file} hashes to {digest}; the Charter on chain "
                                 f"(version {inp.version}) holds {inp.policy_hash}: a charter whose hash is not on "
                                 "chain is not put in force")
        if charter.metadata.version != inp.version:
            return self._refused(inp, digest, f"{self.charter_file} says version {charter.metadata.version}; the "
                                 f"Charter on chain is at version {inp.version}")
        layers = await self._push_gate(content, digest)
        layers.append(await self._push_scrape(charter))
        return CharterEnforceResult(version=inp.version, policy_hash=inp.policy_hash, file_hash=digest,
                                    layers=layers, names=sorted(m.name for m in charter.spec.metrics),
                                    drops=await self.drops())

    def _refused(self, inp: CharterEnforceInput, digest: str, why: str) -> CharterEnforceResult:
        return CharterEnforceResult(version=inp.version, policy_hash=inp.policy_hash, file_hash=digest, refused=why)

    async def _push_gate(self, content: bytes, digest: str) -> list[LayerState]:
        try:
            token = self.gate_token_file.read_text().strip()
        except OSError as err:
            why = f"no gate token at {self.gate_token_file} ({err.strerror}): is the charter gate running?"
            return [LayerState(layer="gate", state="unavailable", detail=why),
                    LayerState(layer="kernel", state="unavailable", detail="the gate loads it")]
        try:
            answer = await self.http.put(f"{self.gate_url}/charter", content=content,
                                         headers={"Authorization": f"Bearer {token}", HASH_HEADER: digest})
        except httpx.HTTPError as err:
            why = f"the charter gate at {self.gate_url} does not answer ({type(err).__name__}); it stays closed"
            return [LayerState(layer="gate", state="unavailable", detail=why),
                    LayerState(layer="kernel", state="unavailable", detail="the gate loads it")]
        body: dict[str, Any] = answer.json()
        if answer.status_code != 200:
            return [LayerState(layer="gate", state="refused", detail=str(body.get("error", answer.text))),
                    LayerState(layer="kernel", state="unavailable", detail="the gate refused the charter")]
        kernel = body.get("kernel", {})
        detail = f"{self.gate_url} version {body['version']}"
        if self.consents is not None and not body.get("consents", {}).get("loaded", True):
            detail += "; " + await self._load_consents(token)
        gate = LayerState(layer="gate", state=str(body["state"]), detail=detail)
        if kernel.get("loaded"):
            kstate = LayerState(layer="kernel", state=str(body["state"]),
                                detail=f"eBPF at tc egress of {kernel['device']}")
        else:
            kstate = LayerState(layer="kernel", state="unavailable",
                                detail=f"kernel filter not loaded ({kernel.get('reason', '?')}); the userspace gate "
                                "enforces")
        return [gate, kstate]

    async def _load_consents(self, token: str) -> str:
        assert self.consents is not None
        in_force = await self.consents()
        try:
            answer = await self.http.put(f"{self.gate_url}/consents", json={"consents": in_force},
                                         headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as err:
            return f"consents not loaded ({type(err).__name__}); tried again at the next poll"
        if answer.status_code != 200:
            return f"consents refused ({answer.status_code}: {answer.text.strip()[:200]})"
        return f"{len(in_force)} consents in force loaded"

    async def _push_scrape(self, charter: Charter) -> LayerState:
        try:
            config: dict[str, Any] = json.loads(self.prometheus_config.read_text())
        except (OSError, ValueError) as err:
            return LayerState(layer="scrape", state="unavailable",
                              detail=f"cannot read the Prometheus config {self.prometheus_config}: {err}")
        rules = metric_relabel_configs(charter)
        jobs = [j for j in config.get("scrape_configs", []) if j.get("job_name") == CHARTER_JOB]
        if not jobs:
            return LayerState(layer="scrape", state="unavailable",
                              detail=f"{self.prometheus_config} has no {CHARTER_JOB!r} job (Prometheus does not "
                              "scrape the gate)")
        if all(j.get("metric_relabel_configs") == rules for j in jobs):
            return LayerState(layer="scrape", state="unchanged", detail=f"{len(rules)} relabel rules")
        for j in jobs:
            j["metric_relabel_configs"] = rules
        staged = self.prometheus_config.with_suffix(".charter-tmp")
        staged.write_text(json.dumps(config, indent=2))
        staged.replace(self.prometheus_config)  # Prometheus never reads a half-written file
        try:
            reload = await self.http.post(f"{self.prometheus_url}/-/reload")
        except httpx.HTTPError as err:
            return LayerState(layer="scrape", state="unavailable",
                              detail=f"rules written; Prometheus at {self.prometheus_url} not reloaded: {err!r}")
        if reload.status_code != 200:
            return LayerState(layer="scrape", state="refused",
                              detail=f"Prometheus refused the reload ({reload.status_code}): {reload.text.strip()}")
        return LayerState(layer="scrape", state="applied", detail=f"{len(rules)} relabel rules, reloaded")

    async def drops(self) -> dict[str, int]:
        """Drops so far, ``gate:<reason>`` and ``kernel:<reason>``; empty when the gate does not answer."""
        try:
            answer = await self.http.get(f"{self.gate_url}/status")
            status: dict[str, Any] = answer.json()
        except (httpx.HTTPError, ValueError):
            return {}
        out = {f"gate:{k}": int(v) for k, v in status["gate"]["dropped"].items() if int(v)}
        kernel = status.get("kernel", {})
        for k, v in kernel.get("stats", {}).items():
            if k not in ("passed", "lines") and int(v):
                out[f"kernel:{k}"] = int(v)
        return out


class CharterEnforcementActivities:
    def __init__(self, enforcement: CharterEnforcement) -> None:
        self._e = enforcement

    @activity.defn(name="charter_enforce")
    async def charter_enforce(self, inp: CharterEnforceInput) -> CharterEnforceResult:
        """Put the on-chain charter in force at the gate, its kernel filter and the scrape (or say why not)."""
        return await self._e.enforce(inp)
