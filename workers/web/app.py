"""The web process: one aiohttp application that serves the vote intake now and a web console later.

``POST /v1/votes`` takes a signed ``VoteRequest`` (JSON) and answers 200 with the ``VoteReceipt`` once the ballot
is committed, or ``{"type": <refusal constant>, "message": ...}`` with 400 (malformed, bad signature or choice),
403 (no voting power), 404 (unknown proposal), 409 (already voted, closed, after the deadline) or 503 (the store
or the chain did not answer: nothing was recorded, send it again). ``GET /healthz`` answers 200 when the store
answers, with the ballots committed so far and the transactions they took. ``westworld up`` starts it
(``westworld web`` runs it in the foreground) on ``web_port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import uvloop
from aiohttp import web
from pydantic import ValidationError
from temporalio.client import Client

from activities.sql.database import Database
from activities.votes import VoteActivities
from westworld.errors import (
    INVALID_INPUT,
    PROPOSAL_ALREADY_OPENED,
    VOTE_AFTER_DEADLINE,
    VOTE_ALREADY_CAST,
    VOTE_BAD_CHOICE,
    VOTE_BAD_SIGNATURE,
    VOTE_CLOSED,
    VOTE_NO_POWER,
    VOTE_UNAVAILABLE,
    VOTE_UNKNOWN_PROPOSAL,
    VoteRejected,
)
from westworld.vote import VoteRequest
from workers.client import connect
from workers.settings import Settings, load_settings
from workers.web.intake import Hints, VoteIntake, utcnow
from workers.web.verify import Verifier
from workers.wiring import governance as governance_wiring

log = logging.getLogger("westworld.web")

STATUS = {
    INVALID_INPUT: 400, VOTE_BAD_SIGNATURE: 400, VOTE_BAD_CHOICE: 400,
    VOTE_NO_POWER: 403,
    VOTE_UNKNOWN_PROPOSAL: 404,
    VOTE_ALREADY_CAST: 409, VOTE_CLOSED: 409, VOTE_AFTER_DEADLINE: 409, PROPOSAL_ALREADY_OPENED: 409,
    VOTE_UNAVAILABLE: 503,
}
INTAKE = web.AppKey("intake", VoteIntake)
DATABASE = web.AppKey("database", Database)
MAX_BODY = 16 * 1024  # a signed vote is well under 1 KiB


def refusal(type: str, message: str) -> web.Response:
    return web.json_response({"type": type, "message": message}, status=STATUS.get(type, 400))


async def post_vote(request: web.Request) -> web.Response:
    try:
        vote = VoteRequest.model_validate_json(await request.read())
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors())
        return refusal(INVALID_INPUT, f"not a signed vote: {problems}")
    try:
        receipt = await request.app[INTAKE].cast(vote)
    except VoteRejected as err:
        return refusal(err.type, err.message)
    return web.Response(body=receipt.model_dump_json(), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[DATABASE].ping()
    except Exception as err:
        return web.json_response({"ok": False, "store": str(err)}, status=503)
    intake = request.app[INTAKE]  # group commit at work: ballots committed, and in how many transactions
    return web.json_response({"ok": True, "ballots": intake.ballots, "transactions": intake.commits})


def create_app(settings: Settings, *, client: Client | None = None, clock: Callable[[], datetime] | None = None,
               processes: int | None = None) -> web.Application:
    """The application; its resources (database, chain, Temporal client, verifier pool) open on startup.

    ``client``: a Temporal client to send hints with (default: connect with ``settings``); ``clock``: the wall
    clock deadlines are checked against (tests shift it); ``processes``: signature-check processes (default:
    one per core)."""
    app = web.Application(client_max_size=MAX_BODY)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        database = Database(settings.resolved_database_url)
        await database.migrate()
        verifier = Verifier(processes)
        try:
            await verifier.start()
            temporal = client or await connect(settings)
            async with governance_wiring.open_clients(settings, database) as gov:
                votes = VoteActivities(gov.votes, gov.chain, snapshot=gov.snapshot)

                async def hint(workflow_id: str) -> None:
                    await temporal.get_workflow_handle(workflow_id).signal("votes_recorded")

                app[INTAKE] = intake = VoteIntake(gov.votes, votes, verifier, Hints(hint), clock=clock or utcnow)
                log.info("vote intake up; hinted %d open votes", await intake.hint_open_votes())
                app[DATABASE] = database
                yield
        finally:
            verifier.close()
            await database.close()

    app.cleanup_ctx.append(resources)
    app.router.add_post("/v1/votes", post_vote)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    """Serve on ``web_port`` (loopback) until interrupted, on uvloop (libuv: cheaper socket and thread wake-ups
    than asyncio's own loop, which the intake's database round trips and HTTP requests pay per vote)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        web.run_app(create_app(settings), host="127.0.0.1", port=settings.web_port, print=None,
                    access_log=None, handle_signals=True, loop=uvloop.new_event_loop())
