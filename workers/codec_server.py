"""The codec server: lets the Temporal UI (and `temporal` CLI) show decrypted payloads to those allowed to.

It speaks Temporal's remote codec protocol: ``POST /decode`` and ``POST /encode`` take and return
``{"payloads": [...]}`` in protobuf JSON form. Who may call it:

- **Token, always.** Every codec call needs the token of ``<data_dir>/codec-token`` (mode 0600, created by
  ``westworld up``): either as ``Authorization: Bearer <token>`` (``temporal --codec-auth``, scripts) or as the
  first path segment, ``POST /<token>/decode`` — a capability URL, because the Temporal UI can only be given an
  endpoint it appends ``/decode`` and ``/encode`` to. ``/encode`` is token-only too (the UI's start, signal and
  update forms encode through it once the UI knows the endpoint). The server refuses to start without a token
  unless told to run open, which only tests do.
- **Host.** Only ``127.0.0.1:<port>`` / ``localhost:<port>`` (the server's own loopback address): a page
  whose DNS name was rebound to 127.0.0.1 carries its own name in ``Host`` and gets 421.
- **Origin.** A browser request must come from the Temporal UI's origin (``settings.codec_cors_origin``;
  ``127.0.0.1`` and ``localhost`` spellings of a loopback origin are the same UI); any other origin gets 403.

``GET /healthz`` needs no token (host and origin checks still apply).

Run it with ``westworld codec-server`` (what ``up`` starts) or ``python -m workers.codec_server``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from westworld.errors import CodecError, CodecServerError
from workers.codec import EncryptionCodec, KeyRing, load_keyring
from workers.settings import Settings, load_settings

log = logging.getLogger("westworld.codec_server")

ALLOWED_HEADERS = "content-type,x-namespace,authorization"
TOKEN_FILE_NAME = "codec-token"  # noqa: S105 (a file name, not a secret)
BIND_HOST = "127.0.0.1"
LOOPBACK_NAMES = ("127.0.0.1", "localhost")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODEC = web.AppKey("codec", EncryptionCodec)
_TOKEN = web.AppKey("token", str)
_ORIGINS = web.AppKey("origins", frozenset[str])
_CAPABILITY = "capability"
_OPS = ("decode", "encode")


def _refuse(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=headers)


def _host_allowed(request: web.Request) -> bool:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        return False
    port = sockname[1]
    return request.headers.get(hdrs.HOST, "").lower() in {f"{name}:{port}" for name in LOOPBACK_NAMES}


def _cors_headers(origin: str) -> dict[str, str]:
    return {
        hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
        hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS: "true",
        hdrs.VARY: "Origin",
    }


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host, then origin, then CORS preflight, then the token on codec routes; CORS headers on every answer."""
    if not _host_allowed(request):
        host = request.headers.get(hdrs.HOST, "")[:100]
        return _refuse(421, f"Host {host!r} is not this codec server; it answers only 127.0.0.1 or localhost "
                            "on its own port (a different name is a DNS-rebinding attempt)")
    origin = request.headers.get(hdrs.ORIGIN)
    origins: frozenset[str] = request.app[_ORIGINS]
    if origin is not None and origin not in origins:
        allowed = ", ".join(sorted(origins)) or "none"
        return _refuse(403, f"Origin {origin[:100]!r} may not call the codec server (allowed: {allowed}; "
                            "setting codec_cors_origin)")
    cors = _cors_headers(origin) if origin is not None else {}
    if request.method == hdrs.METH_OPTIONS:
        if origin is None:
            return _refuse(403, "a CORS preflight needs an Origin")
        preflight = {
            **cors,
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: "POST, OPTIONS",
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOWED_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: "600",
        }
        return web.Response(status=204, headers=preflight)
    route = request.match_info.route.name or ""
    if route.removesuffix("-cap") in _OPS and not _authorized(request):
        return _refuse(401, "missing or wrong codec token: send `Authorization: Bearer <token>` or call "
                            "/<token>/decode; the token is in <data dir>/codec-token",
                       {**cors, hdrs.WWW_AUTHENTICATE: "Bearer"})
    try:
        response = await handler(request)
    except web.HTTPException as err:
        err.headers.update(cors)
        raise
    response.headers.update(cors)
    return response


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def _authorized(request: web.Request) -> bool:
    token = request.app.get(_TOKEN)
    if token is None:
        return True  # run open: tests only (see make_app)
    capability = request.match_info.get(_CAPABILITY)
    if capability is not None:
        return _same(capability, token)
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    return scheme.lower() == "bearer" and _same(given.strip(), token)


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
        return _refuse(422, str(err))
    return _reply(Payloads(payloads=decoded))


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _origins(cors_origin: str) -> frozenset[str]:
    """The configured origins, each loopback one also under its other loopback spelling (same UI)."""
    origins: set[str] = set()
    for raw in cors_origin.split(","):
        origin = raw.strip().rstrip("/")
        if not origin:
            continue
        origins.add(origin)
        parts = urlsplit(origin)
        if parts.hostname in LOOPBACK_NAMES:
            for name in LOOPBACK_NAMES:
                origins.add(f"{parts.scheme}://{name}" + (f":{parts.port}" if parts.port else ""))
    return frozenset(origins)


