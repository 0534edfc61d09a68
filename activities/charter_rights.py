"""The users' rights activities: consents put in force (and withdrawals purged), retention purges, data exports,
reports sealed for the committee, committee notices.

Everything that touches data about a person happens here, inside an activity: the pseudonym key is read here
(``<data dir>/charter-pseudonym.key``, the gate's), the records of an export are gathered, bundled and sealed to
the subject's X25519 key here, and only counts, digests and references go back to the workflow.

Prometheus deletions go through its admin API (``POST /api/v1/admin/tsdb/delete_series`` then
``clean_tombstones``; Prometheus must run with ``--web.enable-admin-api``). An unreachable Prometheus, gate or
database is a retryable error: a withdrawal or an export waits for them, never skips them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from nacl.public import PrivateKey, PublicKey, SealedBox
from temporalio import activity

from activities.chain_tx import load_deployment
from activities.charter_chain import read_charter_file
from activities.sql.charter_store import CharterStore
from activities.storage.ipfs import IpfsClient
from westworld.chain import CHARTER
from westworld.charter import Charter, pseudonym
from westworld.charter_cases import CaseCommittee
from westworld.charter_consent import ConsentContext, ConsentRequest
from westworld.charter_data import (
    BUNDLE_RETENTION_DAYS,
    ApplyConsentResult,
    BuildExportInput,
    BundleSection,
    CommitteeNotice,
    ConsentRules,
    ExportDelivery,
    RecordConsentInput,
    RetentionPurgeResult,
    SubjectConsents,
    build_bundle,
)
from westworld.errors import METRICS_UNAVAILABLE, InvalidInput, NotConfigured, TransientError, WestworldError

GATE_UNAVAILABLE = "CharterGateUnavailable"


def _now() -> datetime:
    return datetime.now(UTC)


class CharterRights:
    """Built with the clients and the paths of one host (the wiring reads them from the settings)."""

    def __init__(self, http: httpx.AsyncClient, store: CharterStore, *, charter_file: Path, contracts_file: Path,
                 prometheus_url: str, gate_url: str, gate_token_file: Path, pseudonym_key_file: Path,
                 data_dir: Path, ipfs: IpfsClient | None, notify_webhook_url: str = "",
                 scrape_settle: float = 2.0) -> None:
        self.http, self.store = http, store
        self.charter_file, self.contracts_file = charter_file, contracts_file
        self.prometheus_url, self.gate_url = prometheus_url.rstrip("/"), gate_url.rstrip("/")
        self.gate_token_file, self.key_file = gate_token_file, pseudonym_key_file
        self.exports_dir = data_dir / "charter" / "exports"
        self.notices_file = data_dir / "charter" / "notifications.jsonl"
        self.ipfs, self.webhook = ipfs, notify_webhook_url
        self.scrape_settle = scrape_settle  # > one scrape interval: the staleness marker a vanished series gets

    def __repr__(self) -> str:
        return f"CharterRights({self.charter_file})"

    # -- the charter in force ------------------------------------------------------------------------
    def charter(self) -> Charter:
        return read_charter_file(self.charter_file)[1]

    def context(self) -> ConsentContext:
        deployment = load_deployment(self.contracts_file)
        return ConsentContext(chain_id=deployment.chain_id, charter_address=deployment.address(CHARTER))

    def _key(self) -> tuple[bytes, int] | None:
        try:
            key = bytes.fromhex(self.key_file.read_text().strip())
        except OSError:
            return None
        return key, self.charter().spec.pseudonymisation.key_epoch

    # -- Prometheus ----------------------------------------------------------------------------------
    async def _prom(self, method: str, path: str, params: list[tuple[str, str]]) -> Any:
        try:
            resp = await self.http.request(method, f"{self.prometheus_url}{path}",
                                           params=httpx.QueryParams(tuple(params)))
        except httpx.HTTPError as err:
            raise TransientError(f"Prometheus at {self.prometheus_url} does not answer: {err!r}",
                                 type=METRICS_UNAVAILABLE) from err
        if resp.status_code >= 500:
            raise TransientError(f"Prometheus {path}: {resp.status_code} {resp.text[:200]}", type=METRICS_UNAVAILABLE)
        if resp.status_code == 401 or (resp.status_code == 404 and "admin" in path):
            raise NotConfigured(f"Prometheus at {self.prometheus_url} refuses {path} ({resp.status_code}): start it "
                                "with --web.enable-admin-api")
        if resp.status_code >= 400:
            raise InvalidInput(f"Prometheus {path}: {resp.status_code} {resp.text[:200]}")
        return resp.json()["data"] if resp.content else None

    async def series(self, selector: str, end: datetime | None = None) -> list[dict[str, str]]:
        params = [("match[]", selector), ("start", "0")]
        if end is not None:
            params.append(("end", f"{end.timestamp():.3f}"))
        data: list[dict[str, str]] = await self._prom("GET", "/api/v1/series", params)
        return data

    async def delete_series(self, selector: str, end: datetime | None = None) -> int:
        """Delete the samples of ``selector`` (up to ``end``) and their tombstones; how many series it touched."""
        touched = len(await self.series(selector, end))
        if touched:
            params = [("match[]", selector)] + ([("end", f"{end.timestamp():.3f}")] if end else [])
            await self._prom("POST", "/api/v1/admin/tsdb/delete_series", params)
            await self._prom("POST", "/api/v1/admin/tsdb/clean_tombstones", [])
        return touched

    def subject_selector(self, subject: str, metric: str | None = None) -> str | None:
        key = self._key()
        if key is None:
            return None
        label = self.charter().spec.consent.subject_label
        name = f'__name__="{metric}",' if metric else ""
        return f'{{{name}{label}="{pseudonym(key[0], key[1], label, subject)}"}}'

    # -- consent -------------------------------------------------------------------------------------
    @activity.defn(name="charter_consent_rules")
    async def consent_rules(self) -> ConsentRules:
        charter = self.charter()
        return ConsentRules(charter_version=charter.metadata.version, context=self.context(),
                            consent_metrics=sorted(m.name for m in charter.spec.metrics if m.consent_required))

    @activity.defn(name="charter_subject_consents")
    async def subject_consents(self, subject: str) -> SubjectConsents:
        return await self.store.subject_consents(subject)

    @activity.defn(name="charter_record_consent")
    async def record_consent(self, inp: RecordConsentInput) -> bool:
        return await self.store.record_consent(inp.request, inp.consent_hash, inp.workflow_id, _now())

    @activity.defn(name="charter_apply_consent")
    async def apply_consent(self, req: ConsentRequest) -> ApplyConsentResult:
        """Tell the gate; for a withdrawal, purge the subject's series of that metric at the gate and in
        Prometheus (timed from the gate's answer to the tombstones cleaned)."""
        started = time.monotonic()
        try:
            token = self.gate_token_file.read_text().strip()
            resp = await self.http.post(f"{self.gate_url}/consent", headers={"Authorization": f"Bearer {token}"},
                                        json={"subject": req.subject, "metric": req.metric, "grant": req.grant})
        except (OSError, httpx.HTTPError) as err:
            raise TransientError(f"the charter gate at {self.gate_url} cannot take the consent: {err!r}",
                                 type=GATE_UNAVAILABLE) from err
        if resp.status_code != 200:
            raise TransientError(f"the charter gate answered {resp.status_code}: {resp.text[:200]}",
                                 type=GATE_UNAVAILABLE)
        answer = resp.json()
        if req.grant:
            return ApplyConsentResult(gate=str(answer.get("state", "granted")))
        selector = self.subject_selector(req.subject, req.metric)
        purged = await self.delete_series(selector) if selector else 0
        seconds = time.monotonic() - started
        if selector and purged:
            # The next scrape after the gate's purge writes a staleness marker under the series (and a scrape may
            # have been in flight): delete once more after it, so not even the marker stays.
            await asyncio.sleep(self.scrape_settle)
            await self.delete_series(selector)
        return ApplyConsentResult(gate=str(answer.get("state", "withdrawn")),
                                  gate_series_purged=int(answer.get("purged", 0)), prometheus_series_purged=purged,
                                  purge_seconds=round(seconds, 4))

    # -- retention -----------------------------------------------------------------------------------
    @activity.defn(name="charter_purge_retention")
    async def purge_retention(self) -> RetentionPurgeResult:
        charter, now = self.charter(), _now()
        out = RetentionPurgeResult(charter_version=charter.metadata.version)
        for m in charter.spec.metrics:
            cutoff = now - timedelta(days=m.retention_days)
            out.series_by_metric[m.name] = await self.delete_series(f'{{__name__="{m.name}"}}', cutoff)
            if m.consent_required:
                out.rows_by_table["charter_consents"] = out.rows_by_table.get("charter_consents", 0) + \
                    await self.store.purge_consents(m.name, cutoff)
        expired = await self.store.expired_exports(now - timedelta(days=BUNDLE_RETENTION_DAYS))
        for _, file, cid in expired:
            Path(file).unlink(missing_ok=True)
            if self.ipfs is not None and cid:
                try:
                    await self.ipfs.pin_rm(cid)
                except WestworldError as err:  # the file is gone; an unpinned copy is collected by IPFS's gc
                    activity.logger.warning("bundle %s not unpinned: %s", cid, err.message)
        out.rows_by_table["charter_exports"] = await self.store.delete_exports([e for e, _, _ in expired])
        out.bundles_deleted = len(expired)
        return out

    # -- export --------------------------------------------------------------------------------------
    async def gather(self, subject: str) -> list[BundleSection]:
        charter = self.charter()
        retention = {m.name: f"{m.retention_days} days" for m in charter.spec.metrics}
        votes = await self.store.votes_of(subject)
        consents = await self.store.consents_of(subject)
        audit = await self.store.audit_entries_naming(subject)
        shelter = [a for a in audit if str(a["kind"]).startswith(("shelter.", "access.", "emergency."))]
        selector = self.subject_selector(subject)
        series = await self.series(selector) if selector else []
        return [
            BundleSection(name="votes", what="Ballots you cast (your current choice per proposal)",
                          source="vote store (table votes)", retention="kept while the proposal's record is kept",
                          columns=["proposal_id", "choice", "weight", "vote_hash", "created_at"], rows=votes),
            BundleSection(name="consents", what="Consent messages you signed (grant or withdraw, per metric)",
                          source="charter store (table charter_consents)",
                          retention="the message in force is kept; superseded ones for the metric's retention",
                          columns=["metric", "granted", "nonce", "consent_hash", "at"],
                          rows=[{"metric": c.metric, "granted": c.granted, "nonce": c.nonce,
                                 "consent_hash": c.consent_hash, "at": c.at} for c in consents]),
            BundleSection(name="shelter_requests", what="Your requests to open sheltered documents",
                          source="audit log (shelter access entries)", retention="permanent (tamper-evident log)",
                          columns=["seq", "kind", "subject", "created_at", "payload"], rows=shelter),
            BundleSection(name="audit_entries", what="Every audit log entry naming your address",
                          source="audit log (table audit_entries)", retention="permanent (tamper-evident log)",
                          columns=["seq", "kind", "subject", "created_at", "payload"], rows=audit),
            BundleSection(name="metric_series", what="Metric series labelled with your pseudonym",
                          source="Prometheus", retention=json.dumps(retention, sort_keys=True),
                          columns=["__name__", "labels"],
                          rows=[{"__name__": s.get("__name__", ""), "labels": s} for s in series]),
        ]

    @activity.defn(name="charter_build_export")
    async def build_export(self, inp: BuildExportInput) -> ExportDelivery:
        """Gather, bundle, seal to the subject's key, write to the data dir and pin to IPFS when it answers."""
        sections = await self.gather(inp.subject)
        bundle = build_bundle(inp.subject, inp.export_id, _now(), sections)
        sealed = SealedBox(PublicKey(bytes.fromhex(inp.public_key))).encrypt(bundle)
        digest = hashlib.sha256(sealed).hexdigest()
        self.exports_dir.mkdir(parents=True, exist_ok=True)
        path = self.exports_dir / f"{digest}.sealed"
        path.write_bytes(sealed)
        cid = ""
        if self.ipfs is not None:
            try:
                cid = await self.ipfs.add(sealed)
            except WestworldError as err:  # delivery by download still works; say why there is no CID
                activity.logger.warning("export %s not pinned to IPFS: %s", inp.export_id, err.message)
        await self.store.record_export(inp.export_id, inp.subject, digest, cid, str(path), _now())
        return ExportDelivery(sha256=digest, size=len(sealed), records=sum(len(s.rows) for s in sections), cid=cid,
                              file=str(path))

    # -- cases ---------------------------------------------------------------------------------------
    @activity.defn(name="charter_case_committee")
    async def case_committee(self) -> CaseCommittee:
        charter, ctx = self.charter(), self.context()
        c = charter.spec.committee
        return CaseCommittee(members=[m.address.lower() for m in c.members], threshold=c.threshold,
                             pow_bits=charter.spec.reports.pow_bits, per_hour=charter.spec.reports.per_hour,
                             committee_public_key=charter.spec.reports.committee_public_key,
                             chain_id=ctx.chain_id, charter_address=ctx.charter_address,
                             charter_version=charter.metadata.version)

    @activity.defn(name="charter_seal_for_committee")
    async def seal_for_committee(self, text: str) -> str:
        key = self.charter().spec.reports.committee_public_key
        if not key:
            raise NotConfigured(f"{self.charter_file} names no reports.committee_public_key to seal reports to")
        return base64.b64encode(SealedBox(PublicKey(bytes.fromhex(key))).encrypt(text.encode())).decode()

    @activity.defn(name="charter_record_case")
    async def record_case(self, row: dict[str, Any]) -> None:
        await self.store.record_case(row["case_id"], row["source"], row["outcome"], row["summary"],
                                     list(row["decided_by"]), datetime.fromisoformat(row["opened_at"]), _now())

    @activity.defn(name="charter_notify_committee")
    async def notify_committee(self, notice: CommitteeNotice) -> None:
        body = notice.model_dump(mode="json")
        if self.webhook:
            (await self.http.post(self.webhook, json={"charter_committee": body})).raise_for_status()
        self.notices_file.parent.mkdir(parents=True, exist_ok=True)
        with self.notices_file.open("a", encoding="utf-8") as f:
            f.write(json.dumps(body, sort_keys=True) + "\n")

    def activities(self) -> list[Any]:
        return [self.consent_rules, self.subject_consents, self.record_consent, self.apply_consent,
                self.purge_retention, self.build_export, self.case_committee, self.seal_for_committee,
                self.record_case, self.notify_committee]


def open_bundle(sealed: bytes, private_key: bytes) -> bytes:
    """The user's side: open a sealed bundle with their X25519 private key (CLI and tests)."""
    return SealedBox(PrivateKey(private_key)).decrypt(sealed)
