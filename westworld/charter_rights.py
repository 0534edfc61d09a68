"""The users' rights under the charter, as signed requests: data export and committee actions (pure).

Both are EIP-712 messages under the consent's domain (:mod:`westworld.charter_consent`: "Westworld Charter" v1,
the chain id and the Charter contract), so a signature counts on one chain and one charter deployment only:

* ``ExportRequest(address subject,bytes32 publicKey,uint256 nonce,uint64 expiry)``: the subject asks for
  everything held about them, encrypted to ``publicKey`` (X25519). Nobody else can ask for their data, and the
  bundle opens only with the key the subject named.
* ``CaseAction(string caseId,string action,bytes32 digest)``: a committee member claims a case, adds a note, or
  signs a decision (``decide:<outcome>`` over the SHA-256 of the published summary). A decision counts once the
  charter's threshold of distinct members signed the same outcome and summary (k-of-n, :func:`decided`).

The committee and the threshold always come from the charter in force, never from the request.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from pydantic import BaseModel, ConfigDict, Field

from westworld.charter import ADDRESS, Committee
from westworld.charter_consent import UINT64_MAX, ConsentContext
from westworld.errors import SIGNER_BAD_SIGNATURE, SIGNER_DUPLICATE, SIGNER_UNKNOWN, CaseRefused, ExportRefused

HEX32 = r"^[0-9a-f]{64}$"
OUTCOMES = ("upheld", "dismissed")
ACTIONS = re.compile(r"^(claim|note|decide:(upheld|dismissed))$")
_DOMAIN = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
           {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}]


def _domain(ctx: ConsentContext) -> dict[str, Any]:
    return {"name": "Westworld Charter", "version": "1", "chainId": ctx.chain_id,
            "verifyingContract": ctx.charter_address}


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _recover(msg: SignableMessage, signature: str) -> str:
    signer: str = Account.recover_message(msg, signature=bytes.fromhex(signature.removeprefix("0x")))
    return signer.lower()


# -- data export ---------------------------------------------------------------------------------------------

class ExportRequest(BaseModel):
    """A subject's signed request for their data; the bundle is sealed to ``public_key`` (X25519, hex)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(pattern=ADDRESS)
    public_key: str = Field(pattern=HEX32, description="The subject's X25519 public key the bundle is sealed to.")
    nonce: int = Field(ge=0, lt=2**64)
    expiry: int = Field(ge=0, le=UINT64_MAX, description="Unix seconds after which the request is refused.")
    signature: str = ""


def export_typed_data(req: ExportRequest, ctx: ConsentContext) -> dict[str, Any]:
    return {
        "types": {"EIP712Domain": _DOMAIN, "ExportRequest": [
            {"name": "subject", "type": "address"}, {"name": "publicKey", "type": "bytes32"},
            {"name": "nonce", "type": "uint256"}, {"name": "expiry", "type": "uint64"}]},
        "primaryType": "ExportRequest",
        "domain": _domain(ctx),
        "message": {"subject": req.subject, "publicKey": bytes.fromhex(req.public_key), "nonce": req.nonce,
                    "expiry": req.expiry},
    }


def sign_export(req: ExportRequest, ctx: ConsentContext, private_key: str) -> str:
    """Sign as the subject (CLI and tests; the key never leaves the caller)."""
    msg = encode_typed_data(full_message=export_typed_data(req, ctx))
    return "0x" + bytes(Account.sign_message(msg, private_key=private_key).signature).hex()


def verify_export(req: ExportRequest, ctx: ConsentContext, now: int) -> None:
    """Raise ExportRefused unless ``req`` is signed by its subject and not expired at ``now`` (Unix seconds)."""
    if req.expiry < now:
        raise ExportRefused(f"the export request of {req.subject} expired at {req.expiry} (now {now}): sign a new one")
    try:
        signer = _recover(encode_typed_data(full_message=export_typed_data(req, ctx)), req.signature)
    except Exception as exc:  # malformed hex, wrong length, invalid curve point
        raise ExportRefused(f"the export request's signature is malformed: {exc}") from exc
    if signer != req.subject.lower():
        raise ExportRefused(f"the export request for {req.subject.lower()} is signed by {signer}: only the subject "
                            "may ask for their data")


# -- committee actions on a case -----------------------------------------------------------------------------

class CaseAction(BaseModel):
    """One committee member's signed action on a case; ``digest`` is the SHA-256 (hex) of what it is about."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    case_id: str = Field(min_length=1, max_length=64)
    action: str = Field(pattern=ACTIONS.pattern)
    member: str = Field(pattern=ADDRESS)
    digest: str = Field(pattern=HEX32)
    signature: str = ""


def case_typed_data(a: CaseAction, ctx: ConsentContext) -> dict[str, Any]:
    return {
        "types": {"EIP712Domain": _DOMAIN, "CaseAction": [
            {"name": "caseId", "type": "string"}, {"name": "action", "type": "string"},
            {"name": "digest", "type": "bytes32"}]},
        "primaryType": "CaseAction",
        "domain": _domain(ctx),
        "message": {"caseId": a.case_id, "action": a.action, "digest": bytes.fromhex(a.digest)},
    }


def sign_case_action(a: CaseAction, ctx: ConsentContext, private_key: str) -> str:
    msg = encode_typed_data(full_message=case_typed_data(a, ctx))
    return "0x" + bytes(Account.sign_message(msg, private_key=private_key).signature).hex()


def committee_members(committee: Committee) -> list[str]:
    return sorted(m.address.lower() for m in committee.members)


def verify_case_action(a: CaseAction, ctx: ConsentContext, members: Collection[str]) -> str:
    """The member (lower case) if ``a`` is signed by the member it names and that member is one of ``members``
    (the charter's committee, lower case); CaseRefused typed SIGNER_UNKNOWN / SIGNER_BAD_SIGNATURE otherwise."""
    member = a.member.lower()
    if member not in members:
        raise CaseRefused(f"{member} is not a member of the charter's committee", type=SIGNER_UNKNOWN)
    try:
        signer = _recover(encode_typed_data(full_message=case_typed_data(a, ctx)), a.signature)
    except Exception as exc:
        raise CaseRefused(f"{a.action} on {a.case_id}: malformed signature ({exc})", type=SIGNER_BAD_SIGNATURE) \
            from exc
    if signer != member:
        raise CaseRefused(f"{a.action} on {a.case_id} claims {member} but is signed by {signer}",
                          type=SIGNER_BAD_SIGNATURE)
    return member


def refuse_repeat(member: str, signed: Iterable[str], what: str) -> None:
    if member in set(signed):
        raise CaseRefused(f"{member} already signed {what}", type=SIGNER_DUPLICATE)


def decided(signatures: dict[str, tuple[str, str]], threshold: int) -> tuple[str, str] | None:
    """(outcome, summary digest) once ``threshold`` distinct members signed the same pair; else None.
    ``signatures``: member -> (outcome, summary digest), one per member (their latest)."""
    counts: dict[tuple[str, str], int] = {}
    for pair in signatures.values():
        counts[pair] = counts.get(pair, 0) + 1
    return next((pair for pair, n in sorted(counts.items()) if n >= threshold), None)
