"""Capability tokens for automated agents: macaroons (pymacaroons) minted, attenuated and checked (pure).

A token's identifier names the root key (``kid``), the token (``tid``), the agent and the revocation epoch it
was minted in; it is covered by the root key's HMAC, so none of it can be changed. The first caveat is the
agent's allowed actions. Holders narrow a token with :mod:`westworld.caveats` lines, and with third-party
caveats addressed to distinct peer nodes (:mod:`westworld.discharge`). :func:`check` is the one decision:

    halt epoch -> token parses -> key known -> HMAC chain (pymacaroons) and peer discharges -> agent ->
    revoked id -> revocation epoch -> each discharge bound to this action and unexpired -> every caveat in order

A peer's discharge must carry ``action_digest = <the action's digest>`` and a ``valid_until`` no further than the
policy's ``peers.discharge_ttl_max`` from now: it authorises only the action the peer was shown, for a short time.

and returns the first failure as ``(caveat, reason)``. Root keys, randomness and time are passed in.

Parsing a token and verifying its HMAC chain are pure, and agents repeat the same token for many actions, so
both are memoized (bounded LRUs; only successes are kept). :func:`parse_token_shared` answers the same strings
with the same (read-only) parse. A chain is remembered by everything the HMAC verification reads — identifiers,
signatures, every caveat's id, verification-key id and location, of the token and each discharge — and the root
key's bytes, taken from the objects being checked: a macaroon altered after parsing, a retired key (``root_key``
None) or a rotated one never finds an entry. Everything that depends on state or time is decided afresh.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from pymacaroons import Macaroon, Verifier
from pymacaroons.exceptions import MacaroonException

from westworld import caveats as cv
from westworld.errors import Denial, InvalidInput

LOCATION = "westworld"
IDENTIFIER = re.compile(
    r"ww1 kid=([A-Za-z0-9._-]{1,64}) tid=([A-Za-z0-9._-]{1,64}) agent=([A-Za-z0-9._-]{1,64}) epoch=([0-9]{1,9})")
AGENT = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_TOKEN = 64 * 1024
MAX_CAVEATS = 64
MEMO_MAX_CHARS = 16 * 1024  # a token and its discharges longer than this are parsed and verified every time
MEMO_ENTRIES = 1024

# Names of the checks that are not caveat lines; a denial names one of these or a caveat line.
HALTED = "network-halted"
MALFORMED = "token"
SIGNATURE = "signature"
AGENT_MISMATCH = "agent"
REVOKED = "revoked"
EPOCH = "revocation-epoch"
DISCHARGE = "third-party"
DISCHARGE_ACTION = "discharge-action"  # a discharge given for another action
DISCHARGE_EXPIRED = "discharge-expired"


class TokenIdentity(BaseModel, frozen=True):
    key_id: str
    token_id: str
    agent_id: str
    epoch: int

    @property
    def identifier(self) -> str:
        return f"ww1 kid={self.key_id} tid={self.token_id} agent={self.agent_id} epoch={self.epoch}"


class CheckState(BaseModel):
    """The network's side of a check (read by the store in the same transaction as the check)."""

    live_nodes: int
    now: datetime
    halt_epoch: int = 0  # 0: not halted
    revoked: bool = False  # the token id is on the revocation list
    revocation_epoch: int = 0  # tokens minted in an earlier epoch are revoked
    discharge_ttl_max: timedelta = timedelta(hours=1)  # the policy's peers.discharge_ttl_max


class CheckResult(BaseModel):
    """The decision: allowed, or denied naming the caveat (or check) that failed and why."""

    allowed: bool
    caveat: str = ""
    reason: str = ""
    token_id: str = ""
    agent_id: str = ""
    caveats: list[str] = Field(default_factory=list, description="The first-party caveats that were checked.")


class ParsedToken(BaseModel, arbitrary_types_allowed=True):
    identity: TokenIdentity
    macaroon: Macaroon
    discharges: list[Macaroon]
    caveats: list[cv.Caveat]  # first-party caveats of the token and its discharges, in order
    peers: list[str]  # locations (peer node ids) of the third-party caveats
    discharge_caveats: list[tuple[str, list[cv.Caveat]]] = []  # (peer, first-party caveats of its discharge)


