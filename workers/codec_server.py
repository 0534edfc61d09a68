"""Codec server for the Temporal UI: POST /encode and /decode of protobuf-JSON payloads, CORS for the UI.

If ``<data dir>/codec-token`` exists, requests must carry ``Authorization: Bearer <token>``: only those who
hold it see decoded payloads.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from workers.codec import CodecError, EncryptionCodec, KeyRing, load_keyring
from workers.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(ring: KeyRing, token: str | None, cors_origin: str) -> web.Application:
    codec = EncryptionCodec(ring)

    def cors(resp: web.StreamResponse) -> web.StreamResponse:
        resp.headers["Access-Control-Allow-Origin"] = cors_origin
        resp.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        resp.headers["Access-Control-Allow-Headers"] = "content-type,x-namespace,authorization"
        resp.headers["Access-Control-Allow-Credentials"] = "true"
        return resp

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return cors(web.Response())
        if token and request.path != "/healthz":
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return cors(web.json_response({"error": "missing or wrong bearer token"}, status=401))
        return cors(await handler(request))

    def route(encode: bool) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            try:
                payloads = json_format.Parse(await request.text(), Payloads())
                fn = codec.encode if encode else codec.decode
                result = Payloads(payloads=await fn(list(payloads.payloads)))
            except (json_format.ParseError, CodecError) as err:
                return web.json_response({"error": str(err)}, status=400)
            return web.Response(text=json_format.MessageToJson(result), content_type="application/json")

        return handle

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "active_key": ring.active})

    app = web.Application(middlewares=[guard])
    app.router.add_post("/encode", route(True))
    app.router.add_post("/decode", route(False))
    app.router.add_get("/healthz", healthz)
    return app


async def serve(settings: Settings) -> None:
    token_file = settings.data_dir / "codec-token"
    token = token_file.read_text().strip() if token_file.exists() else None
    app = make_app(load_keyring(settings.resolved_codec_key_file), token, settings.codec_cors_origin)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.codec_server_port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
