"""The codec server, served for real on a loopback port and called over HTTP as the Temporal UI does."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from westworld.errors import CodecServerError
from workers.codec import KeyRing, create_keyring, rotate_keyring
from workers.codec_server import make_app

UI_ORIGIN = "http://127.0.0.1:8233"
TOKEN = "s3cret-codec-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PLAIN = {"metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
         "data": base64.b64encode(b'{"vote": "yes"}').decode()}

Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start apps on free loopback ports; stop them after the test."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()  # port 0: the OS picks a free one, no race
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate()


def b64(value: str) -> bytes:
    return base64.b64decode(value)


async def test_encode_then_decode_round_trip(serve: Serve, ring: KeyRing) -> None:
    base = await serve(make_app(ring, TOKEN, UI_ORIGIN))
    async with httpx.AsyncClient(base_url=base, headers=AUTH) as http:
        encoded = await http.post("/encode", json={"payloads": [PLAIN]})
        assert encoded.status_code == 200
        [sealed] = encoded.json()["payloads"]
        assert b64(sealed["metadata"]["encoding"]) == b"binary/encrypted"
        assert b64(sealed["metadata"]["encryption-key-id"]).decode() == ring.active
        assert b"yes" not in b64(sealed["data"])

        decoded = await http.post("/decode", json={"payloads": [sealed]})
        assert decoded.status_code == 200
        assert decoded.json() == {"payloads": [PLAIN]}


async def test_decode_passes_plaintext_through(serve: Serve, ring: KeyRing) -> None:
    base = await serve(make_app(ring, TOKEN, UI_ORIGIN))
    async with httpx.AsyncClient(base_url=base, headers=AUTH) as http:
        decoded = await http.post("/decode", json={"payloads": [PLAIN]})
    assert decoded.json() == {"payloads": [PLAIN]}


async def test_decode_after_rotation_rereads_the_key_file(serve: Serve, tmp_path: Path) -> None:
    key_file = tmp_path / "keys.json"
    base = await serve(make_app(create_keyring(key_file), TOKEN, UI_ORIGIN, key_file=key_file))
    rotate_keyring(key_file)
    newer = await serve(make_app(KeyRing.from_json(key_file.read_text()), TOKEN, UI_ORIGIN))
    async with httpx.AsyncClient(headers=AUTH) as http:
        [sealed] = (await http.post(f"{newer}/encode", json={"payloads": [PLAIN]})).json()["payloads"]
        decoded = await http.post(f"{base}/decode", json={"payloads": [sealed]})
    assert decoded.json() == {"payloads": [PLAIN]}


async def test_unknown_key_is_a_clear_error(serve: Serve, ring: KeyRing) -> None:
    base = await serve(make_app(ring, TOKEN, UI_ORIGIN))
    other = await serve(make_app(KeyRing.generate(), TOKEN, UI_ORIGIN))
    async with httpx.AsyncClient(headers=AUTH) as http:
        [sealed] = (await http.post(f"{other}/encode", json={"payloads": [PLAIN]})).json()["payloads"]
        answer = await http.post(f"{base}/decode", json={"payloads": [sealed]})
    assert answer.status_code == 422
    assert b64(sealed["metadata"]["encryption-key-id"]).decode() in answer.json()["message"]


async def test_malformed_body_is_400(serve: Serve, ring: KeyRing) -> None:
    base = await serve(make_app(ring, TOKEN, UI_ORIGIN))
    async with httpx.AsyncClient(base_url=base, headers=AUTH) as http:
        answer = await http.post("/decode", content=b"{not json")
    assert answer.status_code == 400
    assert "protobuf JSON" in answer.text


async def test_cors_preflight_allows_the_ui_origin(serve: Serve, ring: KeyRing) -> None:
    base = await serve(make_app(ring, TOKEN, UI_ORIGIN))
    preflight = {
        "Origin": UI_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    async with httpx.AsyncClient(base_url=base, headers=AUTH) as http:
        allowed = await http.options("/decode", headers=preflight)
        refused = await http.options("/decode", headers={**preflight, "Origin": "http://evil.example"})
        post = await http.post("/decode", json={"payloads": []},
                               headers={"Origin": UI_ORIGIN, "Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert set(allowed.headers["access-control-allow-headers"].split(",")) >= {
        "content-type", "x-namespace", "authorization"}
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    assert post.status_code == 200
    assert post.headers["access-control-allow-origin"] == UI_ORIGIN


async def test_several_origins_may_be_allowed(serve: Serve, ring: KeyRing) -> None:
    base = await serve(make_app(ring, TOKEN, f"{UI_ORIGIN}, http://localhost:8233/"))
    async with httpx.AsyncClient(base_url=base, headers=AUTH) as http:
        for origin in (UI_ORIGIN, "http://localhost:8233"):
            answer = await http.options("/encode", headers={"Origin": origin})
            assert answer.headers["access-control-allow-origin"] == origin


async def test_token_is_required(serve: Serve, ring: KeyRing) -> None:
    base = await serve(make_app(ring, TOKEN, UI_ORIGIN))
    body = {"payloads": [PLAIN]}
    async with httpx.AsyncClient(base_url=base) as http:
        missing = await http.post("/encode", json=body)
        wrong = await http.post("/decode", json=body, headers={"Authorization": "Bearer nope"})
        right = await http.post("/encode", json=body, headers=AUTH)
        health = await http.get("/healthz")
    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert "codec-token" in wrong.json()["message"]
    assert right.status_code == 200
    assert health.status_code == 200


async def test_token_as_first_path_segment_is_how_the_ui_calls(serve: Serve, ring: KeyRing) -> None:
    # The UI calls `${endpoint}/decode?preserveStorageRefs=true` with endpoint = http://127.0.0.1:<port>/<token>
    base = await serve(make_app(ring, TOKEN, UI_ORIGIN))
    body = {"payloads": [PLAIN]}
    async with httpx.AsyncClient(base_url=base, headers={"Origin": UI_ORIGIN}) as http:
        preflight = await http.options(f"/{TOKEN}/decode", headers={
            "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-namespace"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == UI_ORIGIN
        encoded = await http.post(f"/{TOKEN}/encode?preserveStorageRefs=true", json=body)
        decoded = await http.post(f"/{TOKEN}/decode?preserveStorageRefs=true", json=encoded.json())
        wrong = await http.post("/not-the-token/decode", json=body)
        # a right bearer does not rescue a wrong capability path
        mixed = await http.post("/not-the-token/decode", json=body, headers=AUTH)
    assert encoded.status_code == 200
    assert decoded.json() == body
    assert decoded.headers["access-control-allow-origin"] == UI_ORIGIN
    assert (wrong.status_code, mixed.status_code) == (401, 401)


def test_no_token_is_refused_unless_open_for_tests(ring: KeyRing) -> None:
    with pytest.raises(CodecServerError, match="needs a token"):
        make_app(ring, None, UI_ORIGIN)
    with pytest.raises(CodecServerError, match="empty"):
        make_app(ring, "  ", UI_ORIGIN)
    make_app(ring, None, UI_ORIGIN, open_for_tests=True)


async def test_healthz(serve: Serve, ring: KeyRing) -> None:
    base = await serve(make_app(ring, TOKEN, UI_ORIGIN))
    async with httpx.AsyncClient(base_url=base, headers=AUTH) as http:
        answer = await http.get("/healthz")
    assert answer.status_code == 200
    assert json.loads(answer.text) == {"status": "ok"}
