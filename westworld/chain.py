"""Chain payloads: what crosses between workflows and the chain activities, and the record of a deployment.

Pure pydantic models, no I/O (reading and writing the deployment file lives in ``activities/chain.py``).
Amounts (voting power, supply) are wei and can exceed 2**53: Python ints are exact, so they stay ints. On-chain
proposal ids are uint256 hashes and are kept as decimal strings, so no JSON consumer rounds them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from westworld.amounts import Amount

# Governor.ProposalState, in enum order.
PROPOSAL_STATES = ("Pending", "Active", "Canceled", "Defeated", "Succeeded", "Queued", "Expired", "Executed")
DEV_CHAIN_ID = 31337  # anvil's default; time travel is only ever done on this chain

# Deployment names (keys of ``Deployment.addresses`` and ``Deployment.abis``).
TOKEN = "WestworldToken"  # noqa: S105 (a contract name)
TIMELOCK = "WestworldTimelock"
GOVERNOR = "WestworldGovernor"
EMERGENCY_GOVERNOR = "WestworldEmergencyGovernor"
MESH_CONFIG = "MeshConfig"
AIRDROP = "VotingPowerAirdrop"
CHARTER = "Charter"  # the Anti-Delos charter in force (contracts/src/Charter.sol), owned by the timelock
TOKEN_SYMBOL = "WEST"  # noqa: S105 (a ticker) the WestworldToken's ERC-20 symbol (contracts/src/WestworldToken.sol), 18 decimals


class OnChainCall(BaseModel):
    """One call a proposal executes through the timelock if it passes."""

    target: str = Field(description='Deployment contract name (e.g. "MeshConfig") or a 0x address.')
    signature: str = Field(description='Function signature, e.g. "setParameter(string,string)".')
    args: list[Any] = Field(default_factory=list, description="Arguments, ABI-encoded by the signature's types.")
    value: Amount = Field(0, ge=0, description="Wei sent with the call.")


class ChainSnapshot(BaseModel):
    """The voting-power snapshot of an off-chain vote: weights are read at ``timepoint`` (a timestamp)."""

    chain_id: int
    timepoint: int
    total_supply: Amount
    token: str
    block: int = Field(0, description="Block number at the snapshot (what Snapshot spaces measure power at).")


class GovernorProposeInput(BaseModel):
    """Propose ``calls`` on the normal or emergency Governor; ``proposal_key`` names it in logs."""

    proposal_key: str
    description: str
    calls: list[OnChainCall] = Field(default_factory=list)
    emergency: bool = False


class GovernorProposal(BaseModel):
    """A proposal on a Governor, with what it needs to be queued and executed later."""

    governor: str = Field(description="Governor address (the EIP-712 verifying contract of its ballots).")
    governor_name: str = Field(description="Governor name (the EIP-712 domain name of its ballots).")
    chain_id: int
    onchain_id: str = Field(description="Proposal id (uint256) as a decimal string.")
    snapshot: int = Field(description="Timepoint (timestamp) at which voting power is read.")
    deadline: int = Field(description="Last timepoint (timestamp) at which votes are accepted.")
    total_supply: Amount = Field(description="Token supply at the snapshot (wei).")
    quorum: Amount = Field(description="Votes (wei) the proposal needs, for + abstain.")
    description_hash: str = Field(description="0x keccak256 of the description.")
    targets: list[str] = Field(default_factory=list, description="Resolved call targets (addresses).")
    values: list[Amount] = Field(default_factory=list, description="Wei sent with each call.")
    calldatas: list[str] = Field(default_factory=list, description="0x ABI-encoded calls.")
    proposed_block: int = Field(0, description="Block of the propose transaction (bounds log searches).")


class RelayVoteInput(BaseModel):
    """A voter's EIP-712 Ballot signature, relayed to the Governor with ``castVoteBySig``."""

    governor: str
    onchain_id: str
    support: int = Field(ge=0, le=2, description="0 against, 1 for, 2 abstain.")
    voter: str
    signature: str


class GovernorStateResult(BaseModel):
    """A proposal's state (a ``PROPOSAL_STATES`` name) and its on-chain tally in wei."""

    state: str
    for_votes: Amount
    against_votes: Amount
    abstain_votes: Amount


class QueueResult(BaseModel):
    """The timelock operation is ready at ``eta`` (chain timestamp)."""

    eta: int
    tx_hash: str


class ExecuteResult(BaseModel):
    tx_hash: str
    block: int


class GovernorParams(BaseModel):
    name: str
    voting_delay: int = Field(description="Seconds between proposal and snapshot.")
    voting_period: int = Field(description="Seconds votes are accepted.")
    quorum_percent: int


class Deployment(BaseModel):
    """Where the project's contracts live on one chain, and their ABIs (keys are the deployment names)."""

    chain_id: int
    deployer: str
    addresses: dict[str, str]
    abis: dict[str, list[dict[str, Any]]]
    timelock_delay: int
    governors: dict[str, GovernorParams] = Field(description="By deployment name (GOVERNOR, EMERGENCY_GOVERNOR).")
    token_symbol: str = Field(TOKEN_SYMBOL, description="The voting token's ERC-20 symbol (what the CLI prints).")
    token_decimals: int = Field(18, ge=0, le=77, description="The voting token's ERC-20 decimals.")

    def address(self, name: str) -> str:
        """The address of ``name``; ``InvalidInput`` naming the known contracts if there is none."""
        from westworld.errors import InvalidInput

        if name not in self.addresses:
            raise InvalidInput(f"no contract named {name!r} in the deployment (known: {sorted(self.addresses)})")
        return self.addresses[name]
