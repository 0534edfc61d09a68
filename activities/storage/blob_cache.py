"""The worker's content-addressed cache of document ciphertexts (``<data dir>/shelter/cache/<sha256>``).

:meth:`BlobCache.encrypt_into` streams a staged plaintext through :class:`westworld.blob_stream.BlobEncryptor`
into a temporary file, hashing as it goes, so encrypting a document never holds it whole in memory; the file takes
its content-addressed name only when :meth:`BlobCache.keep` is called (the caller first checks the store may go
on). :meth:`BlobCache.read` gives a cached blob only if it still hashes to its name. Blocking file I/O: call these
in a thread when the blob is large (:func:`sized`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from westworld.blob_stream import BlobEncryptor

PIECE = 1024 * 1024
OFF_LOOP_BYTES = 512 * 1024  # below this, hashing or encrypting inline is cheaper than a hop to a thread
T = TypeVar("T")


async def sized(size: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, in a thread if it works on ``size`` bytes or more (so the event loop keeps serving the
    other replicas' I/O), else inline."""
    if size >= OFF_LOOP_BYTES:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


@dataclass(frozen=True)
class Encrypted:
    """A blob written to a temporary file of the cache, not yet kept."""

    path: Path
    sha256: str
    size: int
    plaintext_size: int


class BlobCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def encrypt_into(self, source: Path, key: bytes, nonce: bytes, aad: bytes) -> Encrypted:
        """Encrypt ``source`` piece by piece into a temporary cache file (mode 0600)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{secrets.token_hex(8)}.tmp"
        enc = BlobEncryptor(key, nonce, aad)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                out.write(enc.header())
                while piece := src.read(PIECE):
                    out.write(enc.update(piece))
                out.write(enc.finalize())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return Encrypted(path=tmp, sha256=enc.sha256, size=enc.size, plaintext_size=enc.plaintext_size)

    def keep(self, blob: Encrypted) -> None:
        """Give a written blob its content-addressed name."""
        blob.path.replace(self.directory / blob.sha256)

    @staticmethod
    def drop(blob: Encrypted) -> None:
        """Delete a written blob that was not kept."""
        blob.path.unlink(missing_ok=True)

    def remove(self, digest: str) -> None:
        """Delete the kept blob named ``digest``."""
        (self.directory / digest).unlink(missing_ok=True)

    def size(self, digest: str) -> int | None:
        """The size of the kept blob named ``digest`` (None: not cached)."""
        try:
            return (self.directory / digest).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, digest: str) -> bytes | None:
        """The cached blob named ``digest``, if it is there and still hashes to ``digest``."""
        try:
            blob = (self.directory / digest).read_bytes()
        except FileNotFoundError:
            return None
        return blob if hashlib.sha256(blob).hexdigest() == digest else None
