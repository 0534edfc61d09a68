"""`westworld demo --only shelter`: the document shelter on the live stack, end to end.

Ten guardians and two requesters make their keys; a key ceremony splits a new master key 3-of-10 (the genesis
ceremony; on a later run, approved by the current guardians, whose key files the demo kept); a document is
stored (encrypted, replicated to IPFS and Arweave and read back); a journalist's request is approved by a DAO vote,
three guardians answer, and the journalist reconstructs the key and decrypts locally; an activist's emergency
request is granted within its 2-hour window the same way (timed); finally the guardians rotate to a new set of
five without the key ever leaving the activity that re-splits it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client

from activities.chain import load_deployment
from westworld.amounts import format_tokens
from westworld.keys import access_proposal_id, vote_id
from westworld.rotation import GuardianRotationInput, RotationPhase, RotationResult
from westworld.shelter_access import AccessDecision, AccessRequest, VoteTerms, open_document
from workers.cli import shelter_ops as ops
from workers.cli.shelter_fetch import fetch_ciphertext
from workers.cli.shelter_keys import PartyKeys, load_keys, make_keys, save_keys
from workers.cli.vote import submit_vote
from workers.client import connect
from workers.demo.voters import demo_voters
from workers.settings import Settings
from workers.stack.contracts import distribute_voting_power

Echo = Callable[[str], None]
SHARES = (0.30, 0.25, 0.10, 0.05, 0.05)  # the vote demo's voters (idempotent top-up)
TEXT = b"Minutes of the mesh assembly, 2026-11-21: relay sites, names and contacts of the node keepers.\n"


def party(keys_dir: Path, name: str) -> PartyKeys:
    path = keys_dir / f"{name}.key"
    if path.exists():
        return load_keys(path)
    keys = make_keys(name)
    save_keys(keys, path)
    return keys


async def approve(client: Client, s: Settings, proposal_id: str, echo: Echo) -> None:
    voters = demo_voters(s.data_dir / "demo-keys")
    for name in ("voter-1", "voter-2"):
        await ops.wait_vote_open(client, vote_id(proposal_id))
        receipt = await submit_vote(client, s, proposal_id, "for", voters[name].key.hex())
        echo(f"   {name} votes for ({format_tokens(receipt.weight, 'WEST')})")


async def answer_and_open(client: Client, s: Settings, wf_id: str, guardians: list[PartyKeys],
                          requester: PartyKeys, echo: Echo) -> bytes:
    for g in guardians:
        _, n = await ops.submit_share(client, wf_id, g)
        echo(f"   {g.id} opened their share locally, sealed it to {requester.id}, signed and submitted ({n}/3)")
    _, result = await ops.access_result_when_done(client, wf_id)
    assert result.decision is AccessDecision.GRANTED and result.document is not None, result.reason
    master = ops.reconstruct(requester, wf_id, result)
    blob, where = await fetch_ciphertext(s, result.document)
    plaintext = open_document(master, result.document, blob)
    echo(f"   {requester.id} reconstructed the key locally, fetched the ciphertext from {where}, "
         f"decrypted {len(plaintext)} bytes (audit #{result.audit_seq})")
    return plaintext


async def run_shelter_demo(s: Settings, echo: Echo) -> None:
    client = await connect(s)
    keys_dir = s.data_dir / "shelter" / "demo-keys"
    guardians = [party(keys_dir, f"guardian-{i:02}") for i in range(1, 11)]
    journalist, activist = party(keys_dir, "journalist"), party(keys_dir, "activist")
    echo(f"1. keys for 10 guardians, a journalist and an activist in {keys_dir} (0600)")
    deployment = load_deployment(s.contracts_file)
    await distribute_voting_power(s.chain_rpc_url, deployment, {
        acct.key.hex(): share for acct, share in zip(demo_voters(s.data_dir / "demo-keys").values(), SHARES,
                                                     strict=True)}, s.chain_deployer_key, as_share_of_supply=True)
    # The first run is the genesis ceremony. On a later run an epoch exists and a ceremony needs k signatures of
    # its guardians: the guardians this demo made before (their key files are here) sign; only current ones count.
    approvers = [load_keys(p) for p in sorted(keys_dir.glob("*guardian-*.key"))]
    epoch = await ops.init_guardians(client, s, [g.public() for g in guardians], 3, approvers)
    echo(f"2. key ceremony: epoch {epoch.epoch}, 3-of-10, master public key {epoch.master_public_key[:16]}…"
         + (" (an epoch existed: approved by k of its guardians)" if epoch.epoch > 1 else " (genesis)"))
    doc_id = f"assembly-minutes-{int(time.time())}"
    state = await ops.store_document(client, s, doc_id, "Mesh assembly minutes", TEXT)
    echo(f"3. stored {doc_id}: " + ", ".join(f"{r.network.value} {r.state.value}" for r in state.replicas))

    req = AccessRequest(request_id=ops.request_id_for(doc_id), document_id=doc_id, requester=journalist.id,
                        requester_public_key=journalist.public().encryption_public_key, reason="investigation")
    wf_id = await ops.start_access(client, s, req, emergency=False, vote=VoteTerms(quorum=0.04))
    echo(f"4. {journalist.id} requests {doc_id} ({wf_id}); the DAO votes:")
    await approve(client, s, access_proposal_id(req.request_id), echo)
    await ops.wait_collecting(client, wf_id)
    assert await answer_and_open(client, s, wf_id, guardians[:3], journalist, echo) == TEXT

    t0 = time.perf_counter()
    req = AccessRequest(request_id=ops.request_id_for(doc_id), document_id=doc_id, requester=activist.id,
                        requester_public_key=activist.public().encryption_public_key, reason="raid expected tonight")
    wf_id = await ops.start_access(client, s, req, emergency=True, vote=VoteTerms(quorum=0.04))
    echo(f"5. EMERGENCY: {activist.id} requests {doc_id} ({wf_id}, 2 h window); the DAO votes, guardians answer:")
    await ops.wait_collecting(client, wf_id)
    await approve(client, s, f"emergency-{req.request_id}", echo)
    assert await answer_and_open(client, s, wf_id, guardians[3:6], activist, echo) == TEXT
    echo(f"   emergency request to plaintext: {time.perf_counter() - t0:.1f} s (target: under 30 minutes)")

    new = [party(keys_dir, f"new-guardian-{i}") for i in range(1, 6)]
    rot_id = await ops.start_rotation(client, s, GuardianRotationInput(new_guardians=[n.public() for n in new]),
                                      epoch.epoch)
    echo(f"6. rotation {rot_id} to 5 new guardians (3-of-5, k stays the current epoch's); the DAO approves the "
         "new set first:")
    proposal_id = await ops.rotation_vote(client, rot_id)
    assert proposal_id is not None, "a new guardian set is always voted on"
    await approve(client, s, proposal_id, echo)
    await ops.wait_rotation(client, rot_id, RotationPhase.COLLECTING)
    for g in guardians[6:9]:
        await ops.submit_share(client, rot_id, g)
    echo("   3 current guardians handed in their shares sealed to the one-time rotation key")
    await ops.wait_rotation(client, rot_id, RotationPhase.ACKNOWLEDGING)
    for n in new:
        await ops.submit_ack(client, rot_id, n)
    echo("   5 new guardians opened their new share and acknowledged it")
    result: RotationResult = await client.get_workflow_handle(rot_id, result_type=RotationResult).result()
    echo(f"   {result.phase.value}: {result.reason} (audit #{result.audit_seq}); documents untouched")
