"""The HTTP client every HTTP-speaking part is built with (httpx): the activities' outside systems (IPFS, Arweave,
Prometheus, Snapshot, notify...) get one injected by the wiring, and the CLI reaches the project's own HTTP services
(the vote intake, the charter gate) with it. Outside activities/, nothing imports httpx: it comes from here.
"""

from __future__ import annotations

from typing import Any

import httpx

HttpClient = httpx.AsyncClient
HttpError = httpx.HTTPError  # any failure: transport or status
TransportError = httpx.TransportError  # the server did not answer (refused, reset, timed out)


def open_http(timeout: float) -> HttpClient:
    """A client with ``timeout`` seconds for each request; use it as ``async with open_http(10.0) as http``."""
    return httpx.AsyncClient(timeout=timeout)


def get_json(url: str, timeout: float) -> Any:
    """GET ``url`` and parse its JSON body (blocking: for status reads); raises ``HttpError`` or ``ValueError``."""
    return httpx.get(url, timeout=timeout).json()
