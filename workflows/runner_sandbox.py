"""The workflow sandbox settings every worker and replayer uses.

Signature checks (EIP-712 recovery) run inside update validators; the Ethereum libraries they use are
deterministic and load native backends lazily, so they are passed through the sandbox instead of re-imported.
"""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

PASSTHROUGH = ("eth_account", "eth_keys", "eth_utils", "eth_abi", "eth_typing", "eth_hash", "hexbytes",
               "coincurve", "cytoolz", "toolz", "Crypto", "Cryptodome", "rlp", "ckzg", "bitarray", "parsimonious",
               # Ed25519 checks of peer and guardian signatures (capabilities); a Rust extension that must load once
               "cryptography", "nacl", "pymacaroons")


def _load_native_backends() -> None:
    """Recover one signature here, outside the sandbox: eth_keys picks and loads its native backend on first use,
    and a first use inside the sandbox fails ("bad argument to internal function"), so a fresh worker or replayer
    whose first recovery was a validator's refused a good signature (found replaying the charter's histories)."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    message = encode_defunct(b"westworld")
    Account.recover_message(message, signature=Account.sign_message(message, b"\x01" * 32).signature)


def workflow_runner() -> SandboxedWorkflowRunner:
    _load_native_backends()
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH))
