"""A small Arweave client over httpx: format-2 transactions signed with an RSA-PSS JWK wallet using ``cryptography``.

Why not ``arweave-python-client``: it hard-codes its gateway URL and uses blocking ``requests``; signing a
transaction is a deep hash (SHA-384) and an RSA-PSS signature, which ``cryptography`` does directly. The same code
talks to arlocal here and to an Arweave gateway in production; on arlocal (``/info`` network ``arlocal.*``) the
wallet is minted the fee and a block is mined after each post, which a real gateway does by itself.

Data is posted inline with the transaction (fine up to a few MiB; larger files would go through ``/chunk``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from activities.storage.ipfs import sha256_of
from westworld.errors import ArweaveError, ArweaveUnavailable

MAX_CHUNK = 256 * 1024
MIN_CHUNK = 32 * 1024
DeepHashable = bytes | Sequence["DeepHashable"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def deep_hash(item: DeepHashable) -> bytes:
    """Arweave's deep hash (SHA-384) of a blob or a nested list of blobs."""
    if isinstance(item, bytes):
        tag = hashlib.sha384(b"blob" + str(len(item)).encode()).digest()
        return hashlib.sha384(tag + hashlib.sha384(item).digest()).digest()
    acc = hashlib.sha384(b"list" + str(len(item)).encode()).digest()
    for child in item:
        acc = hashlib.sha384(acc + deep_hash(child)).digest()
    return acc


