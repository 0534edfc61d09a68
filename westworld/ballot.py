"""EIP-712 ballots: what a voter signs for each backend, how a signature is checked, and the vote's hash.

- ``offchain``: a Westworld ``Vote`` under the domain {name: "Westworld", version: "1", chainId}.
- ``governor``: OpenZeppelin's ``Ballot(uint256 proposalId,uint8 support,address voter,uint256 nonce)`` under
  the Governor's own domain, so the same signature can be relayed on chain with ``castVoteBySig``.
- ``snapshot``: Snapshot's ``Vote`` type under the domain {name: "snapshot", version: "0.1.4"}.

Checking a ballot is the vote intake's hot path, so :func:`verify` and :func:`vote_hash` take a direct route for
the ballots every client sends: the struct hash is the EIP-712 encoding written out for these three fixed types
(each field one 32-byte word: strings hashed, addresses and integers left-padded), the domain separator is cached
per domain, and the signer is recovered with libsecp256k1 (coincurve) directly. It gives the digest and signer
eth_account would, byte for byte (``tests/unit/test_ballot_fast.py`` compares them on random ballots); anything
outside the plain shapes (a signature that is not 65 bytes of hex, an out-of-range integer, an unencodable string)
takes eth_account's route, so every refusal and its message stay what they were.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import coincurve
from eth_account import Account
from eth_account._utils.encode_typed_data.encoding_and_hashing import hash_domain, hash_type
from eth_account.messages import SignableMessage, encode_typed_data
from eth_hash.auto import keccak as keccak256
from eth_utils.crypto import keccak
from pydantic import BaseModel

from westworld.errors import VOTE_BAD_CHOICE, VOTE_BAD_SIGNATURE, VoteRejected
from westworld.vote import GOVERNOR_CHOICES, VoteBackend, VoteOpening, VoteRequest


class BallotContext(BaseModel):
    """Everything besides the vote itself that a signature commits to."""

    backend: VoteBackend
    chain_id: int
    proposal_id: str
    choices: list[str]
    governor: str | None = None
    governor_name: str | None = None
    onchain_id: str | None = None
    snapshot_space: str | None = None
    snapshot_proposal: str | None = None


def context_of(opening: VoteOpening) -> BallotContext | None:
    """The ballot context a vote opened with, rebuilt from its stored opening (None for openings saved before
    they carried it: those votes take ballots through the workflow's update only)."""
    if not opening.intake or opening.backend is None or opening.choices is None:
        return None
    g = opening.governor
    return BallotContext(
        backend=opening.backend, chain_id=opening.snapshot.chain_id, proposal_id=opening.proposal_id,
        choices=opening.choices, governor=g.governor if g else None, governor_name=g.governor_name if g else None,
        onchain_id=g.onchain_id if g else None, snapshot_space=opening.snapshot_space,
        snapshot_proposal=opening.snapshot_proposal)


_EIP712_DOMAIN = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
]
_GOVERNOR_DOMAIN = [*_EIP712_DOMAIN, {"name": "verifyingContract", "type": "address"}]
_SNAPSHOT_DOMAIN = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"}]
_BALLOT = [
    {"name": "proposalId", "type": "uint256"},
    {"name": "support", "type": "uint8"},
    {"name": "voter", "type": "address"},
    {"name": "nonce", "type": "uint256"},
]
_SNAPSHOT_VOTE = [
    {"name": "from", "type": "address"},
    {"name": "space", "type": "string"},
    {"name": "timestamp", "type": "uint64"},
    {"name": "proposal", "type": "string"},
    {"name": "choice", "type": "uint32"},
    {"name": "reason", "type": "string"},
    {"name": "app", "type": "string"},
    {"name": "metadata", "type": "string"},
]
_OFFCHAIN_VOTE = [
    {"name": "proposal", "type": "string"},
    {"name": "voter", "type": "address"},
    {"name": "choice", "type": "string"},
    {"name": "reason", "type": "string"},
]
SNAPSHOT_APP = "westworld"
SNAPSHOT_METADATA = "{}"


def _check_choice(vote: VoteRequest, ctx: BallotContext) -> None:
    if vote.choice not in ctx.choices:
        raise VoteRejected(
            f"choice {vote.choice!r} is not one of {ctx.choices} for proposal {ctx.proposal_id}", type=VOTE_BAD_CHOICE
        )


