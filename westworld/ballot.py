"""EIP-712 ballots: what a voter signs for each backend, how a signature is checked, and the vote's hash.

- ``offchain``: a Westworld ``Vote`` under the domain {name: "Westworld", version: "1", chainId}.
- ``governor``: OpenZeppelin's ``Ballot(uint256 proposalId,uint8 support,address voter,uint256 nonce)`` under
  the Governor's own domain, so the same signature can be relayed on chain with ``castVoteBySig``.
- ``snapshot``: Snapshot's ``Vote`` type under the domain {name: "snapshot", version: "0.1.4"}.
"""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
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


def typed_data(vote: VoteRequest, ctx: BallotContext) -> dict[str, Any]:
    """The full EIP-712 message a voter signs for ``vote`` in ``ctx``."""
    if vote.choice not in ctx.choices:
        raise VoteRejected(
            f"choice {vote.choice!r} is not one of {ctx.choices} for proposal {ctx.proposal_id}", type=VOTE_BAD_CHOICE
        )
    if ctx.backend is VoteBackend.GOVERNOR:
        return {
            "types": {
                "EIP712Domain": [*_EIP712_DOMAIN, {"name": "verifyingContract", "type": "address"}],
                "Ballot": [
                    {"name": "proposalId", "type": "uint256"},
                    {"name": "support", "type": "uint8"},
                    {"name": "voter", "type": "address"},
                    {"name": "nonce", "type": "uint256"},
                ],
            },
            "primaryType": "Ballot",
            "domain": {
                "name": ctx.governor_name,
                "version": "1",
                "chainId": ctx.chain_id,
                "verifyingContract": ctx.governor,
            },
            "message": {
                "proposalId": int(ctx.onchain_id or "0"),
                "support": GOVERNOR_CHOICES.index(vote.choice),
                "voter": vote.voter,
                "nonce": vote.nonce,
            },
        }
    if ctx.backend is VoteBackend.SNAPSHOT:
        return {
            "types": {
                "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"}],
                "Vote": [
                    {"name": "from", "type": "address"},
                    {"name": "space", "type": "string"},
                    {"name": "timestamp", "type": "uint64"},
                    {"name": "proposal", "type": "string"},
                    {"name": "choice", "type": "uint32"},
                    {"name": "reason", "type": "string"},
                    {"name": "app", "type": "string"},
                    {"name": "metadata", "type": "string"},
                ],
            },
            "primaryType": "Vote",
            "domain": {"name": "snapshot", "version": "0.1.4"},
            "message": {
                "from": vote.voter,
                "space": ctx.snapshot_space or "",
                "timestamp": vote.timestamp,
                "proposal": ctx.snapshot_proposal or ctx.proposal_id,
                "choice": ctx.choices.index(vote.choice) + 1,  # Snapshot choices are 1-based
                "reason": vote.reason,
                "app": "westworld",
                "metadata": "{}",
            },
        }
    return {
        "types": {
            "EIP712Domain": _EIP712_DOMAIN,
            "Vote": [
                {"name": "proposal", "type": "string"},
                {"name": "voter", "type": "address"},
                {"name": "choice", "type": "string"},
                {"name": "reason", "type": "string"},
            ],
        },
        "primaryType": "Vote",
        "domain": {"name": "Westworld", "version": "1", "chainId": ctx.chain_id},
        "message": {"proposal": ctx.proposal_id, "voter": vote.voter, "choice": vote.choice, "reason": vote.reason},
    }


def _signable(vote: VoteRequest, ctx: BallotContext) -> SignableMessage:
    return encode_typed_data(full_message=typed_data(vote, ctx))


def _digest(msg: SignableMessage) -> bytes:
    return keccak(b"\x19" + msg.version + msg.header + msg.body)


def vote_hash(vote: VoteRequest, ctx: BallotContext) -> str:
    """The EIP-712 digest of the ballot: the vote's identity in the database and the audit log."""
    return "0x" + _digest(_signable(vote, ctx)).hex()


def verify(vote: VoteRequest, ctx: BallotContext) -> str:
    """Check the signature recovers to ``vote.voter``; return the vote hash, or raise ``VoteRejected``.

    The typed data is encoded and hashed once: the digest recovered from is the vote hash returned (what
    ``Account.recover_message`` would hash again)."""
    digest = _digest(_signable(vote, ctx))
    try:
        signature = bytes.fromhex(vote.signature.removeprefix("0x"))
        signer: str = Account._recover_hash(digest, signature=signature)
    except Exception as exc:  # malformed hex, wrong length, invalid curve point
        raise VoteRejected(f"signature of {vote.voter} is malformed: {exc}", type=VOTE_BAD_SIGNATURE) from exc
    if signer.lower() != vote.voter.lower():
        raise VoteRejected(
            f"signature does not match voter {vote.voter} (it was made by {signer.lower()}) on proposal "
            f"{ctx.proposal_id}",
            type=VOTE_BAD_SIGNATURE,
        )
    return "0x" + digest.hex()


def sign(vote: VoteRequest, ctx: BallotContext, private_key: str) -> str:
    """Sign ``vote`` as its voter (used by the CLI and tests; the key never leaves the caller)."""
    signed = Account.sign_message(_signable(vote, ctx), private_key=private_key)
    return "0x" + bytes(signed.signature).hex()
