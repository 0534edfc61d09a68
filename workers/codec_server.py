"""The codec server: lets the Temporal UI (and `temporal` CLI) show decrypted payloads to those allowed to.

It speaks Temporal's remote codec protocol: ``POST /encode`` and ``POST /decode`` take and return
``{"payloads": [...]}`` in protobuf JSON form. Browsers reach it cross-origin, so the Temporal UI's origin
(``settings.codec_cors_origin``) is allowed by CORS. If the file ``<data_dir>/codec-token`` exists, every
codec request must carry ``Authorization: Bearer <token>``; otherwise anyone who can reach the (loopback)
port can decode, the same trust as holding the key file on this machine. ``GET /healthz`` needs no auth.

Run it with ``python -m workers.codec_server`` or ``westworld codec-server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import hdrs, web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from workers.codec import CodecError, EncryptionCodec, KeyRing, load_keyring
from workers.settings import Settings, load_settings

log = logging.getLogger("westworld.codec_server")

ALLOWED_HEADERS = "content-type,x-namespace,authorization"
TOKEN_FILE_NAME = "codec-token"  # noqa: S105 (a file name, not a secret)
BIND_HOST = "127.0.0.1"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODEC = web.AppKey("codec", EncryptionCodec)
_TOKEN = web.AppKey("token", str)
_ORIGINS = web.AppKey("origins", frozenset[str])
_CODEC_PATHS = ("/encode", "/decode")


def _cors_headers(request: web.Request) -> dict[str, str]:
    origin = request.headers.get(hdrs.ORIGIN, "")
    if origin not in request.app[_ORIGINS]:
        return {}
    return {
        hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
        hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS: "true",
        hdrs.VARY: "Origin",
    }


@web.middleware
async def _cors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer CORS preflights, enforce the bearer token on codec paths, add CORS headers to every answer."""
    cors = _cors_headers(request)
    if request.method == hdrs.METH_OPTIONS:
        if not cors:
            return web.Response(status=403, text="origin not allowed")
        preflight = {
            **cors,
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: "POST, OPTIONS",
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOWED_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: "600",
        }
        return web.Response(status=204, headers=preflight)
    token = request.app.get(_TOKEN)
    if token is not None and request.path in _CODEC_PATHS and not _authorized(request, token):
        return web.json_response(
            {"message": "missing or wrong bearer token"},
            status=401,
            headers={**cors, hdrs.WWW_AUTHENTICATE: "Bearer"},
        )
    try:
        response = await handler(request)
    except web.HTTPException as err:
        err.headers.update(cors)
        raise
    response.headers.update(cors)
    return response


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


async def _read_payloads(request: web.Request) -> Payloads:
    payloads = Payloads()
    try:
        json_format.Parse(await request.text(), payloads)
    except json_format.ParseError as err:
        raise web.HTTPBadRequest(text=f'body is not {{"payloads": [...]}} in protobuf JSON: {err}') from None
    return payloads


def _reply(payloads: Payloads) -> web.Response:
    return web.Response(text=json_format.MessageToJson(payloads), content_type="application/json")


async def _encode(request: web.Request) -> web.Response:
    payloads = await _read_payloads(request)
    return _reply(Payloads(payloads=await request.app[_CODEC].encode(payloads.payloads)))


async def _decode(request: web.Request) -> web.Response:
    payloads = await _read_payloads(request)
    try:
        decoded = await request.app[_CODEC].decode(payloads.payloads)
    except CodecError as err:
        return web.json_response({"message": str(err)}, status=422)
    return _reply(Payloads(payloads=decoded))


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(
    keyring: KeyRing, token: str | None, cors_origin: str, *, key_file: Path | None = None
) -> web.Application:
    """Build the codec server application.

    Args:
        keyring: Keys to encode/decode with.
        token: Bearer token required on ``/encode`` and ``/decode``; ``None`` means no auth.
        cors_origin: The browser origin of the Temporal UI allowed to call the server; several may be
            given separated by commas (e.g. ``http://127.0.0.1:8233,http://localhost:8233``).
        key_file: If given, re-read when a payload names an unknown key id (after a rotation).
    """
    app = web.Application(middlewares=[_cors_and_auth])
    app[_CODEC] = EncryptionCodec(keyring, key_file)
    app[_ORIGINS] = frozenset(o.strip().rstrip("/") for o in cors_origin.split(",") if o.strip())
    if token is not None:
        app[_TOKEN] = token
    app.router.add_post("/encode", _encode)
    app.router.add_post("/decode", _decode)
    for path in _CODEC_PATHS:
        app.router.add_route(hdrs.METH_OPTIONS, path, _healthz)  # answered by the middleware
    app.router.add_get("/healthz", _healthz)
    return app


def read_token(settings: Settings) -> str | None:
    """The bearer token from ``<data_dir>/codec-token``, or ``None`` if there is no such file.

    Raises:
        CodecError: The file exists but is empty.
    """
    path = settings.data_dir / TOKEN_FILE_NAME
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not token:
        raise CodecError(f"{path} is empty; delete it to disable auth or write a token into it")
    return token


async def serve(settings: Settings) -> None:
    """Serve on ``127.0.0.1:settings.codec_server_port`` until cancelled."""
    key_file = settings.resolved_codec_key_file
    keyring = load_keyring(key_file)
    app = make_app(keyring, read_token(settings), settings.codec_cors_origin, key_file=key_file)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, BIND_HOST, settings.codec_server_port).start()
        log.info(
            "codec server on http://%s:%d (CORS origin %s, auth %s)",
            BIND_HOST, settings.codec_server_port, settings.codec_cors_origin,
            "on" if _TOKEN in app else "off",
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(load_settings()))
