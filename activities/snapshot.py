"""Snapshot hub activities: publish a proposal, forward a voter's signed vote, read a proposal's scores.

Talks to a Snapshot sequencer (signed messages, ``POST /``) and a Snapshot hub (GraphQL, ``POST /graphql``).
No Snapshot hub runs on the development machines (it needs the internet, MySQL and Snapshot's own services), so
this module's tests check what is sent and how answers are parsed against a recording stand-in; see
``docs/snapshot.md`` for what is and is not verified.

Errors: a 4xx refusal with the sequencer's ``{"error", "error_description"}`` is permanent
(``SnapshotRejected``, naming the hub's reason), except ``duplicate message``, which means an earlier attempt
already published this exact message, and 425/429 (busy, rate-limited). Connection errors and 5xx raise
``httpx`` errors, left to the activity's retry policy.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_typed_data
from temporalio import activity

from westworld.errors import (
    INVALID_INPUT,
    SNAPSHOT_REJECTED,
    SNAPSHOT_UNKNOWN_PROPOSAL,
    VOTE_BAD_SIGNATURE,
    PermanentError,
)
from westworld.snapshot import (
    SnapshotProposalInput,
    SnapshotProposalRef,
    SnapshotScores,
    SnapshotVoteInput,
    envelope,
    message_id,
    proposal_typed_data,
)

SCORES_QUERY = "query Proposal($id: String!) { proposal(id: $id) { id scores scores_total votes state } }"
_DUPLICATE = "duplicate message"
_TRANSIENT_4XX = (408, 425, 429)


class SnapshotClient:
    """A Snapshot hub and sequencer, reached with an injected ``httpx.AsyncClient``; signs as the space's author."""

    def __init__(self, http: httpx.AsyncClient, hub_url: str, sequencer_url: str, space: str, author_key: str) -> None:
        self._http = http
        self._hub = hub_url.rstrip("/")
        self._sequencer = sequencer_url.rstrip("/")
        self._space = space
        self._author = Account.from_key(author_key)

    @property
    def author(self) -> str:
        """The checksummed address proposals are published from."""
        return str(self._author.address)

    async def create_proposal(self, inp: SnapshotProposalInput) -> SnapshotProposalRef:
        """Sign ``inp`` as the author and publish it; a retry with the same ``inp.timestamp`` is idempotent."""
        if inp.space != self._space:
            raise PermanentError(
                f"proposal is for Snapshot space {inp.space!r} but this worker publishes to {self._space!r}",
                type=INVALID_INPUT,
            )
        timestamp = inp.timestamp if inp.timestamp is not None else int(time.time())
        data = proposal_typed_data(inp, self.author, timestamp)
        signed = Account.sign_message(encode_typed_data(full_message=data), private_key=self._author.key)
        answer = await self._send(envelope(self.author, "0x" + bytes(signed.signature).hex(), data), "proposal")
        if answer is None:
            return SnapshotProposalRef(id=message_id(data), ipfs=None)
        return SnapshotProposalRef(id=_id(answer, self._sequencer), ipfs=_optional_str(answer.get("ipfs")))

    async def submit_vote(self, typed_data: dict[str, Any], voter: str, signature: str) -> str:
        """Forward ``voter``'s own signed ``Vote`` unchanged; return the hub's id of the vote."""
        try:
            signer = str(
                Account.recover_message(
                    encode_typed_data(full_message=typed_data), signature=bytes.fromhex(signature.removeprefix("0x"))
                )
            )
        except Exception as exc:  # malformed typed data, hex, or signature
            raise PermanentError(f"vote of {voter} cannot be checked: {exc}", type=VOTE_BAD_SIGNATURE) from exc
        if signer.lower() != voter.lower():
            raise PermanentError(
                f"Snapshot vote signature was made by {signer.lower()}, not by voter {voter.lower()}",
                type=VOTE_BAD_SIGNATURE,
            )
        answer = await self._send(envelope(voter, signature, typed_data), "vote")
        return message_id(typed_data) if answer is None else _id(answer, self._sequencer)

    async def scores(self, proposal_id: str) -> SnapshotScores:
        """The proposal's scores, total, vote count and state, read from the hub's GraphQL API."""
        url = f"{self._hub}/graphql"
        resp = await self._http.post(url, json={"query": SCORES_QUERY, "variables": {"id": proposal_id}})
        if resp.status_code >= 500 or resp.status_code in _TRANSIENT_4XX:
            resp.raise_for_status()
        body = _json(resp)
        if resp.status_code >= 400 or body.get("errors"):
            errors = body.get("errors") or resp.text[:300]
            raise PermanentError(f"Snapshot hub {url} refused the scores query: {errors}", type=SNAPSHOT_REJECTED)
        proposal = (body.get("data") or {}).get("proposal")
        if proposal is None:
            raise PermanentError(
                f"unknown Snapshot proposal {proposal_id!r} on hub {self._hub}", type=SNAPSHOT_UNKNOWN_PROPOSAL
            )
        return SnapshotScores(
            scores=proposal.get("scores") or [],
            scores_total=proposal.get("scores_total") or 0.0,
            votes=proposal.get("votes") or 0,
            state=proposal["state"],
        )

    async def _send(self, body: dict[str, Any], kind: str) -> dict[str, Any] | None:
        """POST a signed envelope; the answer, or None when the hub already has this exact message."""
        resp = await self._http.post(self._sequencer, json=body)
        if resp.status_code >= 500 or resp.status_code in _TRANSIENT_4XX:
            resp.raise_for_status()
        answer = _json(resp)
        if resp.status_code >= 400:
            reason = answer.get("error_description") or answer.get("error") or resp.text[:300]
            if reason == _DUPLICATE:
                return None
            space = body["data"]["message"].get("space", "")
            raise PermanentError(
                f"Snapshot sequencer {self._sequencer} refused the {kind} for space {space!r}: {reason}",
                type=SNAPSHOT_REJECTED,
            )
        return answer


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _id(answer: dict[str, Any], url: str) -> str:
    ident = answer.get("id")
    if not isinstance(ident, str) or not ident:
        # Not a hub answer (a proxy page?): retry; the signed message is identical, so no double publication.
        raise RuntimeError(f"Snapshot sequencer {url} answered without an id: {answer}")
    return ident


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class SnapshotActivities:
    """Built with a :class:`SnapshotClient`."""

    def __init__(self, client: SnapshotClient) -> None:
        self._client = client

    @activity.defn(name="snapshot_create_proposal")
    async def create_proposal(self, inp: SnapshotProposalInput) -> SnapshotProposalRef:
        """Publish the proposal; without ``inp.timestamp`` the signing time is the activity's first scheduling,
        so every retry signs the same message."""
        if inp.timestamp is None:
            inp = inp.model_copy(update={"timestamp": int(activity.info().scheduled_time.timestamp())})
        return await self._client.create_proposal(inp)

    @activity.defn(name="snapshot_submit_vote")
    async def submit_vote(self, inp: SnapshotVoteInput) -> str:
        """Forward a voter's signed vote to the hub; return its hub id."""
        return await self._client.submit_vote(inp.typed_data, inp.voter, inp.signature)

    @activity.defn(name="snapshot_scores")
    async def scores(self, proposal_id: str) -> SnapshotScores:
        """Read the proposal's scores from the hub."""
        return await self._client.scores(proposal_id)