def make_app(
    keyring: KeyRing, token: str | None, cors_origin: str, *, key_file: Path | None = None,
    open_for_tests: bool = False,
) -> web.Application:
    """Build the codec server application.

    Args:
        keyring: Keys to encode/decode with.
        token: The token every ``/decode`` and ``/encode`` call must carry (bearer or first path segment).
        cors_origin: The browser origin of the Temporal UI allowed to call the server; several may be
            given separated by commas.
        key_file: If given, re-read when a payload names an unknown key id (after a rotation).
        open_for_tests: With ``token=None``, serve without a token. Tests only: anyone who reaches the port
            could then decode any payload of history.

    Raises:
        CodecServerError: No token (or an empty one) and not ``open_for_tests``.
    """
    if token is None and not open_for_tests:
        raise CodecServerError("the codec server needs a token (`westworld up` writes <data dir>/codec-token); "
                               "running open is for tests only")
    if token is not None and not token.strip():
        raise CodecServerError("the codec token is empty")
    app = web.Application(middlewares=[_guard])
    app[_CODEC] = EncryptionCodec(keyring, key_file)
    app[_ORIGINS] = _origins(cors_origin)
    if token is not None:
        app[_TOKEN] = token.strip()
    for op, handler in (("decode", _decode), ("encode", _encode)):
        for path in (f"/{op}", f"/{{{_CAPABILITY}}}/{op}"):
            app.router.add_post(path, handler, name=op if path == f"/{op}" else f"{op}-cap")
            app.router.add_route(hdrs.METH_OPTIONS, path, _healthz)  # answered by the middleware
    app.router.add_get("/healthz", _healthz)
    return app


def token_path(settings: Settings) -> Path:
    return settings.data_dir / TOKEN_FILE_NAME


def ensure_token(settings: Settings) -> tuple[str, bool]:
    """The codec token, created (mode 0600, never overwritten) if there is none yet.

    Returns:
        The token and whether it was created now.
    """
    path = token_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = read_token(settings)
        assert existing is not None  # it exists
        return existing, False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token, True


def read_token(settings: Settings) -> str | None:
    """The token from ``<data_dir>/codec-token``, or ``None`` if there is no such file.

    Raises:
        CodecServerError: The file is empty, or readable by group or others (it decrypts every payload).
    """
    path = token_path(settings)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if mode & 0o077:
        raise CodecServerError(f"{path} has mode {mode:o}: anyone in its group or on the machine could decode "
                               f"every payload; run `chmod 600 {path}`")
    if not token:
        raise CodecServerError(f"{path} is empty; delete it and run `westworld up` to create a token")
    return token


def ui_endpoint(settings: Settings, token: str) -> str:
    """The capability URL to paste into the Temporal UI's Codec Server browser setting."""
    return f"http://{BIND_HOST}:{settings.codec_server_port}/{token}"


async def serve(settings: Settings, *, open_for_tests: bool = False) -> None:
    """Serve on ``127.0.0.1:settings.codec_server_port`` until cancelled.

    Raises:
        CodecServerError: There is no token file and ``open_for_tests`` is not set.
    """
    key_file = settings.resolved_codec_key_file
    keyring = load_keyring(key_file)
    token = read_token(settings)
    if token is None and not open_for_tests:
        raise CodecServerError(f"no codec token at {token_path(settings)}: refusing to serve every payload to "
                               "anyone on this machine; `westworld up` creates the token")
    app = make_app(keyring, token, settings.codec_cors_origin, key_file=key_file, open_for_tests=open_for_tests)
    runner = web.AppRunner(app, access_log=None)  # no access log: capability URLs carry the token
    await runner.setup()
    try:
        await web.TCPSite(runner, BIND_HOST, settings.codec_server_port).start()
        log.info("codec server on http://%s:%d (UI origin %s, token %s)", BIND_HOST, settings.codec_server_port,
                 settings.codec_cors_origin, "required" if token else "NOT REQUIRED (open, tests only)")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.codec_server", description=__doc__.split("\n")[0])
    parser.add_argument("--open-for-tests", action="store_true",
                        help="serve without a token if there is no token file (tests only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(load_settings(), open_for_tests=args.open_for_tests))


if __name__ == "__main__":
    main()
