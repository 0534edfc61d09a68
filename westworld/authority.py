"""Signed administrative changes: who may change a protection, over exactly what, and the check (pure).

A protection (the anomaly watch's thresholds, a halt, the peer / guardian / operator registries, minting,
revoking, root keys) changes only with the signatures of the parties entitled to change it; never because
someone could reach Temporal. Each change is signed over :func:`change_digest`: SHA-256 over a domain tag and
the canonical JSON of the action, the target workflow id, the change itself, a nonce (the target's admin
sequence, or the nonce in the admin workflow's id, recorded once used) and an expiry. A signature therefore
authorises that change, on that target, once, until it expires.

Who may do what (:func:`registry_authority`, :func:`watch_authority`):

* one registered **operator**: mint, revoke (a token, or every token), rotate or retire a root key, register
  plain nodes, start a halt, tighten the watch (every setting equal or stricter than the one in force);
* **k guardians** (k = the policy's ``watch.guardians_required_min``, or the watch's own k if higher): loosen the
  watch (never looser than the policy, by anybody), stop the watch, add or remove peers, guardians, operators;
* at **genesis** (fewer than k guardians registered) the operator registers the first peers, guardians and
  operators: nobody else could.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from westworld import peers
from westworld.anomaly import AnomalyConfig
from westworld.errors import Unauthorised
from westworld.keys import ADMIN_ID_PREFIX, WATCH_ID
from westworld.policy import NetworkPolicy, WatchPolicy

ADMIN_DOMAIN = "westworld/admin/v1"


def may_declare_halt(parent_workflow_id: str | None) -> bool:
    """Whether a halt started as a child of this workflow was decided by someone entitled to: the network's
    watch, or an admin change an operator signed (a workflow started directly has no parent)."""
    return parent_workflow_id is not None and (parent_workflow_id == WATCH_ID
                                               or parent_workflow_id.startswith(ADMIN_ID_PREFIX))
MAX_LIFETIME = timedelta(days=1)  # a signed change expiring later than this is refused: no standing approvals
HEX64 = r"^[0-9a-f]{64}$"


class Authority(StrEnum):
    OPERATOR = "operator"  # one registered operator
    GUARDIANS = "guardians"  # k distinct registered guardians


class AdminSignature(BaseModel):
    """One signer's signature: the signer's registered Ed25519 public key and the hex signature."""

    signer: str = Field(pattern=HEX64, description="The signer's Ed25519 public key (hex).")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")


class SignedBy(BaseModel):
    """The signatures over one change, and until when they hold."""

    expires_at: datetime
    signatures: list[AdminSignature] = Field(min_length=1, max_length=64)


class AdminSigners(BaseModel):
    """The registered signers of administrative changes: id -> hex public key (public keys only)."""

    operators: dict[str, str] = Field(default_factory=dict)
    guardians: dict[str, str] = Field(default_factory=dict)


def change_digest(action: str, target: str, change: Mapping[str, Any], nonce: str, expires_at: datetime) -> bytes:
    body = {"action": action, "target": target, "change": change, "nonce": nonce,
            "expires_at": expires_at.isoformat()}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{ADMIN_DOMAIN}\n{canonical}".encode()).digest()


def sign(private_key: bytes, digest: bytes) -> AdminSignature:
    """The signer's signature (made where the key is: the CLI or a test, never a worker)."""
    return AdminSignature(signer=peers.public_key_of(private_key), signature=peers.sign(private_key, digest))


@dataclass(frozen=True)
class Required:
    authority: Authority
    k: int = 1

    @property
    def label(self) -> str:
        return "operator" if self.authority is Authority.OPERATOR else "guardian"

    def describe(self) -> str:
        return "one registered operator" if self.authority is Authority.OPERATOR else f"{self.k} registered guardians"


def authorise(what: str, digest: bytes, signed: SignedBy, required: Required, signers: AdminSigners,
              now: datetime) -> list[str]:
    """The ids of the entitled signers whose signatures verify over ``digest``; refuses unless enough did.

    Raises:
        Unauthorised: naming ``what``, the signer refused or the count missing.
    """
    if now > signed.expires_at:
        raise Unauthorised(f"{what}: the signatures expired at {signed.expires_at.isoformat()}")
    if signed.expires_at - now > MAX_LIFETIME:
        raise Unauthorised(f"{what}: expires_at {signed.expires_at.isoformat()} is more than {MAX_LIFETIME} away")
    registry = signers.operators if required.authority is Authority.OPERATOR else signers.guardians
    by_key = {key: sid for sid, key in sorted(registry.items())}
    accepted: dict[str, str] = {}
    for sig in signed.signatures:
        sid = by_key.get(sig.signer)
        if sid is None:
            raise Unauthorised(f"{what}: key {sig.signer[:16]}… is not a registered {required.label} "
                               f"(needs {required.describe()})")
        if sid in accepted:
            raise Unauthorised(f"{what}: {sid} signed twice")
        if not peers.verify(sig.signer, digest, sig.signature):
            raise Unauthorised(f"{what}: the signature of {sid} does not verify over this change")
        accepted[sid] = sig.signature
    if len(accepted) < required.k:
        raise Unauthorised(f"{what}: needs {required.describe()}, has {len(accepted)} "
                           f"({', '.join(sorted(accepted)) or 'none'})")
    return sorted(accepted)


