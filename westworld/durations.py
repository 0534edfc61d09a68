"""Durations as people type them, one parser for every input: ``"30s"``, ``"1m"``, ``"1h30m"``, ``"250ms"``,
``"2d"``, ISO 8601 (``"PT30S"``, what pydantic writes, so every saved payload still decodes) or a number of seconds;
finite, not negative and at most 10 years (:func:`westworld.documents.duration_problem`). Use :data:`Duration` for
a ``timedelta`` field of any model a person or a script fills in (experiment specs, votes, shelter requests,
rotations): it validates like this and serialises like a plain ``timedelta``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, TypeAdapter, ValidationError

from westworld.documents import duration_problem

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?"
                       r"(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def parse_duration(value: Any) -> Any:
    """``"30s"``, ``"1h30m"``, ``"250ms"``, ``"2d"``, ISO 8601 (``PT30S``) or a number of seconds.

    Raises:
        ValueError: not a duration, negative, not finite (``.inf``, ``nan``) or longer than 10 years
            (``documents.MAX_DURATION``); the message gives the value and the allowed range (pydantic adds the
            field's path).
    """
    if isinstance(value, bool):  # pydantic would read true as 1s
        raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 5m, 1h30m, 250ms)")
    if isinstance(value, timedelta):
        _bounded(f"{value.total_seconds():g}s", value.total_seconds())
        return value
    if isinstance(value, int | float):
        _bounded(value, value)
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        m = _DURATION.match(text)
        if text and m and any(m.groups()):
            d, h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
            _bounded(value, d * 86400 + h * 3600 + mi * 60 + s + ms / 1000)
            return timedelta(days=d, hours=h, minutes=mi, seconds=s, milliseconds=ms)
        if text.upper().lstrip("-+").startswith("P"):
            try:
                iso = _ISO_8601.validate_python(text)
            except ValidationError as err:
                raise ValueError(f"{_shown(value)} is not a duration ({err.errors()[0]['msg']})") from err
            _bounded(value, iso.total_seconds())
            return iso
        raise ValueError(f"{_shown(value)} is not a duration (use e.g. 30s, 5m, 1h30m, 250ms)")
    return value


def _bounded(value: Any, seconds: float) -> None:
    if problem := duration_problem(seconds):
        raise ValueError(f"{_shown(value)} {problem}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"


_ISO_8601 = TypeAdapter(timedelta)
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