def _domain(ctx: BallotContext) -> dict[str, Any]:
    if ctx.backend is VoteBackend.GOVERNOR:
        return {"name": ctx.governor_name, "version": "1", "chainId": ctx.chain_id,
                "verifyingContract": ctx.governor}
    if ctx.backend is VoteBackend.SNAPSHOT:
        return {"name": "snapshot", "version": "0.1.4"}
    return {"name": "Westworld", "version": "1", "chainId": ctx.chain_id}


def typed_data(vote: VoteRequest, ctx: BallotContext) -> dict[str, Any]:
    """The full EIP-712 message a voter signs for ``vote`` in ``ctx``."""
    _check_choice(vote, ctx)
    if ctx.backend is VoteBackend.GOVERNOR:
        return {
            "types": {"EIP712Domain": _GOVERNOR_DOMAIN, "Ballot": _BALLOT},
            "primaryType": "Ballot",
            "domain": _domain(ctx),
            "message": {
                "proposalId": int(ctx.onchain_id or "0"),
                "support": GOVERNOR_CHOICES.index(vote.choice),
                "voter": vote.voter,
                "nonce": vote.nonce,
            },
        }
    if ctx.backend is VoteBackend.SNAPSHOT:
        return {
            "types": {"EIP712Domain": _SNAPSHOT_DOMAIN, "Vote": _SNAPSHOT_VOTE},
            "primaryType": "Vote",
            "domain": _domain(ctx),
            "message": {
                "from": vote.voter,
                "space": ctx.snapshot_space or "",
                "timestamp": vote.timestamp,
                "proposal": ctx.snapshot_proposal or ctx.proposal_id,
                "choice": ctx.choices.index(vote.choice) + 1,  # Snapshot choices are 1-based
                "reason": vote.reason,
                "app": SNAPSHOT_APP,
                "metadata": SNAPSHOT_METADATA,
            },
        }
    return {
        "types": {"EIP712Domain": _EIP712_DOMAIN, "Vote": _OFFCHAIN_VOTE},
        "primaryType": "Vote",
        "domain": _domain(ctx),
        "message": {"proposal": ctx.proposal_id, "voter": vote.voter, "choice": vote.choice, "reason": vote.reason},
    }


def _signable(vote: VoteRequest, ctx: BallotContext) -> SignableMessage:
    return encode_typed_data(full_message=typed_data(vote, ctx))


def _digest(msg: SignableMessage) -> bytes:
    return keccak(b"\x19" + msg.version + msg.header + msg.body)


# The direct route (see the module docstring). Type hashes are eth_account's own, over the same field lists.
_BALLOT_TYPEHASH = hash_type("Ballot", {"Ballot": _BALLOT})
_SNAPSHOT_TYPEHASH = hash_type("Vote", {"Vote": _SNAPSHOT_VOTE})
_OFFCHAIN_TYPEHASH = hash_type("Vote", {"Vote": _OFFCHAIN_VOTE})
_PLAIN_ADDRESS = re.compile(r"0x[0-9a-f]{40}")  # what VoteRequest keeps (lower case); others take the slow route
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_ZERO12 = bytes(12)


class _Declined(Exception):
    """The direct route does not take this ballot: eth_account's route decides (and words any refusal)."""


@lru_cache(maxsize=1024)
def _domain_separator(backend: VoteBackend, chain_id: int, name: str | None, contract: str | None) -> bytes:
    if backend is VoteBackend.GOVERNOR:
        return hash_domain({"name": name, "version": "1", "chainId": chain_id, "verifyingContract": contract})
    if backend is VoteBackend.SNAPSHOT:
        return hash_domain({"name": "snapshot", "version": "0.1.4"})
    return hash_domain({"name": "Westworld", "version": "1", "chainId": chain_id})


@lru_cache(maxsize=4096)
def _text_hash(text: str) -> bytes:
    return keccak256(text.encode("utf-8"))


def _uint(value: int, bits: int) -> bytes:
    if not 0 <= value < 1 << bits:
        raise _Declined
    return value.to_bytes(32, "big")


def _address(value: str) -> bytes:
    if not _PLAIN_ADDRESS.fullmatch(value):
        raise _Declined
    return _ZERO12 + bytes.fromhex(value[2:])


