"""Many voters with real voting power on a real anvil, and their signed ballots (made lazily, per chunk)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from westworld import ballot
from westworld.vote import VoteRequest
from workers.settings import ANVIL_DEV_KEY
from workers.stack import processes
from workers.stack.anvil import start_anvil
from workers.stack.contracts import deploy_contracts, distribute_voting_power

TOKEN = 10**18


def voter_key(i: int) -> str:
    return "0x" + keccak(text=f"westworld-bench-voter-{i}").hex()


@dataclass
class BenchVoters:
    rpc_url: str
    proc: subprocess.Popen[bytes]
    accounts: list[LocalAccount] = field(default_factory=list)

    def signed_votes(self, ctx: ballot.BallotContext, start: int, end: int) -> list[VoteRequest]:
        votes = []
        for acct in self.accounts[start:end]:
            v = VoteRequest(proposal_id=ctx.proposal_id, voter=acct.address, choice="for", signature="0x")
            votes.append(v.model_copy(update={"signature": ballot.sign(v, ctx, acct.key.hex())}))
        return votes

    def stop(self) -> None:
        processes.stop(self.proc)


async def make_voters(work: Path, n: int) -> BenchVoters:
    port = processes.free_port()
    proc = start_anvil(port, work / "anvil.log")
    url = f"http://127.0.0.1:{port}"
    try:
        dep = await deploy_contracts(url, ANVIL_DEV_KEY)
        t0 = time.perf_counter()
        accounts = [Account.from_key(voter_key(i)) for i in range(n)]
        for start in range(0, n, 5000):
            chunk = {a.key.hex(): TOKEN for a in accounts[start:start + 5000]}
            await distribute_voting_power(url, dep, chunk, ANVIL_DEV_KEY, fresh=True)
            print(f"   setup: {min(start + 5000, n)}/{n} voters with voting power "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        (work / "contracts.json").write_text(dep.model_dump_json())
    except BaseException:
        processes.stop(proc)
        raise
    return BenchVoters(rpc_url=url, proc=proc, accounts=accounts)