def mint(root_key: bytes, identity: TokenIdentity, actions: Sequence[str]) -> str:
    """A root token for ``identity.agent_id`` allowing ``actions``."""
    if not AGENT.fullmatch(identity.agent_id) or not IDENTIFIER.fullmatch(identity.identifier):
        raise InvalidInput(f"agent id {identity.agent_id!r}: letters, digits, '.', '_' or '-', at most 64")
    if not actions:
        raise InvalidInput(f"agent {identity.agent_id}: a token needs at least one allowed action")
    m = Macaroon(location=LOCATION, identifier=identity.identifier, key=root_key)
    m.add_first_party_caveat(cv.parse(f"actions = {','.join(actions)}").text)
    return str(m.serialize())


def attenuate(token: str, lines: Sequence[str]) -> str:
    """The token narrowed by caveat lines (each validated first; nothing is added if one is bad)."""
    m = _deserialize(token)
    parsed = [cv.parse(line) for line in lines]
    for c in parsed:
        m.add_first_party_caveat(c.text)
    return str(m.serialize())


def identity_of(token: str) -> TokenIdentity:
    """The identity in a token's identifier (unauthenticated until :func:`check`).

    Raises:
        Denial: (``token``) the token does not parse or its identifier is not ours.
    """
    return _identity(_deserialize_or_deny(token))


def parse_token(token: str, discharges: Sequence[str] = ()) -> ParsedToken:
    """Deserialize a token and its bound discharges and parse every first-party caveat (unauthenticated); the
    caller owns the result (it may add caveats to its macaroon).

    Raises:
        Denial: (``token``) malformed token, discharge or caveat.
    """
    return _parse(token, tuple(discharges))


def parse_token_shared(token: str, discharges: Sequence[str] = ()) -> ParsedToken:
    """:func:`parse_token` memoized: the same strings get the same object, shared by every caller — read-only.

    Raises:
        Denial: (``token``) malformed token, discharge or caveat.
    """
    ds = tuple(discharges)
    if isinstance(token, str) and all(isinstance(d, str) for d in ds) \
            and len(token) + sum(map(len, ds)) <= MEMO_MAX_CHARS:
        return _parse_memo(token, ds)
    return _parse(token, ds)


@functools.lru_cache(maxsize=MEMO_ENTRIES)
def _parse_memo(token: str, discharges: tuple[str, ...]) -> ParsedToken:
    return _parse(token, discharges)  # a Denial is raised, never cached


def _parse(token: str, discharges: tuple[str, ...]) -> ParsedToken:
    m = _deserialize_or_deny(token)
    if m.location != LOCATION:
        raise Denial(MALFORMED, f"the token's location is {m.location!r}, not {LOCATION!r}")
    ds = [_deserialize_or_deny(d, "discharge") for d in discharges]
    wanted = {c.caveat_id_bytes: c.location for c in m.caveats if not c.first_party()}
    for d in ds:
        if d.identifier_bytes in wanted and d.location != wanted[d.identifier_bytes]:
            raise Denial(DISCHARGE, f"a discharge says it is from {d.location!r} but answers the caveat of "
                                    f"{wanted[d.identifier_bytes]!r}")
    lines: list[cv.Caveat] = []
    peers: list[str] = []
    per_discharge: list[tuple[str, list[cv.Caveat]]] = []
    for mac in (m, *ds):
        if len(mac.caveats) > MAX_CAVEATS:
            raise Denial(MALFORMED, f"more than {MAX_CAVEATS} caveats")
        mine: list[cv.Caveat] = []
        for c in mac.caveats:
            if c.first_party():
                try:
                    mine.append(cv.parse(c.caveat_id))
                except (InvalidInput, UnicodeDecodeError) as err:
                    raise Denial(MALFORMED, f"unreadable caveat: {err}") from None
            elif mac is m:
                peers.append(str(c.location))
        lines += mine
        if mac is not m:
            per_discharge.append((str(mac.location), mine))
    if len(set(peers)) != len(peers):
        raise Denial(DISCHARGE, f"third-party caveats name the same peer twice: {sorted(peers)}")
    return ParsedToken(identity=_identity(m), macaroon=m, discharges=ds, caveats=lines, peers=peers,
                       discharge_caveats=per_discharge)


