"""A small client for the kubo ``/api/v0`` HTTP RPC (served here by js-ipfs), over httpx.

Not ``ipfshttpclient``: its last release (0.7.0) refuses every daemon of version >= 0.8.0 in ``connect()``
(``VersionMismatch``), i.e. every kubo and js-ipfs of the last years. The RPC is a handful of POSTs.

Every call is a POST (the RPC refuses GET). ``cat`` of content the node no longer has is answered from the local
blockstore only (``offline=true``): a node that has lost a block must say so, not search the network for it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

from westworld.errors import IpfsError, IpfsUnavailable

MISSING_MARKERS = ("not found", "timed out", "no link named", "blockservice: key not found", "could not find",
                   "context deadline exceeded", "timeout", "aborted")


async def sha256_of(resp: httpx.Response) -> str:
    """Hex SHA-256 of a streamed response body, hashed piece by piece as it arrives."""
    digest = hashlib.sha256()
    async for piece in resp.aiter_bytes():
        digest.update(piece)
    return digest.hexdigest()


class IpfsClient:
    """``api_url`` is the daemon's RPC address, e.g. ``http://127.0.0.1:5001``."""

    def __init__(self, api_url: str, http: httpx.AsyncClient | None = None, timeout: float = 60.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._http = http or httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, command: str, params: dict[str, Any] | None = None,
                    files: dict[str, Any] | None = None) -> httpx.Response:
        try:
            resp = await self._http.post(f"{self.api_url}/api/v0/{command}", params=params, files=files)
        except httpx.TransportError as err:
            raise IpfsUnavailable(f"IPFS daemon at {self.api_url} did not answer {command}: {err!r}") from err
        if resp.status_code >= 500 and not resp.content:
            raise IpfsUnavailable(f"IPFS daemon at {self.api_url} failed {command}: HTTP {resp.status_code}")
        return resp

    @staticmethod
    def _message(resp: httpx.Response) -> str:
        try:
            return str(resp.json().get("Message", resp.text))
        except (ValueError, AttributeError):
            return resp.text

    async def version(self) -> str:
        resp = await self._post("version")
        resp.raise_for_status()
        return str(resp.json()["Version"])

    async def add(self, data: bytes, *, pin: bool = True) -> str:
        """Add ``data`` as one file and return its CID (CIDv0 ``Qm…``, equal on kubo and js-ipfs)."""
        resp = await self._post("add", params={"pin": str(pin).lower(), "cid-version": "0", "quieter": "true"},
                                files={"file": ("blob", data, "application/octet-stream")})
        if resp.status_code != 200:
            raise IpfsError(f"IPFS add of {len(data)} bytes failed: {self._message(resp)}")
        lines = [line for line in resp.text.splitlines() if line.strip()]
        try:
            return str(json.loads(lines[-1])["Hash"])
        except (IndexError, ValueError, KeyError, TypeError) as err:  # a cut answer from a busy daemon: retry
            raise IpfsUnavailable(f"IPFS daemon at {self.api_url} answered add of {len(data)} bytes without a CID: "
                                  f"{resp.text[:200]!r}") from err

    async def cat(self, cid: str, timeout_s: float = 10.0) -> bytes | None:
        """The bytes of ``cid`` from this node's blockstore, or None if the node does not have them."""
        resp = await self._post("cat", params={"arg": cid, "offline": "true", "timeout": f"{timeout_s:g}s"})
        if resp.status_code == 200:
            return resp.content
        message = self._message(resp)
        if any(marker in message.lower() for marker in MISSING_MARKERS):
            return None
        raise IpfsError(f"IPFS cat {cid} failed: HTTP {resp.status_code}: {message}")

    async def cat_sha256(self, cid: str, timeout_s: float = 10.0) -> str | None:
        """Hex SHA-256 of the bytes of ``cid`` as this node serves them (hashed as they arrive, never held whole),
        or None if the node does not have them."""
        params = {"arg": cid, "offline": "true", "timeout": f"{timeout_s:g}s"}
        try:
            async with self._http.stream("POST", f"{self.api_url}/api/v0/cat", params=params) as resp:
                if resp.status_code == 200:
                    return await sha256_of(resp)
                await resp.aread()
        except httpx.TransportError as err:
            raise IpfsUnavailable(f"IPFS daemon at {self.api_url} did not answer cat: {err!r}") from err
        if resp.status_code >= 500 and not resp.content:
            raise IpfsUnavailable(f"IPFS daemon at {self.api_url} failed cat: HTTP {resp.status_code}")
        message = self._message(resp)
        if any(marker in message.lower() for marker in MISSING_MARKERS):
            return None
        raise IpfsError(f"IPFS cat {cid} failed: HTTP {resp.status_code}: {message}")

    async def pin_rm(self, cid: str) -> None:
        resp = await self._post("pin/rm", params={"arg": cid})
        if resp.status_code != 200 and "not pinned" not in self._message(resp).lower():
            raise IpfsError(f"IPFS pin rm {cid} failed: {self._message(resp)}")

    async def pinned(self, cid: str) -> bool:
        resp = await self._post("pin/ls", params={"arg": cid, "type": "recursive"})
        return resp.status_code == 200 and cid in resp.text

    async def repo_gc(self) -> None:
        resp = await self._post("repo/gc")
        if resp.status_code != 200:
            raise IpfsError(f"IPFS repo gc failed: {self._message(resp)}")
