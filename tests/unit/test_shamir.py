"""Shamir k-of-n over GF(256): any k reconstruct, fewer do not, wrong/forged/duplicate/unknown shares are named."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from westworld import shamir
from westworld.errors import InvalidInput, InvalidShare

SALT = bytes(range(32))


@st.composite
def splits(draw: st.DrawFn) -> tuple[bytes, int, int, list[shamir.Share], bytes]:
    secret = draw(st.binary(min_size=1, max_size=48))
    n = draw(st.integers(min_value=2, max_value=12))
    k = draw(st.integers(min_value=2, max_value=n))
    seed = draw(st.binary(min_size=len(secret) * (k - 1), max_size=len(secret) * (k - 1)))
    shares = shamir.split(secret, k, n, lambda size: seed[:size])
    return secret, k, n, shares, seed


@settings(max_examples=150, deadline=None)
@given(data=splits(), pick=st.randoms(use_true_random=False))
def test_any_k_shares_reconstruct(data: tuple[bytes, int, int, list[shamir.Share], bytes], pick: object) -> None:
    secret, k, _n, shares, _ = data
    chosen = pick.sample(shares, k)  # type: ignore[attr-defined]
    assert shamir.combine(chosen, threshold=k) == secret
    assert shamir.combine(shares) == secret  # more than k also works


@settings(max_examples=150, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), n=st.integers(3, 10), data=st.data())
def test_fewer_than_k_give_a_different_secret(secret: bytes, n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(3, n))
    shares = shamir.split(secret, k, n, secrets.token_bytes)
    chosen = data.draw(st.permutations(shares))[: k - 1]
    # With real randomness k-1 shares are consistent with every secret; interpolating them hits the real one
    # with probability 2^-256.
    assert shamir.combine(chosen) != secret
    with pytest.raises(InvalidShare, match=f"{k - 1} share\\(s\\) given .* {k} needed"):
        shamir.combine(chosen, threshold=k)


def test_one_share_alone_does_not_depend_on_the_secret() -> None:
    """As the random coefficient ranges over GF(256), one share of a fixed secret takes every byte value: a single
    share (below the threshold of 2) is uniform and says nothing about the secret."""
    def coefficient(c: int) -> Callable[[int], bytes]:
        return lambda _n: bytes([c])

    values = {shamir.split(b"\x00", 2, 2, coefficient(c))[0].value for c in range(256)}
    assert len(values) == 256


def test_commitments_name_every_wrong_share_before_combining() -> None:
    shares = shamir.split(secrets.token_bytes(32), 3, 10, secrets.token_bytes)
    commitments = {s.index: shamir.commitment(s, SALT) for s in shares}
    shamir.check_shares(shares[:3], commitments, SALT)
    forged = shamir.Share(index=2, value=secrets.token_bytes(32))
    flipped = shamir.Share(index=5, value=bytes([shares[4].value[0] ^ 1]) + shares[4].value[1:])
    with pytest.raises(InvalidShare) as err:
        shamir.check_shares([shares[0], forged, flipped, shares[6]], commitments, SALT)
    assert err.value.indexes == (2, 5)
    assert "[2, 5] do not match their published commitment" in err.value.message


def test_commitment_depends_on_the_epoch_salt() -> None:
    share = shamir.split(b"k" * 32, 2, 3, secrets.token_bytes)[0]
    with pytest.raises(InvalidShare, match=r"\[1\] do not match"):
        shamir.check_shares([share], {1: shamir.commitment(share, b"other epoch")}, SALT)


def test_unknown_and_duplicate_shares_are_refused_by_index() -> None:
    shares = shamir.split(b"s" * 32, 2, 3, secrets.token_bytes)
    commitments = {s.index: shamir.commitment(s, SALT) for s in shares}
    stranger = shamir.Share(index=9, value=b"x" * 32)
    with pytest.raises(InvalidShare, match=r"\[9\] were not issued") as err:
        shamir.check_shares([shares[0], stranger], commitments, SALT)
    assert err.value.indexes == (9,)
    with pytest.raises(InvalidShare, match=r"\[1\] given more than once"):
        shamir.check_shares([shares[0], shares[0]], commitments, SALT)
    with pytest.raises(InvalidShare, match=r"\[1\] given more than once"):
        shamir.combine([shares[0], shares[1], shares[0]])


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(InvalidInput, match="k=1 of n=3"):
        shamir.split(b"s", 1, 3, secrets.token_bytes)
    with pytest.raises(InvalidInput, match="k=4 of n=3"):
        shamir.split(b"s", 4, 3, secrets.token_bytes)
    with pytest.raises(InvalidInput, match="n=256"):
        shamir.split(b"s", 2, 256, secrets.token_bytes)
    with pytest.raises(InvalidInput, match="empty"):
        shamir.split(b"", 2, 3, secrets.token_bytes)
    with pytest.raises(InvalidShare, match="no shares"):
        shamir.combine([])
    a, _b = shamir.split(b"ab", 2, 2, secrets.token_bytes)
    with pytest.raises(InvalidShare, match=r"\[2\] are not 2 bytes"):
        shamir.combine([a, shamir.Share(index=2, value=b"abc")])


def test_a_share_never_prints_its_value() -> None:
    share = shamir.Share(index=1, value=b"\xaa" * 32)
    assert "aa" not in repr(share) and "aa" not in str(share)


def test_matches_a_known_vector() -> None:
    """Fixed coefficients give fixed shares (catches an accidental change of field or evaluation order)."""
    shares = shamir.split(b"\x2a", 2, 3, lambda _n: b"\x07")
    # f(x) = 0x2a + 7x in GF(256): f(1)=0x2d, f(2)=0x2a^0x0e=0x24, f(3)=0x2a^(7*3=0x09)=0x23
    assert [s.value for s in shares] == [b"\x2d", b"\x24", b"\x23"]