def guardians_k(policy: NetworkPolicy, at_least: int = 0) -> int:
    return max(policy.watch.guardians_required_min, at_least)


def registry_authority(kind: str, signers: AdminSigners, policy: NetworkPolicy) -> Required:
    """Peers, guardians and operators: k guardians, or the operator at genesis (fewer than k guardians);
    plain nodes, minting, revoking, root keys and a manual halt: one operator."""
    k = guardians_k(policy)
    if kind in {"peer", "guardian", "operator"} and len(signers.guardians) >= k:
        return Required(Authority.GUARDIANS, k)
    return Required(Authority.OPERATOR)


# --- the anomaly watch ---------------------------------------------------------------------------------------
# (field, policy limit field) for the settings the policy bounds; a lower value is stricter.
_BOUNDED = (("coverage_critical_pct", "coverage_critical_pct_max"),
            ("concentration_critical_pct", "concentration_critical_pct_max"),
            ("rate_high", "rate_high_max"), ("denials_high", "denials_high_max"))
# Lower is stricter for these; for the windows longer is stricter (more history counts).
_LOWER_STRICTER = ("coverage_warn_pct", "coverage_critical_pct", "concentration_warn_pct",
                   "concentration_critical_pct", "rate_warn", "rate_high", "spike_factor", "spike_min",
                   "denials_warn", "denials_high")
_HIGHER_STRICTER = ("short_window", "long_window")


def looser_than_policy(config: AnomalyConfig, poll: timedelta, guardians: int, policy: WatchPolicy) -> list[str]:
    """What in these watch settings is looser than the policy allows (empty when within it)."""
    out = [f"{f} {getattr(config, f):g} > policy {lim} {getattr(policy, lim):g}" for f, lim in _BOUNDED
           if getattr(config, f) > getattr(policy, lim)]
    if poll > policy.poll_interval_max:
        out.append(f"poll_interval {poll} > policy poll_interval_max {policy.poll_interval_max}")
    if guardians < policy.guardians_required_min:
        out.append(f"guardians_required {guardians} < policy guardians_required_min {policy.guardians_required_min}")
    return out


def clamp_to_policy(config: AnomalyConfig, poll: timedelta, guardians: int,
                    policy: WatchPolicy) -> tuple[AnomalyConfig, timedelta, int]:
    """The stricter of the settings asked for and the policy, field by field (a start input may ask for
    stricter, never looser); warning levels follow a lowered critical level."""
    update: dict[str, Any] = {f: min(getattr(config, f), getattr(policy, lim)) for f, lim in _BOUNDED}
    update["coverage_warn_pct"] = min(config.coverage_warn_pct, update["coverage_critical_pct"])
    update["concentration_warn_pct"] = min(config.concentration_warn_pct, update["concentration_critical_pct"])
    update["rate_warn"] = min(config.rate_warn, update["rate_high"])
    update["denials_warn"] = min(config.denials_warn, update["denials_high"])
    return (config.model_copy(update=update), min(poll, policy.poll_interval_max),
            max(guardians, policy.guardians_required_min))


def loosened(old: AnomalyConfig, old_poll: timedelta, old_k: int, new: AnomalyConfig, new_poll: timedelta,
             new_k: int) -> list[str]:
    """The settings the change makes looser than those in force (empty: the change only tightens)."""
    out = [f for f in _LOWER_STRICTER if getattr(new, f) > getattr(old, f)]
    out += [f for f in _HIGHER_STRICTER if getattr(new, f) < getattr(old, f)]
    if new_poll > old_poll:
        out.append("poll_interval")
    if new_k < old_k:
        out.append("guardians_required")
    return out


def watch_authority(loosens: Sequence[str], policy: NetworkPolicy, current_k: int) -> Required:
    """Tightening: one operator; loosening (back towards the policy): k guardians."""
    return Required(Authority.GUARDIANS, guardians_k(policy, current_k)) if loosens else Required(Authority.OPERATOR)