def halted(halt_epoch: int) -> CheckResult:
    return CheckResult(allowed=False, caveat=HALTED, reason=f"the network is halted (halt epoch {halt_epoch}); every "
                                                            f"capability check fails until k guardians sign the resume")


def check(parsed: ParsedToken, root_key: bytes | None, state: CheckState, agent_id: str,
          facts: cv.Facts) -> CheckResult:
    """The whole capability check of one parsed token (see the module docstring for the order)."""
    ident = parsed.identity
    base = {"token_id": ident.token_id, "agent_id": ident.agent_id}
    try:
        if state.halt_epoch:
            return halted(state.halt_epoch).model_copy(update=base)
        if root_key is None:
            raise Denial(SIGNATURE, f"unknown root key id {ident.key_id!r}")
        _verify_chain(parsed, root_key)
        if ident.agent_id != agent_id:
            raise Denial(AGENT_MISMATCH, f"the token belongs to agent {ident.agent_id!r}, not {agent_id!r}")
        if state.revoked:
            raise Denial(REVOKED, f"token {ident.token_id} is revoked")
        if ident.epoch < state.revocation_epoch:
            raise Denial(EPOCH, f"the token was minted in revocation epoch {ident.epoch}; tokens older than "
                                f"epoch {state.revocation_epoch} are revoked")
        for peer, lines in parsed.discharge_caveats:
            _bound_to_action(peer, lines, state, facts)
        for c in parsed.caveats:
            why = cv.evaluate(c, facts)
            if why is not None:
                raise Denial(c.text, why)
    except Denial as d:
        return CheckResult(allowed=False, caveat=d.caveat, reason=d.reason, **base)
    return CheckResult(allowed=True, caveats=[c.text for c in parsed.caveats], **base)


def check_token(token: str, discharges: Sequence[str], root_key: bytes | None, state: CheckState, agent_id: str,
                facts: cv.Facts) -> CheckResult:
    """Parse and check in one call; a token that does not parse is denied (``token``), never raised."""
    if state.halt_epoch:
        return halted(state.halt_epoch)
    try:
        parsed = parse_token_shared(token, discharges)
    except Denial as d:
        return CheckResult(allowed=False, caveat=d.caveat, reason=d.reason)
    return check(parsed, root_key, state, agent_id, facts)


def _bound_to_action(peer: str, lines: Sequence[cv.Caveat], state: CheckState, facts: cv.Facts) -> None:
    """A peer's discharge authorises one action (its ``action_digest``) until a near expiry (``valid_until``,
    at most ``discharge_ttl_max`` from now)."""
    digests = [c for c in lines if c.name is cv.CaveatName.ACTION_DIGEST]
    untils = [c.until for c in lines if c.name is cv.CaveatName.VALID_UNTIL and c.until is not None]
    if not digests:
        raise Denial(DISCHARGE, f"peer {peer}'s discharge is not bound to an action (no action_digest caveat); a "
                                f"discharge authorises only the action its peer was shown")
    for c in digests:
        why = cv.evaluate(c, facts)
        if why is not None:
            raise Denial(DISCHARGE_ACTION, f"peer {peer}'s discharge was {why}")
    if not untils:
        raise Denial(DISCHARGE, f"peer {peer}'s discharge has no expiry (valid_until caveat)")
    until = min(untils)
    if state.now >= until:
        raise Denial(DISCHARGE_EXPIRED, f"peer {peer}'s discharge expired at {until.isoformat()}")
    if until - state.now > state.discharge_ttl_max:
        raise Denial(DISCHARGE, f"peer {peer}'s discharge is valid until {until.isoformat()}, longer than the "
                                f"network policy allows (peers.discharge_ttl_max = {state.discharge_ttl_max})")


_Chain = tuple[str, bytes, bytes, tuple[tuple[bytes, bytes | None, str], ...]]
_VERIFIED: OrderedDict[tuple[_Chain, tuple[_Chain, ...], bytes], None] = OrderedDict()
_VERIFIED_LOCK = threading.Lock()  # checks run on the event loop and on the store's check thread


