"""Shamir's secret sharing over GF(2^8), one polynomial per secret byte, with public hash commitments.

A secret of any length is split into ``n`` shares of the same length; any ``k`` of them give the secret back
by Lagrange interpolation at x = 0, fewer give a uniformly random-looking value. Share ``i`` is the polynomial
evaluated at x = ``i`` (1..255). The field is GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1, the
same construction as HashiCorp Vault's ``shamir`` package.

The core holds no randomness: :func:`split` takes ``random_bytes`` (``secrets.token_bytes`` in an activity).

Each share has a public commitment, a SHA-256 over a domain tag, the key epoch's salt, the share's index and
its value. Publishing it reveals nothing usable about a 256-bit share, and lets :func:`check_shares` name a
wrong or forged share *before* combining (a wrong share would otherwise silently yield a wrong key).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from westworld.errors import InvalidInput, InvalidShare

MAX_SHARES = 255
COMMITMENT_TAG = b"westworld/shelter/share-commitment/v1"


class Share(BaseModel):
    """One share: its x coordinate (1..255) and the polynomial values at x, one byte per secret byte.

    Key material: lives only in activity memory or on a guardian's machine, never in history or the database.
    """

    model_config = ConfigDict(frozen=True, ser_json_bytes="hex", val_json_bytes="hex")

    index: int = Field(ge=1, le=MAX_SHARES)
    value: bytes = Field(min_length=1)

    def __repr__(self) -> str:  # never print the value by accident (logs, tracebacks)
        return f"Share(index={self.index}, value=<{len(self.value)} bytes>)"

    __str__ = __repr__


def _build_tables() -> tuple[list[int], list[int]]:
    exp = [0] * 512
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        # multiply by the generator 3 (x + 1) modulo the AES polynomial
        x ^= (x << 1) ^ (0x11B if x & 0x80 else 0)
        x &= 0xFF
    for i in range(255, 512):
        exp[i] = exp[i - 255]
    return exp, log


_EXP, _LOG = _build_tables()


def _mul(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def _div(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(256)")
    if a == 0:
        return 0
    return _EXP[(_LOG[a] - _LOG[b]) % 255]


def split(secret: bytes, k: int, n: int, random_bytes: Callable[[int], bytes]) -> list[Share]:
    """Split ``secret`` into ``n`` shares of which any ``k`` reconstruct it.

    Raises:
        InvalidInput: an empty secret, ``k < 2``, ``k > n`` or ``n > 255``, or ``random_bytes`` returned
            the wrong number of bytes.
    """
    if not secret:
        raise InvalidInput("the secret to split is empty")
    if not 2 <= k <= n <= MAX_SHARES:
        raise InvalidInput(f"threshold k={k} of n={n} shares is not possible: need 2 <= k <= n <= {MAX_SHARES}")
    needed = len(secret) * (k - 1)
    coefficients = random_bytes(needed)
    if len(coefficients) != needed:
        raise InvalidInput(f"random_bytes({needed}) returned {len(coefficients)} bytes")
    values = [bytearray(len(secret)) for _ in range(n)]
    for pos, byte in enumerate(secret):
        poly = [byte, *coefficients[pos * (k - 1):(pos + 1) * (k - 1)]]
        for i in range(n):
            x = i + 1
            acc = 0
            for c in reversed(poly):  # Horner
                acc = _mul(acc, x) ^ c
            values[i][pos] = acc
    return [Share(index=i + 1, value=bytes(v)) for i, v in enumerate(values)]


def combine(shares: Sequence[Share], threshold: int | None = None) -> bytes:
    """Interpolate the secret from ``shares`` (at least ``threshold`` of them when given).

    Shares that are each well formed but wrong give a wrong secret silently: call :func:`check_shares` first.

    Raises:
        InvalidShare: no shares, fewer than ``threshold``, a repeated index, or values of different lengths;
            the message names the offending indexes.
    """
    if not shares:
        raise InvalidShare("no shares to combine")
    if threshold is not None and len(shares) < threshold:
        raise InvalidShare(
            f"{len(shares)} share(s) given (indexes {sorted(s.index for s in shares)}), {threshold} needed"
        )
    _refuse_duplicates(shares)
    length = len(shares[0].value)
    odd = tuple(s.index for s in shares if len(s.value) != length)
    if odd:
        raise InvalidShare(f"share(s) {list(odd)} are not {length} bytes long like share {shares[0].index}",
                           indexes=odd)
    xs = [s.index for s in shares]
    # Lagrange basis at x = 0: prod_{j != i} x_j / (x_j - x_i); subtraction is XOR in GF(2^8)
    weights = []
    for i, xi in enumerate(xs):
        w = 1
        for j, xj in enumerate(xs):
            if i != j:
                w = _mul(w, _div(xj, xj ^ xi))
        weights.append(w)
    out = bytearray(length)
    for share, w in zip(shares, weights, strict=True):
        for pos, y in enumerate(share.value):
            out[pos] ^= _mul(y, w)
    return bytes(out)


def commitment(share: Share, epoch_salt: bytes) -> str:
    """The public commitment of a share (hex SHA-256 over tag, salt, index and value)."""
    h = hashlib.sha256()
    h.update(COMMITMENT_TAG)
    h.update(len(epoch_salt).to_bytes(2, "big"))
    h.update(epoch_salt)
    h.update(share.index.to_bytes(1, "big"))
    h.update(share.value)
    return h.hexdigest()


def check_shares(shares: Sequence[Share], commitments: Mapping[int, str], salt: bytes) -> None:
    """Check every share against its published commitment before combining.

    Raises:
        InvalidShare: naming every share whose index repeats, has no commitment (not issued in this epoch),
            or does not match its commitment (wrong or forged).
    """
    _refuse_duplicates(shares)
    unknown = [s.index for s in shares if s.index not in commitments]
    wrong = [s.index for s in shares
             if s.index in commitments and not hmac.compare_digest(commitment(s, salt), commitments[s.index])]
    if unknown or wrong:
        parts = []
        if wrong:
            parts.append(f"share(s) {wrong} do not match their published commitment (wrong or forged)")
        if unknown:
            parts.append(f"share(s) {unknown} were not issued in this key epoch")
        raise InvalidShare("; ".join(parts), indexes=tuple(sorted(wrong + unknown)))


def _refuse_duplicates(shares: Sequence[Share]) -> None:
    seen: set[int] = set()
    dup: list[int] = []
    for s in shares:
        if s.index in seen and s.index not in dup:
            dup.append(s.index)
        seen.add(s.index)
    if dup:
        raise InvalidShare(f"share index(es) {dup} given more than once", indexes=tuple(dup))
