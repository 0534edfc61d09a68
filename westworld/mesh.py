"""The mesh node's builds and knobs: which versions exist and how each behaves (pure; used by the node program
and checked by the sandbox backends before anything starts).

Version ``1.5.0-rc1`` is the faulty build: its relays hold each message 40 ms and drop 8 % of what they relay.
Config knobs override the version's behaviour. An unknown version behaves like ``DEFAULT_VERSION`` (it is then
only a label).
"""

from __future__ import annotations

from collections.abc import Mapping

from westworld.errors import InvalidInput

VERSIONS: dict[str, dict[str, float]] = {
    "1.4.0": {"relay_delay_ms": 0.0, "drop_rate": 0.0},
    "1.5.0": {"relay_delay_ms": 0.0, "drop_rate": 0.0},
    "1.5.0-rc1": {"relay_delay_ms": 40.0, "drop_rate": 0.08},
}
DEFAULT_VERSION = "1.4.0"
KNOBS: dict[str, float] = {"relay_delay_ms": 0.0, "drop_rate": 0.0, "probe_interval_ms": 100.0,
                           "probe_timeout_ms": 2000.0}


def behaviour(version: str, config: Mapping[str, str]) -> dict[str, float]:
    """The effective knobs: defaults, then the version's entry, then ``config``; a bad knob is ``InvalidInput``."""
    out = dict(KNOBS)
    out.update(VERSIONS.get(version, VERSIONS[DEFAULT_VERSION]))
    for key, value in config.items():
        if key not in KNOBS:
            raise InvalidInput(f"unknown config knob {key!r} (known: {', '.join(sorted(KNOBS))})")
        try:
            out[key] = float(value)
        except ValueError:
            raise InvalidInput(f"config knob {key}={value!r} is not a number") from None
    if not 0.0 <= out["drop_rate"] <= 1.0:
        raise InvalidInput(f"drop_rate={out['drop_rate']} is not in [0, 1]")
    if out["probe_interval_ms"] <= 0 or out["probe_timeout_ms"] <= 0:
        raise InvalidInput("probe_interval_ms and probe_timeout_ms must be positive")
    return out