def _verify_chain(parsed: ParsedToken, root_key: bytes) -> None:
    """The HMAC chain of the token and of each discharge bound to it, by pymacaroons' own verifier; a chain that
    verified before with the same contents and the same key bytes is not recomputed (the result cannot differ).

    Caveat meaning is evaluated by :func:`check` (to name the failing one), so here every well-formed
    first-party predicate is accepted; a caveat stripped, changed or reordered breaks the chain.
    """
    try:
        memo = (_chain(parsed.macaroon), tuple(_chain(d) for d in parsed.discharges), bytes(root_key))
    except Exception:  # a macaroon that cannot even be read is verified (and refused) the long way
        memo = None
    with _VERIFIED_LOCK:
        if memo is not None and memo in _VERIFIED:
            _VERIFIED.move_to_end(memo)
            return
    _verify_chain_uncached(parsed, root_key)
    if memo is not None and _size(memo[0]) + sum(map(_size, memo[1])) <= MEMO_MAX_CHARS:
        with _VERIFIED_LOCK:
            _VERIFIED[memo] = None
            while len(_VERIFIED) > MEMO_ENTRIES:
                _VERIFIED.popitem(last=False)


def _chain(m: Macaroon) -> _Chain:
    """Everything of a macaroon its HMAC verification reads (as bytes/str, so equal means equal)."""
    return (m.location, m.identifier_bytes, m.signature_bytes,
            tuple((c.caveat_id_bytes, c.verification_key_id, c.location) for c in m.caveats))


def _size(chain: _Chain) -> int:
    _location, identifier, _signature, caveats = chain
    return len(identifier) + sum(len(cid) + len(vid or b"") for cid, vid, _loc in caveats)


def _verify_chain_uncached(parsed: ParsedToken, root_key: bytes) -> None:
    by_id = {d.identifier_bytes: d for d in parsed.discharges}
    for c in parsed.macaroon.caveats:
        if not c.first_party() and c.caveat_id_bytes not in by_id:
            raise Denial(DISCHARGE, f"no discharge from peer {c.location!r}")
    v = Verifier()
    v.satisfy_general(lambda _predicate: True)
    try:
        ok = v.verify(parsed.macaroon, root_key, parsed.discharges)
    except MacaroonException as err:
        raise Denial(SIGNATURE, f"the token's signature chain does not verify ({type(err).__name__})") from None
    except Exception as err:
        raise Denial(SIGNATURE, f"the token does not verify ({type(err).__name__})") from None
    if ok is not True:
        raise Denial(SIGNATURE, "the token's signature chain does not verify")


def _deserialize(token: str) -> Macaroon:
    try:
        return _deserialize_or_deny(token)
    except Denial as d:
        raise InvalidInput(f"token: {d.reason}") from None


def _deserialize_or_deny(token: str, what: str = "token") -> Macaroon:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
        raise Denial(MALFORMED, f"the {what} is empty or longer than {MAX_TOKEN} characters")
    try:
        m = Macaroon.deserialize(token)
        _ = (m.identifier_bytes, m.signature_bytes, [(c.caveat_id_bytes, c.first_party()) for c in m.caveats])
        canonical = m.serialize() == token
    except Exception as err:
        raise Denial(MALFORMED, f"the {what} does not parse ({type(err).__name__})") from None
    if not canonical:
        # Only the canonical encoding is accepted, so no two strings are the same token (and fields that the
        # HMAC does not cover cannot be varied unnoticed).
        raise Denial(MALFORMED, f"the {what} is not in canonical form (re-encoded, padded or altered)")
    return m


def _identity(m: Macaroon) -> TokenIdentity:
    try:
        match = IDENTIFIER.fullmatch(m.identifier_bytes.decode())
    except UnicodeDecodeError:
        match = None
    if match is None:
        raise Denial(MALFORMED, "the identifier is not a Westworld token identifier")
    return TokenIdentity(key_id=match[1], token_id=match[2], agent_id=match[3], epoch=int(match[4]))
