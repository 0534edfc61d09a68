"""The charter gate's consent endpoint: ``POST /consent`` (the worker's consent workflow, the gate's token).

Body ``{"subject": "0x…", "metric": "…", "grant": true|false}``. A grant lets the subject's samples of that
consent-only metric through from now on; a withdrawal stops them and purges the subject's series of that metric
from what the gate serves (the answer says how many). The signature was checked by the workflow before it got
here; the gate trusts the token, as for charter pushes.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from activities.charter_gate import CharterGate

ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def add_consent_routes(app: web.Application, gate_of: Callable[[], CharterGate | None], token: str) -> None:
    async def consent(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return web.json_response({"error": "a consent change needs the gate's token"}, status=401)
        try:
            body: Any = await request.json()
            subject, metric, grant = str(body["subject"]), str(body["metric"]), body["grant"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected {subject, metric, grant}"}, status=400)
        if not ADDRESS.fullmatch(subject) or not isinstance(grant, bool):
            return web.json_response({"error": "subject must be an address and grant a boolean"}, status=400)
        gate = gate_of()
        if gate is None:  # no charter yet: nothing is collected, nothing to purge; the consent store keeps it
            return web.json_response({"state": "no_charter", "purged": 0})
        if grant:
            gate.grant(subject, metric)
            return web.json_response({"state": "granted", "purged": 0})
        return web.json_response({"state": "withdrawn", "purged": gate.withdraw(subject, metric)})

    app.router.add_post("/consent", consent)
