"""The caveat grammar of capability tokens: parse, format, and evaluate one first-party caveat (pure).

Every first-party caveat is one line ``name = value``:

    actions = set_version,restart           the action must be one of these
    affects_nodes_le = 20                   at most this many target nodes in one action
    affects_network_pct_le = 1.0            at most this percent of the live node count in one action
    valid_until = 2026-01-15T00:00:00Z      the check happens strictly before this instant (UTC)
    nodes = n-001,n-002                     every target is one of these nodes (node scope)
    regions = eu-west,eu-north              every target node is in one of these regions (region scope)
    budget = 50/3600s                       at most 50 distinct nodes touched per rolling 3600 s, across all of
                                            the agent's actions (this one included), so a wide action cannot be
                                            sliced into many small ones
    action_digest = <64 hex>                the action's digest (westworld/peers.py) is this one: a peer's discharge
                                            carries it, so it authorises only the action the peer was shown

Caveats only narrow: a token carrying two ``actions`` caveats allows the intersection. An unknown or malformed
caveat never passes (fail closed).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel

from westworld.errors import InvalidInput

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
BUDGET = re.compile(r"([0-9]{1,9})/([0-9]{1,9})s")
DIGEST = re.compile(r"[0-9a-f]{64}")


class CaveatName(StrEnum):
    ACTIONS = "actions"
    AFFECTS_NODES_LE = "affects_nodes_le"
    AFFECTS_NETWORK_PCT_LE = "affects_network_pct_le"
    VALID_UNTIL = "valid_until"
    NODES = "nodes"
    REGIONS = "regions"
    BUDGET = "budget"
    ACTION_DIGEST = "action_digest"


class Caveat(BaseModel, frozen=True):
    """One parsed first-party caveat; ``text`` is its canonical line."""

    name: CaveatName
    names: tuple[str, ...] = ()
    number: float = 0.0
    until: datetime | None = None
    window_s: int = 0

    @property
    def text(self) -> str:
        return f"{self.name.value} = {self._value()}"

    def _value(self) -> str:
        if self.name in (CaveatName.ACTIONS, CaveatName.NODES, CaveatName.REGIONS, CaveatName.ACTION_DIGEST):
            return ",".join(self.names)
        if self.name is CaveatName.AFFECTS_NODES_LE:
            return str(int(self.number))
        if self.name is CaveatName.AFFECTS_NETWORK_PCT_LE:
            return repr(self.number)
        if self.name is CaveatName.VALID_UNTIL:
            assert self.until is not None
            return self.until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{int(self.number)}/{self.window_s}s"


class Target(BaseModel, frozen=True):
    """A node an action touches, with its region from the node registry."""

    node_id: str
    region: str = ""


class Facts(BaseModel):
    """What a caveat is evaluated against: the request and the state of the network (all passed in, no clock)."""

    action: str
    targets: list[Target]
    live_nodes: int
    now: datetime
    window_usage: Mapping[int, int] = {}  # window seconds -> distinct nodes touched in it, this action included
    action_digest: str = ""  # hex digest of the action (westworld/peers.py action_digest); "" if unknown


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> Caveat:
    """Parse one caveat line (pure, so cached: tokens repeat the same few lines; a ``Caveat`` is immutable).

    Raises:
        InvalidInput: unknown name or malformed value; the message names the caveat and what is wrong.
    """
    name_part, sep, value = text.partition("=")
    name, value = name_part.strip(), value.strip()
    if not sep or not value:
        raise InvalidInput(f"caveat {text!r}: expected 'name = value'")
    try:
        kind = CaveatName(name)
    except ValueError:
        known = ", ".join(c.value for c in CaveatName)
        raise InvalidInput(f"caveat {text!r}: unknown caveat {name!r} (known: {known})") from None
    if kind in (CaveatName.ACTIONS, CaveatName.NODES, CaveatName.REGIONS):
        names = tuple(v.strip() for v in value.split(","))
        bad = [n for n in names if not NAME.fullmatch(n)]
        if bad:
            raise InvalidInput(f"caveat {text!r}: {bad[0]!r} is not a valid {kind.value} entry")
        return Caveat(name=kind, names=tuple(sorted(set(names))))
    if kind is CaveatName.ACTION_DIGEST:
        if not DIGEST.fullmatch(value):
            raise InvalidInput(f"caveat {text!r}: expected the action's 64 lower-case hex digest")
        return Caveat(name=kind, names=(value,))
    if kind is CaveatName.AFFECTS_NODES_LE:
        if not value.isdigit() or len(value) > 9:
            raise InvalidInput(f"caveat {text!r}: expected a whole number of nodes")
        return Caveat(name=kind, number=int(value))
    if kind is CaveatName.AFFECTS_NETWORK_PCT_LE:
        try:
            pct = float(value)
        except ValueError:
            raise InvalidInput(f"caveat {text!r}: expected a percentage like 1.0") from None
        if not math.isfinite(pct) or not 0.0 <= pct <= 100.0:
            raise InvalidInput(f"caveat {text!r}: the percentage must be within 0..100")
        return Caveat(name=kind, number=pct)
    if kind is CaveatName.VALID_UNTIL:
        try:
            until = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"caveat {text!r}: expected an ISO-8601 UTC time like 2026-01-15T00:00:00Z") from None
        if until.tzinfo is None:
            raise InvalidInput(f"caveat {text!r}: the time must carry its zone (end it with Z)")
        return Caveat(name=kind, until=until.replace(microsecond=0).astimezone(UTC))
    match = BUDGET.fullmatch(value)
    if not match or int(match[2]) == 0:
        raise InvalidInput(f"caveat {text!r}: expected '<nodes>/<seconds>s', e.g. 50/3600s")
    return Caveat(name=kind, number=int(match[1]), window_s=int(match[2]))


def evaluate(caveat: Caveat, facts: Facts) -> str | None:
    """``None`` if the caveat holds for these facts, else why it does not."""
    n = len(facts.targets)
    if caveat.name is CaveatName.ACTIONS:
        return None if facts.action in caveat.names else f"action {facts.action!r} is not one of {list(caveat.names)}"
    if caveat.name is CaveatName.AFFECTS_NODES_LE:
        return None if n <= caveat.number else f"the action touches {n} nodes, more than {int(caveat.number)}"
    if caveat.name is CaveatName.AFFECTS_NETWORK_PCT_LE:
        if facts.live_nodes <= 0:
            return "the live node count is unknown (0), so no share of the network can be allowed"
        pct = 100.0 * n / facts.live_nodes
        return None if pct <= caveat.number else (
            f"the action touches {n} of {facts.live_nodes} live nodes ({pct:.2f}%), more than {caveat.number}%")
    if caveat.name is CaveatName.VALID_UNTIL:
        assert caveat.until is not None
        return None if facts.now < caveat.until else f"the token expired at {caveat.until.isoformat()}"
    if caveat.name is CaveatName.ACTION_DIGEST:
        if facts.action_digest == caveat.names[0]:
            return None
        return (f"given for action {caveat.names[0][:16]}…, not for this one "
                f"({facts.action_digest[:16] + '…' if facts.action_digest else 'digest unknown'})")
    if caveat.name is CaveatName.NODES:
        outside = sorted({t.node_id for t in facts.targets} - set(caveat.names))
        return None if not outside else f"nodes {outside[:5]} are outside the token's node scope"
    if caveat.name is CaveatName.REGIONS:
        outside = sorted({f"{t.node_id}@{t.region or '?'}" for t in facts.targets if t.region not in caveat.names})
        return None if not outside else f"nodes {outside[:5]} are outside regions {list(caveat.names)}"
    used = facts.window_usage.get(caveat.window_s)
    if used is None:
        return f"no usage figure for the {caveat.window_s}s window was supplied, so the budget cannot be checked"
    return None if used <= caveat.number else (
        f"the agent would touch {used} distinct nodes within {caveat.window_s}s, over its budget of "
        f"{int(caveat.number)}")


def budget_windows(caveats: Sequence[Caveat]) -> list[int]:
    """The rolling windows (seconds) whose usage the budget caveats need."""
    return sorted({c.window_s for c in caveats if c.name is CaveatName.BUDGET})
