"""`westworld vote propose | cast | status`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import typer
from eth_account import Account
from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.chain import ChainClient
from activities.http import TransportError, open_http
from westworld import ballot
from westworld.errors import (
    VOTE_BAD_CHOICE,
    VOTE_CLOSED,
    VOTE_UNKNOWN_PROPOSAL,
    IntakeDown,
    InvalidInput,
    NotConfigured,
)
from westworld.keys import vote_id
from westworld.vote import (
    DaoVoteInput,
    DaoVoteResult,
    DaoVoteStatus,
    VoteBackend,
    VoteReceipt,
    VoteRequest,
    VoteState,
)
from workers.cli.common import fail, fail_for
from workers.cli.inputs import load_model
from workers.cli.output import TokenUnits, emit_json, token_units
from workers.cli.task_failure import QUERY_TIMEOUT, failing_now, failing_task_cause, unanswered
from workers.client import connect
from workers.settings import Settings
from workflows.dao_vote import DaoVoteWorkflow

Echo = Callable[[str], None]
CONTEXT_POLLS = 25  # 5 s


async def _client(s: Settings) -> Client:
    try:
        return await connect(s)
    except NotConfigured as err:
        raise fail_for(err) from err


async def start_vote(client: Client, s: Settings, inp: DaoVoteInput) -> str:
    handle = await client.start_workflow(
        DaoVoteWorkflow.run, inp, id=vote_id(inp.proposal.id), task_queue=s.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )
    return handle.id


async def propose(s: Settings, file: Path, echo: Echo) -> None:
    try:
        inp = load_model(file, DaoVoteInput)
    except InvalidInput as err:
        raise fail(str(err)) from err
    if inp.carry is not None:
        raise fail(f"{file}: carry: internal state of a running vote, never part of a proposal (InjectedState)")
    client = await _client(s)
    try:
        wf_id = await start_vote(client, s, inp)
    except WorkflowAlreadyStartedError as err:
        wf_id = vote_id(inp.proposal.id)
        raise fail(f"a vote on proposal {inp.proposal.id!r} already exists ({wf_id})") from err
    if refusal := await _refused_at_open(client, s, wf_id):
        raise fail(f"{wf_id} did not open: {refusal}")
    echo(f"started {wf_id}: {inp.kind.value} vote, window {inp.window}, backend {inp.backend.value}")


async def _refused_at_open(client: Client, s: Settings, wf_id: str, polls: int = 75) -> str | None:
    """Why the vote failed while opening (its terms looser than the policy, the proposal opened before...), or
    None once it is open (or still opening after ``polls`` x 0.2 s)."""
    handle = client.get_workflow_handle(wf_id, result_type=DaoVoteResult)
    for attempt in range(polls):
        desc = await handle.describe()
        if (failing := await failing_now(s, handle, desc)) is not None:
            raise failing
        if desc.status == WorkflowExecutionStatus.FAILED:
            try:
                await handle.result()
            except WorkflowFailureError as err:
                return explain_refusal(err.cause).removeprefix("vote refused ")
        else:
            try:  # short: a first workflow task that fails leaves the query waiting, the next poll sees why
                state = (await handle.query(DaoVoteWorkflow.status, rpc_timeout=timedelta(seconds=2))).state
            except RPCError as err:  # its workflow task fails (or no worker): say why, not a traceback
                if await failing_task_cause(handle) is not None or attempt >= 2:  # or no worker answers
                    raise await unanswered(s, handle, err) from err
                continue
            if state is not VoteState.OPENING:
                return None
        await asyncio.sleep(0.2)
    return None


def read_key(path: Path) -> str:
    try:
        key = path.read_text().strip()
        Account.from_key(key)
    except OSError as err:
        raise fail(f"{path}: cannot read key: {err.strerror}") from err
    except (ValueError, TypeError) as err:
        raise fail(f"{path}: not a hex private key ({err})") from err
    return key


async def submit_vote(client: Client, s: Settings, proposal_id: str, choice: str, key: str,
                      reason: str = "") -> VoteReceipt:
    """Sign locally and post to the vote intake (the web process), or through the workflow's update when the
    intake is down or does not serve this vote; a refusal raises ``ApplicationError`` (intake) or
    ``WorkflowUpdateFailedError`` (update), typed alike."""
    handle = client.get_workflow_handle(vote_id(proposal_id), result_type=DaoVoteResult)
    ctx = await handle.query(DaoVoteWorkflow.ballot_context)
    for _ in range(CONTEXT_POLLS):  # a run that just continued as new reads its opening from the store first
        if ctx is not None:
            break
        await asyncio.sleep(0.2)
        ctx = await handle.query(DaoVoteWorkflow.ballot_context)
    if ctx is None:
        raise ApplicationError(f"voting on {proposal_id} has not opened yet", type=VOTE_CLOSED)
    voter = Account.from_key(key).address
    nonce = 0
    if ctx.backend is VoteBackend.GOVERNOR and ctx.governor:
        nonce = await ChainClient.read_ballot_nonce(s.chain_rpc_url, ctx.governor, voter)
    unsigned = VoteRequest(proposal_id=proposal_id, voter=voter, choice=choice, reason=reason,
                           signature="0x", nonce=nonce, timestamp=int(time.time()))
    if choice not in ctx.choices:
        raise ApplicationError(f"choice {choice!r} is not one of {ctx.choices}", type=VOTE_BAD_CHOICE)
    signed = unsigned.model_copy(update={"signature": ballot.sign(unsigned, ctx, key)})
    try:
        return await post_to_intake(s, signed)
    except IntakeDown as err:  # the same ballot through the workflow's update: the store's same rules apply
        typer.secho(f"note: {err}; sending the vote through the workflow's cast_vote update instead",
                    fg=typer.colors.YELLOW, err=True)
        return await cast_with_retry(handle, signed)


async def post_to_intake(s: Settings, vote: VoteRequest) -> VoteReceipt:
    """POST the signed vote to the web process's intake; the receipt, or ``ApplicationError`` with the refusal's
    type. Raises ``IntakeDown`` when it does not answer or does not serve this vote (an older opening)."""
    url = f"{s.resolved_web_url}/v1/votes"
    try:
        async with open_http(30.0) as http:
            r = await http.post(url, content=vote.model_dump_json(), headers={"content-type": "application/json"})
    except TransportError as err:
        raise IntakeDown(f"the vote intake at {url} does not answer ({type(err).__name__}); is `westworld up` "
                         f"running its web process?") from err
    if r.status_code == 200:
        return VoteReceipt.model_validate_json(r.content)
    try:
        body = r.json()
        kind, message = str(body["type"]), str(body["message"])
    except (ValueError, KeyError, TypeError) as err:
        raise IntakeDown(f"the vote intake at {url} answered {r.status_code} without a typed refusal") from err
    if r.status_code == 404 and kind == VOTE_UNKNOWN_PROPOSAL:  # open in Temporal but not on the intake
        raise IntakeDown(f"the vote intake does not serve {vote.proposal_id} ({message})")
    raise ApplicationError(message, type=kind, non_retryable=r.status_code != 503)


async def cast_with_retry(handle: WorkflowHandle[DaoVoteWorkflow, DaoVoteResult], vote: VoteRequest,
                          attempts: int = 5) -> VoteReceipt:
    """Submit a vote; an update the server aborted because the run continued as new is sent again (the next
    run takes it; a ballot the store already counted answers with its first receipt and counts nothing)."""
    for attempt in range(attempts):
        try:
            return await handle.execute_update(DaoVoteWorkflow.cast_vote, vote)
        except RPCError as err:
            if "aborted" not in err.message or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def explain_refusal(err: BaseException) -> str:
    cause = err.cause if isinstance(err, WorkflowUpdateFailedError) else err
    if isinstance(cause, ApplicationError):
        return f"vote refused ({cause.type}): {cause.message}"
    if isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND:
        if "completed" in err.message:
            return "vote refused (VotingClosed): the vote has closed and its result is final"
        return "unknown proposal: no vote workflow with that id"
    return f"vote refused: {err}"


async def cast(s: Settings, proposal_id: str, choice: str, key_file: Path, reason: str, echo: Echo) -> None:
    key = read_key(key_file)
    client = await _client(s)
    try:
        receipt = await submit_vote(client, s, proposal_id, choice, key, reason)
    except (WorkflowUpdateFailedError, ApplicationError, RPCError) as err:
        raise fail(explain_refusal(err)) from err
    echo(f"accepted: {receipt.voter} voted {receipt.choice!r} with weight {token_units(s)(receipt.weight)} "
         f"(vote hash {receipt.vote_hash})")


class VoteView(BaseModel):
    """What `vote status --json` prints: the live status while the vote runs, its result once decided."""

    proposal_id: str
    workflow_id: str
    running: bool
    status: DaoVoteStatus | None = None
    result: DaoVoteResult | None = None


def format_tally(tally: dict[str, int], units: TokenUnits) -> str:
    """``for 40,000, against 0, abstain 0 WEST``."""
    return ", ".join(f"{choice} {units.plain(weight)}" for choice, weight in tally.items()) + f" {units.symbol}"


async def vote_view(s: Settings, proposal_id: str) -> VoteView:
    client = await _client(s)
    handle = client.get_workflow_handle(vote_id(proposal_id), result_type=DaoVoteResult)
    try:
        desc = await handle.describe()
    except RPCError as err:
        raise fail(f"unknown proposal {proposal_id!r}: {err.message}") from err
    view = VoteView(proposal_id=proposal_id, workflow_id=handle.id, running=False)
    if desc.status == WorkflowExecutionStatus.COMPLETED:
        view.result = await handle.result()
        return view
    if desc.status != WorkflowExecutionStatus.RUNNING:
        raise fail(f"vote workflow {handle.id} ended as {desc.status.name if desc.status else '?'}")
    if (failing := await failing_now(s, handle, desc)) is not None:
        raise failing
    try:
        view.running, view.status = True, await handle.query(DaoVoteWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as err:  # its workflow task fails (or no worker): say why, not a traceback
        raise await unanswered(s, handle, err) from err
    return view


def render_vote(view: VoteView, units: TokenUnits) -> list[str]:
    """The lines `vote status` prints: amounts in whole tokens."""
    if (result := view.result) is not None:
        lines = [f"{view.proposal_id}: {result.decision.upper()}  turnout {result.turnout:.1%}  "
                 f"quorum {'met' if result.quorum_met else 'NOT met'}  approve {result.approve_share:.1%}",
                 f"  votes {result.votes}  tally {format_tally(result.tally, units)}  audit #{result.audit_seq}  "
                 f"root {result.votes_root[:16]}…"]
        return lines + ([f"  executed on chain in tx {result.executed_tx}"] if result.executed_tx else [])
    st = view.status
    assert st is not None
    return [f"{view.proposal_id}: {st.state.value} ({st.step}); deadline {st.deadline}; votes {st.votes}; "
            f"tally {format_tally(st.tally, units)}; quorum {units.plain(st.quorum_weight)} of "
            f"{units(st.total_supply)}" + (f"; outcome settled: {st.decided}" if st.decided else "")]


async def show_status(s: Settings, proposal_id: str, echo: Echo, as_json: bool = False) -> None:
    view = await vote_view(s, proposal_id)
    if as_json:
        emit_json(view)
        return
    for line in render_vote(view, token_units(s)):
        echo(line)
