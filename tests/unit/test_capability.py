"""Caveat grammar and the capability check: properties over generated caveats, targets and times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymacaroons import Macaroon

from westworld import capability as cap
from westworld import caveats as cv
from westworld.errors import InvalidInput

KEY = bytes(range(32))
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IDENT = cap.TokenIdentity(key_id="k1", token_id="t1", agent_id="router", epoch=3)
ACTIONS = ["set_version", "set_config", "restart"]
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12).filter(
    lambda s: s[0].isalnum())


def token(*lines: str) -> str:
    return cap.attenuate(cap.mint(KEY, IDENT, ACTIONS), list(lines))


def facts(n: int, live: int = 1000, action: str = "set_version", now: datetime = NOW,
          usage: dict[int, int] | None = None, region: str = "eu") -> cv.Facts:
    return cv.Facts(action=action, targets=[cv.Target(node_id=f"n{i}", region=region) for i in range(n)],
                    live_nodes=live, now=now, window_usage=usage or {})


def decide(tok: str, f: cv.Facts, **state: object) -> cap.CheckResult:
    st_ = cap.CheckState.model_validate({"live_nodes": f.live_nodes, "now": f.now, "revocation_epoch": 3, **state})
    return cap.check_token(tok, [], KEY, st_, "router", f)


caveat_lines = st.one_of(
    st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=3).map(lambda a: f"actions = {','.join(a)}"),
    st.integers(0, 10_000).map(lambda n: f"affects_nodes_le = {n}"),
    st.floats(0, 100, allow_nan=False).map(lambda p: f"affects_network_pct_le = {p!r}"),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1)).map(  # noqa: DTZ001 - UTC, naive
        lambda d: f"valid_until = {d.strftime('%Y-%m-%dT%H:%M:%SZ')}"),
    st.lists(names, min_size=1, max_size=4).map(lambda a: f"nodes = {','.join(a)}"),
    st.lists(names, min_size=1, max_size=4).map(lambda a: f"regions = {','.join(a)}"),
    st.tuples(st.integers(0, 10_000), st.integers(1, 86_400)).map(lambda b: f"budget = {b[0]}/{b[1]}s"),
)


@given(caveat_lines)
def test_a_caveat_round_trips_through_its_canonical_text(line: str) -> None:
    c = cv.parse(line)
    assert cv.parse(c.text) == c


@given(st.integers(0, 300), st.integers(0, 300))
def test_affects_nodes_le_allows_exactly_up_to_the_limit(limit: int, n: int) -> None:
    result = decide(token(f"affects_nodes_le = {limit}"), facts(n))
    assert result.allowed == (n <= limit)
    if not result.allowed:
        assert result.caveat == f"affects_nodes_le = {limit}" and f"touches {n} nodes" in result.reason


@given(st.floats(0, 100, allow_nan=False), st.integers(0, 200), st.integers(1, 5000))
def test_network_share_is_measured_against_the_live_node_count(pct: float, n: int, live: int) -> None:
    result = decide(token(f"affects_network_pct_le = {pct!r}"), facts(n, live=live))
    assert result.allowed == (100.0 * n / live <= pct)


def test_network_share_with_no_live_nodes_is_denied() -> None:
    result = decide(token("affects_network_pct_le = 100.0"), facts(1, live=0))
    assert not result.allowed and "live node count is unknown" in result.reason


@given(st.integers(-10_000, 10_000))
def test_valid_until_is_strictly_before(offset_s: int) -> None:
    until = NOW.replace(second=0) + timedelta(minutes=5)
    now = until + timedelta(seconds=offset_s)
    result = decide(token(f"valid_until = {until.strftime('%Y-%m-%dT%H:%M:%SZ')}"), facts(1, now=now))
    assert result.allowed == (now < until)


@given(st.integers(0, 500), st.integers(0, 500))
def test_budget_counts_the_usage_in_its_window(budget: int, used: int) -> None:
    result = decide(token(f"budget = {budget}/3600s"), facts(1, usage={3600: used}))
    assert result.allowed == (used <= budget)


def test_budget_without_a_usage_figure_fails_closed() -> None:
    result = decide(token("budget = 10/60s"), facts(1))
    assert not result.allowed and "no usage figure" in result.reason


@given(st.lists(caveat_lines, max_size=5), st.lists(caveat_lines, min_size=1, max_size=3),
       st.integers(0, 50), st.sampled_from(ACTIONS))
@settings(max_examples=200)
def test_attenuation_only_narrows(base: list[str], extra: list[str], n: int, action: str) -> None:
    f = facts(n, action=action, usage=_usage(base + extra, n))
    narrowed = decide(token(*base, *extra), f)
    if narrowed.allowed:
        assert decide(token(*base), f).allowed


def _usage(lines: list[str], n: int) -> dict[int, int]:
    return {c.window_s: n for c in map(cv.parse, lines) if c.name is cv.CaveatName.BUDGET}


@given(st.lists(caveat_lines, min_size=1, max_size=6), st.integers(0, 50))
def test_a_denial_names_the_first_failing_caveat(lines: list[str], n: int) -> None:
    f = facts(n, usage=_usage(lines, n))
    result = decide(token(*lines), f)
    failing = [c.text for c in map(cv.parse, ["actions = restart,set_config,set_version", *lines])
               if cv.evaluate(c, f) is not None]
    assert result.allowed == (not failing)
    if failing:
        assert result.caveat == failing[0]


def test_scopes_name_the_nodes_outside() -> None:
    res = decide(token("nodes = n0,n1"), facts(3))
    assert (res.allowed, res.caveat) == (False, "nodes = n0,n1") and "n2" in res.reason
    res = decide(token("regions = us"), facts(1, region="eu"))
    assert (res.allowed, res.caveat) == (False, "regions = us") and "n0@eu" in res.reason
    assert decide(token("regions = eu,us"), facts(4)).allowed


def test_actions_are_the_intersection_of_every_actions_caveat() -> None:
    tok = token("actions = set_version,restart", "actions = restart")
    assert decide(tok, facts(1, action="restart")).allowed
    res = decide(tok, facts(1, action="set_version"))
    assert (res.allowed, res.caveat) == (False, "actions = restart")


def test_revocation_and_epoch_and_agent_and_halt() -> None:
    tok = token()
    assert decide(tok, facts(1)).allowed
    assert decide(tok, facts(1), revoked=True).caveat == cap.REVOKED
    assert decide(tok, facts(1), revocation_epoch=4).caveat == cap.EPOCH
    assert decide(tok, facts(1), halt_epoch=7).caveat == cap.HALTED
    other = cap.CheckState(live_nodes=1000, now=NOW, revocation_epoch=3)
    assert cap.check_token(tok, [], KEY, other, "mallory", facts(1)).caveat == cap.AGENT_MISMATCH
    assert cap.check_token(tok, [], None, other, "router", facts(1)).caveat == cap.SIGNATURE


@pytest.mark.parametrize(("line", "message"), [
    ("affects_nodes_le", "expected 'name = value'"),
    ("owner = me", "unknown caveat 'owner'"),
    ("affects_nodes_le = -1", "whole number"),
    ("affects_network_pct_le = 101", "within 0..100"),
    ("affects_network_pct_le = nan", "within 0..100"),
    ("valid_until = tomorrow", "ISO-8601"),
    ("valid_until = 2026-01-01T00:00:00", "carry its zone"),
    ("budget = 10", "'<nodes>/<seconds>s'"),
    ("budget = 10/0s", "'<nodes>/<seconds>s'"),
    ("nodes = a,,b", "not a valid nodes entry"),
])
def test_bad_caveats_are_refused_with_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(InvalidInput, match="caveat .*" + message.replace("(", r"\(").replace(")", r"\)")):
        cv.parse(line)
    with pytest.raises(InvalidInput):
        token(line)


def test_an_unknown_caveat_inside_a_token_fails_closed() -> None:
    m = Macaroon.deserialize(token())
    m.add_first_party_caveat("owner = me")
    res = decide(m.serialize(), facts(1))
    assert (res.allowed, res.caveat) == (False, cap.MALFORMED) and "unknown caveat" in res.reason


def test_mint_refuses_bad_agent_ids_and_empty_actions() -> None:
    with pytest.raises(InvalidInput, match="agent id"):
        cap.mint(KEY, cap.TokenIdentity(key_id="k", token_id="t", agent_id="a b", epoch=0), ["restart"])
    with pytest.raises(InvalidInput, match="at least one allowed action"):
        cap.mint(KEY, IDENT, [])
