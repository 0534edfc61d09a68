"""A small client for Sia's renterd worker object API over httpx (``PUT``/``GET /api/worker/objects/<key>``).

renterd authenticates with HTTP basic auth: an empty user name and the API password. No renterd can run on these
machines (nothing installable ships it; Debian's ``sia`` 1.3 is the 2017 daemon with another API), so this
adapter is exercised only against a real renterd when ``sia_url`` is set; with ``sia_url`` empty the replicator
records Sia as not configured.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

from activities.storage.ipfs import sha256_of
from westworld.errors import SiaError, SiaUnavailable


class SiaClient:
    """``url`` is renterd's API root, e.g. ``http://127.0.0.1:9980``; objects go to ``bucket``."""

    def __init__(self, url: str, password: str, bucket: str = "default",
                 http: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/")
        self.bucket = bucket
        self._http = http or httpx.AsyncClient(timeout=300.0, auth=("", password))

    async def aclose(self) -> None:
        await self._http.aclose()

    def _object_url(self, key: str) -> str:
        return f"{self.url}/api/worker/objects/{quote(key.lstrip('/'))}"

    async def put(self, key: str, data: bytes) -> str:
        """Upload ``data`` as object ``key``; return the key (the replica's locator)."""
        try:
            resp = await self._http.put(self._object_url(key), params={"bucket": self.bucket}, content=data)
        except httpx.TransportError as err:
            raise SiaUnavailable(f"renterd at {self.url} did not answer PUT {key}: {err!r}") from err
        if resp.status_code >= 500:
            raise SiaUnavailable(f"renterd at {self.url} failed PUT {key}: HTTP {resp.status_code} {resp.text[:200]}")
        if resp.status_code not in (200, 201, 204):
            raise SiaError(f"renterd at {self.url} refused PUT {key}: HTTP {resp.status_code} {resp.text[:200]}")
        return key

    async def get(self, key: str) -> bytes | None:
        """The bytes of object ``key``, or None if renterd has no such object."""
        try:
            resp = await self._http.get(self._object_url(key), params={"bucket": self.bucket})
        except httpx.TransportError as err:
            raise SiaUnavailable(f"renterd at {self.url} did not answer GET {key}: {err!r}") from err
        if resp.status_code == 200:
            return resp.content
        if resp.status_code == 404:
            return None
        if resp.status_code >= 500:
            raise SiaUnavailable(f"renterd at {self.url} failed GET {key}: HTTP {resp.status_code}")
        raise SiaError(f"renterd at {self.url} refused GET {key}: HTTP {resp.status_code} {resp.text[:200]}")

    async def get_sha256(self, key: str) -> str | None:
        """Hex SHA-256 of object ``key`` as renterd serves it (hashed as it arrives), or None if there is none."""
        try:
            async with self._http.stream("GET", self._object_url(key), params={"bucket": self.bucket}) as resp:
                if resp.status_code == 200:
                    return await sha256_of(resp)
                await resp.aread()
        except httpx.TransportError as err:
            raise SiaUnavailable(f"renterd at {self.url} did not answer GET {key}: {err!r}") from err
        if resp.status_code == 404:
            return None
        if resp.status_code >= 500:
            raise SiaUnavailable(f"renterd at {self.url} failed GET {key}: HTTP {resp.status_code}")
        raise SiaError(f"renterd at {self.url} refused GET {key}: HTTP {resp.status_code} {resp.text[:200]}")

    async def delete(self, key: str) -> None:
        try:
            resp = await self._http.delete(self._object_url(key), params={"bucket": self.bucket})
        except httpx.TransportError as err:
            raise SiaUnavailable(f"renterd at {self.url} did not answer DELETE {key}: {err!r}") from err
        if resp.status_code not in (200, 204, 404):
            raise SiaError(f"renterd at {self.url} refused DELETE {key}: HTTP {resp.status_code}")
