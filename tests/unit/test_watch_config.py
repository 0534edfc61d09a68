"""What the anomaly watch's ``reconfigure`` validator refuses: unusable settings (westworld.anomaly.config_problems),
settings looser than the policy, and changes without the signatures entitled to them (westworld/authority.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from hypothesis import given
from hypothesis import strategies as st

from westworld import authority
from westworld.anomaly import AnomalyConfig, config_problems
from westworld.errors import Unauthorised
from westworld.peers import public_key_of
from westworld.policy import NetworkPolicy, WatchPolicy

POLL = timedelta(seconds=15)


def test_the_production_defaults_are_sound() -> None:
    assert config_problems(AnomalyConfig(), POLL) == []


def test_each_problem_is_named() -> None:
    cfg = AnomalyConfig(short_window=timedelta(hours=2), long_window=timedelta(hours=1), coverage_warn_pct=0,
                        concentration_warn_pct=30, rate_warn=200, denials_warn=50)
    assert config_problems(cfg, timedelta(hours=3)) == [
        "coverage_warn_pct must be > 0",
        "concentration_warn_pct (30) must not exceed concentration_critical_pct (20)",
        "rate_warn (200) must not exceed rate_high (100)",
        "denials_warn (50) must not exceed denials_high (20)",
        "short_window (2:00:00) must not exceed long_window (1:00:00)",
        "poll_interval (3:00:00) must not exceed short_window (2:00:00)",
    ]


def test_a_poll_of_zero_is_refused() -> None:
    assert config_problems(AnomalyConfig(), timedelta(0)) == ["poll_interval must be > 0"]


# --- who may change the watch (westworld/authority.py) ---------------------------------------------------------
POLICY = WatchPolicy()
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
pcts = st.floats(min_value=0.01, max_value=10_000, allow_nan=False)
counts = st.integers(min_value=1, max_value=100_000)


def key() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@given(cov=pcts, conc=pcts, rate=counts, den=counts, poll=st.integers(1, 10_000), k=st.integers(1, 64))
def test_a_start_input_is_never_looser_than_the_policy(cov: float, conc: float, rate: int, den: int, poll: int,
                                                        k: int) -> None:
    cfg = AnomalyConfig(coverage_critical_pct=cov, concentration_critical_pct=conc, rate_high=rate, denials_high=den)
    out, out_poll, out_k = authority.clamp_to_policy(cfg, timedelta(seconds=poll), k, POLICY)
    assert authority.looser_than_policy(out, out_poll, out_k, POLICY) == []
    assert out.coverage_critical_pct == min(cov, POLICY.coverage_critical_pct_max)  # stricter asks are kept
    assert out_k == max(k, POLICY.guardians_required_min)


@given(pct=st.floats(min_value=0.01, max_value=20.0), poll=st.integers(1, 15))
def test_only_a_change_that_loosens_needs_guardians(pct: float, poll: int) -> None:
    old = AnomalyConfig()
    new = old.model_copy(update={"concentration_critical_pct": pct})
    loosens = authority.loosened(old, POLL, 2, new, timedelta(seconds=poll), 2)
    assert loosens == ([] if pct <= 20.0 else ["concentration_critical_pct"])
    back = authority.loosened(new, timedelta(seconds=poll), 2, old, POLL, 2)
    assert ("concentration_critical_pct" in back) == (pct < 20.0)
    assert ("poll_interval" in back) == (poll < 15)
    required = authority.watch_authority(back, NetworkPolicy(), 2)
    assert required.authority is (authority.Authority.GUARDIANS if back else authority.Authority.OPERATOR)


def test_signatures_bind_the_change_the_target_the_nonce_and_the_expiry() -> None:
    op = key()
    signers = authority.AdminSigners(operators={"op": public_key_of(op)})
    expires = NOW + timedelta(minutes=10)
    digest = authority.change_digest("watch.reconfigure", "anomaly-watch", {"a": 1}, "0", expires)
    signed = authority.SignedBy(expires_at=expires, signatures=[authority.sign(op, digest)])
    one_operator = authority.Required(authority.Authority.OPERATOR)
    assert authority.authorise("x", digest, signed, one_operator, signers, NOW) == ["op"]
    for other in (authority.change_digest("watch.reconfigure", "anomaly-watch", {"a": 2}, "0", expires),
                  authority.change_digest("watch.reconfigure", "anomaly-watch-2", {"a": 1}, "0", expires),
                  authority.change_digest("watch.reconfigure", "anomaly-watch", {"a": 1}, "1", expires),
                  authority.change_digest("watch.stop", "anomaly-watch", {"a": 1}, "0", expires)):
        with pytest.raises(Unauthorised, match="does not verify over this change"):
            authority.authorise("x", other, signed, one_operator, signers, NOW)
    with pytest.raises(Unauthorised, match="expired"):
        authority.authorise("x", digest, signed, one_operator, signers, expires + timedelta(seconds=1))
    far = NOW + authority.MAX_LIFETIME + timedelta(minutes=1)
    with pytest.raises(Unauthorised, match="more than 1 day"):
        authority.authorise("x", digest, authority.SignedBy(expires_at=far, signatures=signed.signatures),
                            one_operator, signers, NOW)
    guardians = authority.Required(authority.Authority.GUARDIANS, 2)
    with pytest.raises(Unauthorised, match="not a registered guardian"):
        authority.authorise("x", digest, signed, guardians, signers, NOW)
    g = [key(), key()]
    two = authority.AdminSigners(guardians={"g0": public_key_of(g[0]), "g1": public_key_of(g[1])})
    twice = authority.SignedBy(expires_at=expires, signatures=[authority.sign(g[0], digest)] * 2)
    with pytest.raises(Unauthorised, match="g0 signed twice"):
        authority.authorise("x", digest, twice, guardians, two, NOW)
    one = authority.SignedBy(expires_at=expires, signatures=[authority.sign(g[1], digest)])
    with pytest.raises(Unauthorised, match="needs 2 registered guardians, has 1"):
        authority.authorise("x", digest, one, guardians, two, NOW)
