"""Snapshot hub messages: the signed ``Proposal`` an author publishes, the envelope the sequencer takes, and the
models of what the hub answers.

Pure: no I/O and no clock (the signing time is passed in). ``activities/snapshot.py`` signs and sends.

What the sequencer (snapshot-labs/snapshot-sequencer, ``src/ingestor.ts``) checks, and why the shapes here are
exactly these:

- the domain is ``{name: "snapshot", version: "0.1.4"}`` (no chainId);
- ``sha256(JSON.stringify(types))`` (``EIP712Domain`` removed) must be one of the hashes listed in snapshot.js
  ``src/sign/hashedTypes.json``: the field list and its order below are snapshot.js ``proposalTypes`` (EVM
  variant, ``address from``), so changing either makes the hub answer ``wrong types``;
- ``message.timestamp`` must lie between 6 days before and 5 minutes after the sequencer's clock;
- the message id is the EIP-712 digest of the signed data, so a message signed twice identically is the same
  message, and the hub refuses the second copy with ``duplicate message``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from eth_account.messages import encode_typed_data
from eth_utils.crypto import keccak
from pydantic import BaseModel, ConfigDict, Field, model_validator

SNAPSHOT_DOMAIN: dict[str, Any] = {"name": "snapshot", "version": "0.1.4"}
PROPOSAL_TYPE = "single-choice"  # matches the uint32 choice of the Vote that westworld.ballot builds
APP = "westworld"

_DOMAIN_TYPES = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"}]
# snapshot.js src/sign/types.ts `proposalTypes` with the EVM `from`; the order is part of the accepted hash.
PROPOSAL_TYPES: dict[str, list[dict[str, str]]] = {
    "Proposal": [
        {"name": "from", "type": "address"},
        {"name": "space", "type": "string"},
        {"name": "timestamp", "type": "uint64"},
        {"name": "type", "type": "string"},
        {"name": "title", "type": "string"},
        {"name": "body", "type": "string"},
        {"name": "discussion", "type": "string"},
        {"name": "choices", "type": "string[]"},
        {"name": "labels", "type": "string[]"},
        {"name": "start", "type": "uint64"},
        {"name": "end", "type": "uint64"},
        {"name": "snapshot", "type": "uint64"},
        {"name": "plugins", "type": "string"},
        {"name": "privacy", "type": "string"},
        {"name": "app", "type": "string"},
    ]
}


class SnapshotProposalInput(BaseModel):
    """A proposal to publish on a Snapshot space (single-choice voting)."""

    model_config = ConfigDict(extra="forbid")

    space: str = Field(min_length=1, pattern=r"^[^ ]+$", description="Snapshot space id, e.g. 'westworld.eth'.")
    title: str = Field(min_length=1)
    body: str
    choices: list[str] = Field(min_length=2)
    start: int = Field(ge=0, description="Voting opens, unix seconds.")
    end: int = Field(ge=0, description="Voting closes, unix seconds.")
    snapshot_block: int = Field(ge=0, description="Block at which voting power is measured.")
    discussion: str = ""
    labels: list[str] = Field(default_factory=list)
    timestamp: int | None = Field(
        None, ge=0, description="Signing time, unix seconds; fixed so that a retry signs the same message."
    )

    @model_validator(mode="after")
    def _window(self) -> SnapshotProposalInput:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class SnapshotProposalRef(BaseModel):
    """Where a published proposal lives: its hub id, and its IPFS copy when the hub reported one."""

    id: str
    ipfs: str | None = None


class SnapshotScores(BaseModel):
    """A proposal's tally as the hub reports it (``scores`` in choice order)."""

    scores: list[float]
    scores_total: float
    votes: int
    state: str


class SnapshotVoteInput(BaseModel):
    """Activity input: a voter's own signed Snapshot ``Vote`` (from ``westworld.ballot.typed_data``) to forward."""

    typed_data: dict[str, Any]
    voter: str
    signature: str


def proposal_typed_data(inp: SnapshotProposalInput, author: str, timestamp: int) -> dict[str, Any]:
    """The full EIP-712 message (with ``EIP712Domain`` and ``primaryType``) ``author`` signs to publish ``inp``."""
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPES, **PROPOSAL_TYPES},
        "primaryType": "Proposal",
        "domain": dict(SNAPSHOT_DOMAIN),
        "message": {
            "from": author,
            "space": inp.space,
            "timestamp": timestamp,
            "type": PROPOSAL_TYPE,
            "title": inp.title,
            "body": inp.body,
            "discussion": inp.discussion,
            "choices": list(inp.choices),
            "labels": list(inp.labels),
            "start": inp.start,
            "end": inp.end,
            "snapshot": inp.snapshot_block,
            "plugins": "{}",
            "privacy": "",
            "app": APP,
        },
    }


def message_id(typed_data: dict[str, Any]) -> str:
    """The EIP-712 digest of ``typed_data``: the id the hub gives the message (snapshot.js ``getHash``)."""
    msg = encode_typed_data(full_message=typed_data)
    return "0x" + keccak(b"\x19" + msg.version + msg.header + msg.body).hex()


def envelope(address: str, sig: str, typed_data: dict[str, Any]) -> dict[str, Any]:
    """The sequencer's POST body: ``{address, sig, data: {domain, types, message}}`` without ``EIP712Domain``."""
    types = {name: fields for name, fields in typed_data["types"].items() if name != "EIP712Domain"}
    return {
        "address": address,
        "sig": sig,
        "data": {"domain": typed_data["domain"], "types": types, "message": typed_data["message"]},
    }


def sequencer_types_hash(types: dict[str, Any]) -> str:
    """``sha256(JSON.stringify(types))`` as the sequencer computes it to recognise the message kind."""
    types = {name: fields for name, fields in types.items() if name != "EIP712Domain"}
    return hashlib.sha256(json.dumps(types, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
