"""The charter gate's consent endpoints (the worker's token, as for charter pushes).

- ``POST /consent`` (the consent workflow), body ``{"subject": "0x…", "metric": "…", "grant": true|false}``. A grant
  lets the subject's samples of that consent-only metric through from now on; a withdrawal stops them and purges the
  subject's series of that metric from what the gate serves (the answer says how many). The signature was checked by
  the workflow before it got here; the gate trusts the token.
- ``PUT /consents`` (the charter sync's enforce activity, when the gate says it has not loaded them since it
  started), body ``{"consents": [["0x…", "metric"], …]}``: every consent in force in the store. The gate opens no
  database; without this a restarted gate would drop consent-only series until each subject granted again.
"""

from __future__ import annotations

import hmac
import re
from typing import Any, Protocol

from aiohttp import web

ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
MAX_CONSENTS = 1_000_000


class ConsentHolder(Protocol):
    def consent(self, subject: str, metric: str, grant: bool) -> dict[str, Any]: ...

    def load_consents(self, in_force: list[tuple[str, str]]) -> dict[str, Any]: ...


def add_consent_routes(app: web.Application, holder: ConsentHolder, token: str) -> None:
    def authorised(request: web.Request) -> bool:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return hmac.compare_digest(given.encode(), token.encode())

    async def consent(request: web.Request) -> web.Response:
        if not authorised(request):
            return web.json_response({"error": "a consent change needs the gate's token"}, status=401)
        try:
            body: Any = await request.json()
            subject, metric, grant = str(body["subject"]), str(body["metric"]), body["grant"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected {subject, metric, grant}"}, status=400)
        if not ADDRESS.fullmatch(subject) or not isinstance(grant, bool):
            return web.json_response({"error": "subject must be an address and grant a boolean"}, status=400)
        return web.json_response(holder.consent(subject, metric, grant))

    async def load(request: web.Request) -> web.Response:
        if not authorised(request):
            return web.json_response({"error": "loading consents needs the gate's token"}, status=401)
        try:
            body: Any = await request.json()
            pairs = [(str(s), str(m)) for s, m in body["consents"]]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected {consents: [[subject, metric], ...]}"}, status=400)
        if len(pairs) > MAX_CONSENTS or not all(ADDRESS.fullmatch(s) for s, _ in pairs):
            return web.json_response({"error": "every subject must be an address"}, status=400)
        return web.json_response(holder.load_consents(pairs))

    app.router.add_post("/consent", consent)
    app.router.add_put("/consents", load)
