"""What the anomaly watch's ``reconfigure`` validator refuses (westworld.anomaly.config_problems)."""

from __future__ import annotations

from datetime import timedelta

from westworld.anomaly import AnomalyConfig, config_problems

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
