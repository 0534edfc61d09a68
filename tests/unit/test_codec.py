"""Payload encryption: what ends up in history is unreadable without the key, and readable with it."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload
from temporalio.exceptions import ApplicationError

from westworld.errors import PAYLOAD_UNDECRYPTABLE, KeyRingError, PayloadDecryptionError
from workers.codec import (
    ENCODING,
    KEY_ID_METADATA,
    UNDECRYPTABLE,
    EncryptionCodec,
    KeyRing,
    build_data_converter,
    create_keyring,
    decrypt_payload,
    encrypt_payload,
    load_keyring,
    rotate_keyring,
)

SECRET = b'{"share": "guardian-7 key share in clear"}'


def plain(data: bytes = SECRET) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=data)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "codec-keys.json"
    create_keyring(path)
    return path


async def test_round_trip_restores_data_and_metadata(key_file: Path) -> None:
    codec = EncryptionCodec(load_keyring(key_file))
    [sealed] = await codec.encode([plain()])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID_METADATA] == load_keyring(key_file).active.encode()
    assert await codec.decode([sealed]) == [plain()]


async def test_ciphertext_hides_the_plaintext_and_metadata(key_file: Path) -> None:
    [sealed] = await EncryptionCodec(load_keyring(key_file)).encode([plain()])
    assert SECRET not in sealed.data
    assert b"guardian-7" not in sealed.SerializeToString()
    assert b"json/plain" not in sealed.SerializeToString()


async def test_same_payload_encrypts_differently_each_time(key_file: Path) -> None:
    codec = EncryptionCodec(load_keyring(key_file))
    first, second = await codec.encode([plain(), plain()])
    assert first.data != second.data


async def test_rotation_keeps_old_payloads_decryptable(key_file: Path) -> None:
    old_ring = load_keyring(key_file)
    [old] = await EncryptionCodec(old_ring).encode([plain(b"before")])
    new_id = rotate_keyring(key_file)
    ring = load_keyring(key_file)
    assert new_id == ring.active != old_ring.active
    assert set(ring.keys) == {old_ring.active, new_id}
    codec = EncryptionCodec(ring)
    [new] = await codec.encode([plain(b"after")])
    assert new.metadata[KEY_ID_METADATA] == new_id.encode()
    assert await codec.decode([old, new]) == [plain(b"before"), plain(b"after")]


async def test_codec_with_key_file_picks_up_a_rotation(key_file: Path) -> None:
    started_before = EncryptionCodec(load_keyring(key_file), key_file)
    rotate_keyring(key_file)
    [sealed] = await EncryptionCodec(load_keyring(key_file)).encode([plain()])
    assert await started_before.decode([sealed]) == [plain()]


async def test_plaintext_passes_through_decode(key_file: Path) -> None:
    ui_form = Payload(metadata={"encoding": b"json/plain"}, data=b'{"proposal_id": "p-1"}')
    assert await EncryptionCodec(load_keyring(key_file)).decode([ui_form]) == [ui_form]


async def test_tampered_ciphertext_fails_naming_the_key_id(key_file: Path) -> None:
    ring = load_keyring(key_file)
    sealed = encrypt_payload(plain(), ring)
    flipped = bytearray(sealed.data)
    flipped[-1] ^= 0x01
    sealed.data = bytes(flipped)
    with pytest.raises(PayloadDecryptionError, match=rf"{ring.active}.*failed authentication"):
        await EncryptionCodec(ring).decode([sealed])


async def test_relabelled_key_id_fails_authentication(tmp_path: Path, key_file: Path) -> None:
    # The key id is bound as associated data: moving a payload under another id (same key) is detected.
    ring = load_keyring(key_file)
    other_id = "k-00000000" if ring.active != "k-00000000" else "k-11111111"
    twin = KeyRing(active=ring.active, keys={**ring.keys, other_id: ring.keys[ring.active]})
    sealed = encrypt_payload(plain(), twin)
    sealed.metadata[KEY_ID_METADATA] = other_id.encode()
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        decrypt_payload(sealed, twin)


async def test_unknown_key_id_fails_naming_it_and_not_the_key(key_file: Path) -> None:
    ring = load_keyring(key_file)
    sealed = encrypt_payload(plain(), KeyRing.generate())
    unknown = sealed.metadata[KEY_ID_METADATA].decode()
    with pytest.raises(PayloadDecryptionError, match=rf"{unknown}.*not in the key ring") as info:
        await EncryptionCodec(ring).decode([sealed])
    key_b64 = base64.b64encode(ring.keys[ring.active]).decode()
    assert key_b64 not in str(info.value)
    assert key_b64 not in repr(ring)


def test_key_file_is_private_and_never_overwritten(key_file: Path) -> None:
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with pytest.raises(KeyRingError, match="already exists"):
        create_keyring(key_file)
    rotate_keyring(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert list(key_file.parent.iterdir()) == [key_file]  # no temporary file left behind


def test_key_file_format(key_file: Path) -> None:
    raw = json.loads(key_file.read_text())
    assert set(raw) == {"active", "keys"}
    assert raw["active"] in raw["keys"]
    assert raw["active"].startswith("k-")
    assert len(raw["active"]) == 10


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("not json", "not JSON"),
        ('{"keys": {}}', "missing field"),
        ('{"active": "k-00000000", "keys": {"k-00000000": "c2hvcnQ="}}', "AES-256 needs 32"),
        ('{"active": "k-11111111", "keys": {}}', "not in the key ring"),
    ],
)
def test_malformed_key_file_is_refused_clearly(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(KeyRingError, match=reason):
        load_keyring(path)


def test_missing_key_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match="westworld up"):
        load_keyring(tmp_path / "absent.json")


async def test_data_converter_encrypts_pydantic_values(key_file: Path) -> None:
    converter = build_data_converter(load_keyring(key_file))
    [sealed] = await converter.encode([{"vote": "yes", "weight": 42}])
    assert sealed.metadata["encoding"] == ENCODING
    assert b"yes" not in sealed.data
    assert await converter.decode([sealed], [dict]) == [{"vote": "yes", "weight": 42}]


RING = KeyRing.generate()


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=4096),
    metadata=st.dictionaries(st.text(min_size=1, max_size=20), st.binary(max_size=64), max_size=4),
)
def test_round_trip_over_arbitrary_bytes(data: bytes, metadata: dict[str, bytes]) -> None:
    original = Payload(metadata=metadata, data=data)
    sealed = encrypt_payload(original, RING)
    assert sealed.metadata["encoding"] == ENCODING
    assert decrypt_payload(sealed, RING) == original


def flip(sealed: Payload, index: int) -> Payload:
    data = bytearray(sealed.data)
    data[index % len(data)] ^= 0x01
    return Payload(metadata=dict(sealed.metadata), data=bytes(data))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=256), index=st.integers(min_value=0))
def test_any_flipped_bit_is_refused_naming_the_key_id(data: bytes, index: int) -> None:
    sealed = encrypt_payload(plain(data), RING)
    with pytest.raises(PayloadDecryptionError, match=rf"{RING.active}.*failed authentication"):
        decrypt_payload(flip(sealed, index), RING)


async def test_data_converter_refuses_an_undecryptable_payload_with_a_typed_non_retryable_error(
    key_file: Path,
) -> None:
    converter = build_data_converter(load_keyring(key_file))
    foreign = encrypt_payload(plain(b'{"vote": "yes"}'), KeyRing.generate())
    foreign_id = foreign.metadata[KEY_ID_METADATA].decode()
    tampered = flip(encrypt_payload(plain(b'{"vote": "yes"}'), load_keyring(key_file)), 20)
    for payload, reason in ((foreign, rf"{foreign_id}.*not in the key ring"), (tampered, "failed authentication")):
        # the codec marks it (no exception where the SDK decodes a whole activation) ...
        [marker] = await converter.payload_codec.decode([payload])  # type: ignore[union-attr]
        assert marker.metadata["encoding"] == UNDECRYPTABLE and marker.data == b""
        # ... and reading it is a typed, non-retryable error naming the key id and what is wrong
        with pytest.raises(ApplicationError, match=reason) as info:
            await converter.decode([payload], [dict])
        assert info.value.type == PAYLOAD_UNDECRYPTABLE and info.value.non_retryable
        assert payload.metadata[KEY_ID_METADATA].decode() in info.value.message


async def test_data_converter_still_reads_plaintext_and_never_writes_markers(key_file: Path) -> None:
    converter = build_data_converter(load_keyring(key_file))
    ui_form = Payload(metadata={"encoding": b"json/plain"}, data=b'{"proposal_id": "p-1"}')
    assert await converter.decode([ui_form], [dict]) == [{"proposal_id": "p-1"}]
    [sealed] = await converter.encode([None])
    assert sealed.metadata["encoding"] == ENCODING


async def test_codec_server_codec_stays_strict(key_file: Path) -> None:
    foreign = encrypt_payload(plain(), KeyRing.generate())
    with pytest.raises(PayloadDecryptionError, match="not in the key ring"):
        await EncryptionCodec(load_keyring(key_file)).decode([foreign])


def test_a_flooding_key_id_is_cut_in_messages(key_file: Path) -> None:
    sealed = encrypt_payload(plain(), KeyRing.generate())
    sealed.metadata[KEY_ID_METADATA] = b"k-" + b"A" * 10_000
    with pytest.raises(PayloadDecryptionError) as info:
        decrypt_payload(sealed, load_keyring(key_file))
    assert len(str(info.value)) < 300
