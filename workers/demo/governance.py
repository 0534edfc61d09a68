"""`westworld demo`: a real emergency vote on the Governor, from proposal to on-chain execution.

Five local voters get voting power and sign EIP-712 ballots; a forged ballot is refused; quorum is
reached and the outcome settles early, so a late ballot is refused as closed; the result goes to the
audit log, and the decision is queued in the timelock, waited out with a durable timer, and executed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from eth_account.signers.local import LocalAccount
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from activities.chain import load_deployment
from westworld import ballot
from westworld.amounts import format_tokens
from westworld.chain import OnChainCall
from westworld.keys import audit_verify_id
from westworld.vote import (
    DaoVoteInput,
    DaoVoteResult,
    Proposal,
    VoteBackend,
    VoteKind,
    VoteRequest,
    VoteState,
)
from workers.cli.vote import explain_refusal, start_vote, submit_vote
from workers.client import connect
from workers.demo.voters import demo_voters
from workers.settings import Settings
from workers.stack.contracts import distribute_voting_power
from workflows.dao_vote import DaoVoteWorkflow

Echo = Callable[[str], None]
# Shares of the token supply given to the five demo voters (the deployer keeps the rest, undelegated).
SHARES = (0.30, 0.25, 0.10, 0.05, 0.05)
BALLOTS = (("voter-3", "against"), ("voter-4", "abstain"), ("voter-1", "for"), ("voter-2", "for"),
           ("voter-5", "for"))


async def run_demo(s: Settings, echo: Echo) -> DaoVoteResult:
    client = await connect(s)
    deployment = load_deployment(s.contracts_file)
    voters = demo_voters(s.data_dir / "demo-keys")
    supply = await distribute_voting_power(
        s.chain_rpc_url, deployment,
        {acct.key.hex(): share for acct, share in zip(voters.values(), SHARES, strict=True)},
        s.chain_deployer_key, as_share_of_supply=True,
    )
    echo(f"1. voters: {', '.join(f'{n} {sh:.0%}' for n, sh in zip(voters, SHARES, strict=True))} "
         f"of {format_tokens(supply, 'WEST')} (keys in {s.data_dir / 'demo-keys'})")
    pid = f"demo-mtu-{int(time.time())}"
    inp = DaoVoteInput(
        proposal=Proposal(
            id=pid, title="Raise the mesh MTU to 1400",
            body="Measured in the Cradle: fewer fragmented frames, no loss increase.",
            evidence_url="https://example.invalid/evidence/mtu-1400",
            choices=["against", "for", "abstain"],
            calls=[OnChainCall(target="MeshConfig", signature="setParameter(string,string)", args=["mtu", "1400"])],
        ),
        kind=VoteKind.EMERGENCY, backend=VoteBackend.GOVERNOR, quorum=0.04,
    )
    wf_id = await start_vote(client, s, inp)
    echo(f"2. proposal {pid} on the Emergency Governor (2 h window); watch it at "
         f"http://127.0.0.1:{s.temporal_ui_port}/namespaces/{s.temporal_namespace}/workflows/{wf_id}")
    handle = client.get_workflow_handle(wf_id, result_type=DaoVoteResult)
    while (await handle.query(DaoVoteWorkflow.status)).state is VoteState.OPENING:
        await asyncio.sleep(0.2)
    await _show_refusals(handle, voters, pid, echo)
    echo("4. signed ballots:")
    for name, choice in BALLOTS:
        try:
            r = await submit_vote(client, s, pid, choice, voters[name].key.hex(), reason="demo")
            echo(f"   {name} {choice:8} weight {format_tokens(r.weight):>12}  accepted")
        except (WorkflowUpdateFailedError, ApplicationError) as err:  # refused by the workflow or the intake
            echo(f"   {name} {choice:8} refused: {explain_refusal(err)}")
    echo("5. outcome settled; on chain: finalize -> queue in timelock -> durable timer -> execute")
    last_step = ""
    while True:
        st = await handle.query(DaoVoteWorkflow.status)
        if st.step != last_step:
            echo(f"   step: {st.step}")
            last_step = st.step
        if st.state is VoteState.DONE:
            break
        await asyncio.sleep(0.5)
    result: DaoVoteResult = await handle.result()
    echo(f"6. result: {result.decision.upper()}  turnout {result.turnout:.1%}  approve {result.approve_share:.1%}  "
         f"on chain: {result.onchain_state}, executed in tx {result.executed_tx}")
    await _show_audit(s, result, echo)
    return result


async def _show_refusals(handle: WorkflowHandle[DaoVoteWorkflow, DaoVoteResult], voters: dict[str, LocalAccount],
                         pid: str, echo: Echo) -> None:
    ctx = await handle.query(DaoVoteWorkflow.ballot_context)
    assert ctx is not None
    mallory, victim = voters["voter-5"], voters["voter-1"]
    forged = VoteRequest(proposal_id=pid, voter=victim.address, choice="against", signature="0x")
    forged = forged.model_copy(update={"signature": ballot.sign(forged, ctx, mallory.key.hex())})
    try:
        await handle.execute_update(DaoVoteWorkflow.cast_vote, forged)
        raise RuntimeError("a forged ballot was accepted")
    except WorkflowUpdateFailedError as err:
        echo(f"3. forged ballot for voter-1 signed by voter-5: {explain_refusal(err)}")


async def _show_audit(s: Settings, result: DaoVoteResult, echo: Echo) -> None:
    """The worker verifies the log (AuditVerifyWorkflow) and hands over its leaves; the demo, a client that opens
    no database, checks the entry's inclusion proof against the root the worker reported."""
    import uuid

    from westworld import merkle
    from westworld.audit import inclusion_proof_of
    from westworld.audit_trust import MAX_SHOWN, AuditVerifyInput
    from workflows.audit_verify import AuditVerifyWorkflow

    client = await connect(s)
    found = await client.execute_workflow(AuditVerifyWorkflow.run, AuditVerifyInput(last=MAX_SHOWN),
                                          id=audit_verify_id(str(uuid.uuid4())), task_queue=s.task_queue)
    report = found.report
    hashes = [bytes.fromhex(e.leaf_hash) for e in sorted(found.entries, key=lambda e: e.seq)]
    if len(hashes) == report.tree_size:
        proof = inclusion_proof_of(hashes, result.audit_seq)
        included = merkle.verify_inclusion(proof.seq, proof.tree_size, bytes.fromhex(proof.leaf_hash),
                                           [bytes.fromhex(h) for h in proof.path], bytes.fromhex(report.root))
        echo(f"7. audit log entry #{result.audit_seq}: inclusion proof of {len(proof.path)} hashes "
             f"{'verified' if included else 'FAILED'}; log verified: "
             f"{'OK' if report.ok else 'FAILED'} ({report.tree_size} entries, root {report.root[:16]}…)")
    else:  # a log longer than one read: the worker's verification stands alone
        echo(f"7. audit log verified by the worker: {'OK' if report.ok else 'FAILED'} ({report.tree_size} entries)")
    value = await _read_parameter(s, "mtu")
    echo(f"8. MeshConfig.parameters('mtu') on chain = {value!r}")


async def _read_parameter(s: Settings, key: str) -> str:
    from eth_account import Account as Acct

    from activities.chain import ChainClient, connect_web3

    w3 = connect_web3(s.chain_rpc_url)
    chain = ChainClient(w3, load_deployment(s.contracts_file), Acct.from_key(s.chain_deployer_key),
                        s.chain_dev_time_travel)
    try:
        return await chain.read_parameter(key)
    finally:
        await w3.provider.disconnect()
