"""Token amounts: exact integers in wei inside, decimal strings on the wire, whole tokens for people.

A vote's tally, a voter's weight and a token supply are 18-decimal integers (``5.5e23`` wei is 550,000 tokens).
JSON numbers past 2**53 lose precision in every JavaScript reader, so the Temporal UI showed ``"for": 5.5e+23``.
:data:`Amount` is an ``int`` that serialises to JSON as a decimal string (``"550000000000000000000000"``) and
reads either form back, so payloads recorded before it (numbers) still decode and replay.

:func:`format_tokens` is what the CLI prints: exact (``Decimal``, never ``float``), grouped, in whole tokens.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

DEFAULT_DECIMALS = 18
DIGITS = re.compile(r"^-?[0-9]+$")


def _whole_number(value: object) -> object:
    """A decimal string of digits becomes an int; anything else goes on to pydantic's int validation (which
    refuses fractions and non-numbers with its own message)."""
    if isinstance(value, str):
        text = value.strip()
        if not DIGITS.match(text):
            raise ValueError(f"an amount is a whole number of wei in decimal digits, not {value[:40]!r}")
        return int(text)
    return value


Amount = Annotated[
    int,
    BeforeValidator(_whole_number),
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DIGITS.pattern,
                    "description": "An amount in wei, as a decimal string (JSON numbers this large lose precision)."}),
]
"""An amount in wei: an ``int`` in Python, a decimal string in JSON (numbers accepted on input)."""


def to_tokens(wei: int, decimals: int = DEFAULT_DECIMALS) -> Decimal:
    """``wei`` in whole tokens, exactly (built from its digits: no context precision rounds it)."""
    digits = tuple(int(d) for d in str(abs(wei)))
    return Decimal((1 if wei < 0 else 0, digits, -decimals))


def format_tokens(wei: int, symbol: str = "", decimals: int = DEFAULT_DECIMALS) -> str:
    """``40000000000000000000000`` -> ``"40,000"`` (``"40,000 MESH"`` with a symbol); fractions kept exactly,
    trailing zeros dropped (``1.5``, ``0.000000000000000001``)."""
    tokens = to_tokens(wei, decimals)
    text = f"{tokens:,f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} {symbol}" if symbol else text