def _struct_hash(vote: VoteRequest, ctx: BallotContext) -> bytes:
    if ctx.backend is VoteBackend.GOVERNOR:
        return keccak256(_BALLOT_TYPEHASH + _uint(int(ctx.onchain_id or "0"), 256)
                         + _uint(GOVERNOR_CHOICES.index(vote.choice), 8) + _address(vote.voter)
                         + _uint(vote.nonce, 256))
    if ctx.backend is VoteBackend.SNAPSHOT:
        return keccak256(_SNAPSHOT_TYPEHASH + _address(vote.voter) + _text_hash(ctx.snapshot_space or "")
                         + _uint(vote.timestamp, 64) + _text_hash(ctx.snapshot_proposal or ctx.proposal_id)
                         + _uint(ctx.choices.index(vote.choice) + 1, 32) + keccak256(vote.reason.encode("utf-8"))
                         + _text_hash(SNAPSHOT_APP) + _text_hash(SNAPSHOT_METADATA))
    return keccak256(_OFFCHAIN_TYPEHASH + _text_hash(ctx.proposal_id) + _address(vote.voter)
                     + _text_hash(vote.choice) + keccak256(vote.reason.encode("utf-8")))


def digest(vote: VoteRequest, ctx: BallotContext) -> bytes:
    """The 32-byte EIP-712 digest the voter signs (``VoteRejected`` for a choice the proposal lacks)."""
    _check_choice(vote, ctx)
    try:
        separator = _domain_separator(ctx.backend, ctx.chain_id, ctx.governor_name, ctx.governor)
        return keccak256(b"\x19\x01" + separator + _struct_hash(vote, ctx))
    except Exception:  # _Declined, or a value eth_account's route will refuse in its own words
        return _digest(_signable(vote, ctx))


def _recover_direct(digest: bytes, signature: str) -> str:
    """The signer's lower-case address, by the same rules as ``Account._recover_hash`` (v of 0/1, 27/28 or
    EIP-155; r and s below the curve order); ``_Declined`` for anything else."""
    if len(signature) != 132 or not signature.startswith("0x"):
        raise _Declined
    try:
        raw = bytes.fromhex(signature[2:])
    except ValueError:
        raise _Declined from None
    v = raw[64]
    if v in {27, 28}:
        v -= 27
    elif v >= 35:
        v = (v - 35) % 2
    elif v not in {0, 1}:
        raise _Declined
    if int.from_bytes(raw[:32]) >= _SECP256K1_N or int.from_bytes(raw[32:64]) >= _SECP256K1_N:
        raise _Declined
    try:
        public = coincurve.PublicKey.from_signature_and_message(raw[:64] + bytes((v,)), digest, hasher=None)
    except Exception:  # not a point on the curve, r or s zero
        raise _Declined from None
    return "0x" + keccak256(public.format(compressed=False)[1:])[-20:].hex()


def vote_hash(vote: VoteRequest, ctx: BallotContext) -> str:
    """The EIP-712 digest of the ballot: the vote's identity in the database and the audit log."""
    return "0x" + digest(vote, ctx).hex()


def verify(vote: VoteRequest, ctx: BallotContext) -> str:
    """Check the signature recovers to ``vote.voter``; return the vote hash, or raise ``VoteRejected``.

    The typed data is encoded and hashed once: the digest recovered from is the vote hash returned (what
    ``Account.recover_message`` would hash again)."""
    message = digest(vote, ctx)
    try:
        signer = _recover_direct(message, vote.signature)
    except _Declined:
        try:
            signature = bytes.fromhex(vote.signature.removeprefix("0x"))
            signer = Account._recover_hash(message, signature=signature)
        except Exception as exc:  # malformed hex, wrong length, invalid curve point
            raise VoteRejected(f"signature of {vote.voter} is malformed: {exc}", type=VOTE_BAD_SIGNATURE) from exc
    if signer.lower() != vote.voter.lower():
        raise VoteRejected(
            f"signature does not match voter {vote.voter} (it was made by {signer.lower()}) on proposal "
            f"{ctx.proposal_id}",
            type=VOTE_BAD_SIGNATURE,
        )
    return "0x" + message.hex()


def sign(vote: VoteRequest, ctx: BallotContext, private_key: str) -> str:
    """Sign ``vote`` as its voter (used by the CLI and tests; the key never leaves the caller)."""
    signed = Account.sign_message(_signable(vote, ctx), private_key=private_key)
    return "0x" + bytes(signed.signature).hex()
