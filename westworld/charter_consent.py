"""EIP-712 consent: a data subject grants or withdraws consent for one consent-only metric by signing it.

The message is ``Consent(address subject,string metric,bool grant,uint256 nonce,uint64 expiry)`` under the domain
{name: "Westworld Charter", version: "1", chainId, verifyingContract: the Charter contract}, so a signature is
bound to one chain and one charter deployment and cannot be replayed elsewhere. The nonce orders a subject's
messages (the store refuses a nonce it has seen); the expiry bounds how long a signed message may be presented.
Built and recovered the way :mod:`westworld.ballot` does votes.
"""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils.crypto import keccak
from pydantic import BaseModel, ConfigDict, Field

from westworld.charter import ADDRESS, Charter
from westworld.errors import ConsentRejected

UINT64_MAX = 2**64 - 1


class ConsentContext(BaseModel):
    """What a consent signature commits to besides the message: the chain and the Charter contract."""

    model_config = ConfigDict(frozen=True)

    chain_id: int = Field(ge=1)
    charter_address: str = Field(pattern=ADDRESS)


class ConsentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(pattern=ADDRESS)
    metric: str = Field(min_length=1, max_length=128)
    grant: bool
    nonce: int = Field(ge=0, lt=2**256)
    expiry: int = Field(ge=0, le=UINT64_MAX, description="Unix seconds after which the message is refused.")
    signature: str = ""


def typed_data(req: ConsentRequest, ctx: ConsentContext) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Consent": [
                {"name": "subject", "type": "address"},
                {"name": "metric", "type": "string"},
                {"name": "grant", "type": "bool"},
                {"name": "nonce", "type": "uint256"},
                {"name": "expiry", "type": "uint64"},
            ],
        },
        "primaryType": "Consent",
        "domain": {"name": "Westworld Charter", "version": "1", "chainId": ctx.chain_id,
                   "verifyingContract": ctx.charter_address},
        "message": {"subject": req.subject, "metric": req.metric, "grant": req.grant, "nonce": req.nonce,
                    "expiry": req.expiry},
    }


def _signable(req: ConsentRequest, ctx: ConsentContext) -> SignableMessage:
    return encode_typed_data(full_message=typed_data(req, ctx))


def consent_hash(req: ConsentRequest, ctx: ConsentContext) -> str:
    """The EIP-712 digest: the consent's identity in the store and the audit log."""
    msg = _signable(req, ctx)
    return "0x" + keccak(b"\x19" + msg.version + msg.header + msg.body).hex()


def sign(req: ConsentRequest, ctx: ConsentContext, private_key: str) -> str:
    """Sign as the subject (CLI and tests; the key never leaves the caller)."""
    return "0x" + bytes(Account.sign_message(_signable(req, ctx), private_key=private_key).signature).hex()


def verify(req: ConsentRequest, ctx: ConsentContext, charter: Charter, now: int) -> str:
    """The consent's hash if it is signed by its subject, not expired at ``now`` (Unix seconds) and names a
    consent-only metric of ``charter``; ``ConsentRejected`` saying which otherwise."""
    metric = charter.metric(req.metric)
    if metric is None:
        raise ConsentRejected(f"consent for {req.metric!r}: not a metric of charter v{charter.metadata.version}")
    if not metric.consent_required:
        raise ConsentRejected(f"consent for {req.metric!r}: the charter does not make it consent-only")
    if req.expiry < now:
        raise ConsentRejected(f"consent of {req.subject} for {req.metric!r} expired at {req.expiry} (now {now})")
    try:
        signer: str = Account.recover_message(_signable(req, ctx), signature=bytes.fromhex(
            req.signature.removeprefix("0x")))
    except Exception as exc:  # malformed hex, wrong length, invalid curve point
        raise ConsentRejected(f"consent signature of {req.subject} is malformed: {exc}") from exc
    if signer.lower() != req.subject.lower():
        raise ConsentRejected(f"consent for {req.metric!r} is signed by {signer.lower()}, not by its subject "
                              f"{req.subject.lower()}")
    return consent_hash(req, ctx)
