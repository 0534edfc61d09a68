"""The streamed document blob is byte for byte the one-shot blob: any split of the plaintext, any size."""

from __future__ import annotations

import hashlib
import itertools
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from westworld import envelope
from westworld.blob_stream import BlobEncryptor
from westworld.errors import InvalidInput


def streamed(key: bytes, nonce: bytes, aad: bytes, pieces: list[bytes]) -> tuple[bytes, BlobEncryptor]:
    enc = BlobEncryptor(key, nonce, aad)
    out = enc.header() + b"".join(enc.update(p) for p in pieces) + enc.finalize()
    return out, enc


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=70_000), cuts=st.lists(st.integers(min_value=0, max_value=70_000), max_size=6),
       aad=st.binary(max_size=40))
def test_any_split_gives_the_one_shot_blob(data: bytes, cuts: list[int], aad: bytes) -> None:
    key, nonce = secrets.token_bytes(32), secrets.token_bytes(12)
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    blob, enc = streamed(key, nonce, aad, pieces)
    assert blob == envelope.encrypt_blob(key, nonce, data, aad)
    assert enc.sha256 == hashlib.sha256(blob).hexdigest()
    assert (enc.size, enc.plaintext_size) == (len(blob), len(data))
    assert envelope.decrypt_blob(key, blob, aad) == data


def test_misuse_is_refused_and_the_key_never_shows() -> None:
    with pytest.raises(InvalidInput, match="data key must be 32 bytes, got 16"):
        BlobEncryptor(secrets.token_bytes(16), secrets.token_bytes(12), b"")
    with pytest.raises(InvalidInput, match="nonce must be 12 bytes, got 8"):
        BlobEncryptor(secrets.token_bytes(32), secrets.token_bytes(8), b"")
    key = secrets.token_bytes(32)
    enc = BlobEncryptor(key, secrets.token_bytes(12), b"doc")
    assert key.hex() not in repr(enc) and str(key) not in repr(enc)
    enc.update(b"text")
    with pytest.raises(InvalidInput, match="only after finalize"):
        _ = enc.sha256
    with pytest.raises(InvalidInput, match="header"):
        enc.finalize()