def _sha256(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _note(n: int) -> bytes:
    return n.to_bytes(32, "big")


def data_root(data: bytes) -> bytes:
    """The Merkle root of ``data``'s chunks, as arweave-js computes it (``chunkData`` + ``generateLeaves``)."""
    chunks: list[tuple[bytes, int]] = []  # (data hash, max byte range)
    rest, cursor = data, 0
    while len(rest) >= MAX_CHUNK:
        size = MAX_CHUNK
        following = len(rest) - MAX_CHUNK
        if 0 < following < MIN_CHUNK:
            size = -(-len(rest) // 2)
        cursor += size
        chunks.append((_sha256(rest[:size]), cursor))
        rest = rest[size:]
    chunks.append((_sha256(rest), cursor + len(rest)))
    nodes = [(_sha256(_sha256(h), _sha256(_note(end))), end) for h, end in chunks]
    while len(nodes) > 1:
        paired = []
        for i in range(0, len(nodes), 2):
            if i + 1 == len(nodes):
                paired.append(nodes[i])
                continue
            (left, left_end), (right, right_end) = nodes[i], nodes[i + 1]
            paired.append((_sha256(_sha256(left), _sha256(right), _sha256(_note(left_end))), right_end))
        nodes = paired
    return nodes[0][0]


class Wallet:
    """An RSA JWK wallet (the format arweave-js and the Arweave apps use)."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key
        n = key.public_key().public_numbers().n
        self.owner = n.to_bytes((n.bit_length() + 7) // 8, "big")
        self.address = b64url(hashlib.sha256(self.owner).digest())

    @classmethod
    def generate(cls) -> Wallet:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=4096))

    @classmethod
    def load_or_create(cls, path: Path) -> Wallet:
        """The wallet at ``path`` (JWK JSON), created with mode 0600 if missing."""
        if path.exists():
            return cls.from_jwk(json.loads(path.read_text()))
        wallet = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(wallet.to_jwk()))
        return wallet

    @classmethod
    def from_jwk(cls, jwk: dict[str, str]) -> Wallet:
        def num(name: str) -> int:
            return int.from_bytes(unb64url(jwk[name]), "big")

        public = rsa.RSAPublicNumbers(num("e"), num("n"))
        private = rsa.RSAPrivateNumbers(num("p"), num("q"), num("d"), num("dp"), num("dq"), num("qi"), public)
        return cls(private.private_key())

    def to_jwk(self) -> dict[str, str]:
        nums = self.key.private_numbers()

        def enc(x: int) -> str:
            return b64url(x.to_bytes((x.bit_length() + 7) // 8, "big"))

        return {"kty": "RSA", "e": enc(nums.public_numbers.e), "n": enc(nums.public_numbers.n), "d": enc(nums.d),
                "p": enc(nums.p), "q": enc(nums.q), "dp": enc(nums.dmp1), "dq": enc(nums.dmq1), "qi": enc(nums.iqmp)}

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                             hashes.SHA256())


def build_transaction(wallet: Wallet, data: bytes, tags: dict[str, str], anchor: str, reward: int) -> dict[str, Any]:
    """A signed format-2 data transaction (JSON as ``POST /tx`` takes it)."""
    tag_pairs = [(name.encode(), value.encode()) for name, value in tags.items()]
    root = data_root(data) if data else b""
    signature_data = deep_hash([
        b"2", wallet.owner, b"", b"0", str(reward).encode(), unb64url(anchor),
        [[name, value] for name, value in tag_pairs], str(len(data)).encode(), root,
    ])
    signature = wallet.sign(signature_data)
    return {
        "format": 2, "id": b64url(hashlib.sha256(signature).digest()), "last_tx": anchor,
        "owner": b64url(wallet.owner), "tags": [{"name": b64url(n), "value": b64url(v)} for n, v in tag_pairs],
        "target": "", "quantity": "0", "data": b64url(data), "data_size": str(len(data)),
        "data_root": b64url(root), "reward": str(reward), "signature": b64url(signature),
    }


def _json(resp: httpx.Response, url: str, path: str) -> dict[str, Any]:
    """A JSON object answer; anything else (an empty or cut body from a busy gateway) is a transient failure."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ArweaveUnavailable(f"Arweave gateway {url} answered {path} with no JSON object: {resp.text[:200]!r}")
    return body


@dataclass(frozen=True)
class Prepared:
    """A transaction anchor and fee for a post of ``size`` bytes (:meth:`ArweaveClient.prepare`)."""

    anchor: str
    reward: int
    size: int


@dataclass(frozen=True)
class _Body:
    id: str
    json: bytes


def _signed_body(wallet: Wallet, data: bytes, tags: dict[str, str], prepared: Prepared) -> _Body:
    tx = build_transaction(wallet, data, tags, prepared.anchor, prepared.reward)
    return _Body(id=str(tx["id"]), json=json.dumps(tx, separators=(",", ":")).encode())


class ArweaveClient:
    """``url`` is a gateway (``http://127.0.0.1:1984`` for arlocal, ``https://arweave.net`` in production)."""

    def __init__(self, url: str, wallet: Wallet | Path, http: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/")
        self._wallet = wallet
        self._http = http or httpx.AsyncClient(timeout=60.0)
        self._is_arlocal: bool | None = None

    @property
    def wallet(self) -> Wallet:
        """The signing wallet; a path is loaded (or the wallet created) on first use, not at worker start."""
        if isinstance(self._wallet, Path):
            self._wallet = Wallet.load_or_create(self._wallet)
        return self._wallet

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str) -> httpx.Response:
        try:
            return await self._http.get(f"{self.url}{path}")
        except httpx.TransportError as err:
            raise ArweaveUnavailable(f"Arweave gateway {self.url} did not answer GET {path}: {err!r}") from err

    async def is_arlocal(self) -> bool:
        if self._is_arlocal is None:
            resp = await self._get("/info")
            resp.raise_for_status()
            self._is_arlocal = str(_json(resp, self.url, "/info").get("network", "")).startswith("arlocal")
        return self._is_arlocal

    async def find_by_tag(self, name: str, value: str) -> str | None:
        """The id of a transaction of this wallet carrying tag ``name=value`` (for idempotent posting)."""
        query = ("query($n:String!,$v:[String!]!,$o:[String!]){transactions(owners:$o,tags:[{name:$n,values:$v}],"
                 "first:1){edges{node{id}}}}")
        try:
            resp = await self._http.post(f"{self.url}/graphql", json={
                "query": query, "variables": {"n": name, "v": [value], "o": [self.wallet.address]}})
        except httpx.TransportError as err:
            raise ArweaveUnavailable(f"Arweave gateway {self.url} did not answer /graphql: {err!r}") from err
        if resp.status_code != 200:
            return None
        edges = _json(resp, self.url, "/graphql").get("data", {}).get("transactions", {}).get("edges", [])
        return str(edges[0]["node"]["id"]) if edges else None

    async def prepare(self, size: int) -> Prepared:
        """What a post of ``size`` bytes needs from the gateway (anchor and fee asked at once; on arlocal the fee
        is minted to the wallet). Fetch it while other work runs, then pass it to :meth:`post`."""
        anchor, price, arlocal = await asyncio.gather(self._get("/tx_anchor"), self._get(f"/price/{size}"),
                                                      self.is_arlocal())
        reward = int(price.text.strip())
        if arlocal:
            await self._get(f"/mint/{self.wallet.address}/{reward * 10 + 1_000_000_000_000}")
        return Prepared(anchor=anchor.text.strip(), reward=reward, size=size)

    async def post(self, data: bytes, tags: dict[str, str], prepared: Prepared | None = None) -> str:
        """Sign and post ``data``; return the transaction id (on arlocal: funded and mined)."""
        if prepared is None or prepared.size != len(data):
            prepared = await self.prepare(len(data))
        # hashing, signing and base64 of a large blob take a while: off the event loop, so other replicas go on
        body = await asyncio.to_thread(_signed_body, self.wallet, data, tags, prepared)
        tx_id = body.id
        try:
            resp = await self._http.post(f"{self.url}/tx", content=body.json,
                                         headers={"Content-Type": "application/json"})
        except httpx.TransportError as err:
            raise ArweaveUnavailable(f"Arweave gateway {self.url} did not answer POST /tx: {err!r}") from err
        del body
        if resp.status_code >= 500:
            raise ArweaveUnavailable(f"Arweave gateway {self.url} failed POST /tx: HTTP {resp.status_code}")
        if resp.status_code not in (200, 208):
            raise ArweaveError(f"Arweave gateway {self.url} refused transaction {tx_id}: "
                               f"HTTP {resp.status_code} {resp.text[:200]}")
        if await self.is_arlocal():
            await self._get("/mine")
        return tx_id

    async def data_sha256(self, tx_id: str) -> str | None:
        """Hex SHA-256 of the data of ``tx_id`` as the gateway serves it (hashed as it arrives), or None."""
        try:
            async with self._http.stream("GET", f"{self.url}/{tx_id}") as resp:
                if resp.status_code == 200:
                    return await sha256_of(resp)
        except httpx.TransportError as err:
            raise ArweaveUnavailable(f"Arweave gateway {self.url} did not answer GET /{tx_id}: {err!r}") from err
        if resp.status_code in (400, 404, 410):
            return None
        raise ArweaveUnavailable(f"Arweave gateway {self.url} answered HTTP {resp.status_code} for {tx_id}")

    async def data(self, tx_id: str) -> bytes | None:
        """The data of ``tx_id``, or None if the gateway does not have it."""
        resp = await self._get(f"/{tx_id}")
        if resp.status_code == 200:
            return resp.content
        if resp.status_code in (400, 404, 410):
            return None
        raise ArweaveUnavailable(f"Arweave gateway {self.url} answered HTTP {resp.status_code} for {tx_id}")
