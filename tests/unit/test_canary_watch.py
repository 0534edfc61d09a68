"""Canary rules for the samples seen between two analyses: how one evaluation is judged, and when a breach is
confirmed (the spec's ``failure_limit`` failing samples in a row are tolerated, one more is a breach)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from westworld.canary import Decision, Measurement, confirmed_breach, sample_row
from westworld.experiment import MetricSpec, Threshold

ERRORS = MetricSpec(name="errors", query="sum(rate(e{selector}[3s]))", threshold=Threshold(max=0.5), tolerance=0.5)
NOISY = MetricSpec(name="noisy", query="sum(rate(n{selector}[3s]))", threshold=Threshold(max=0.5), failure_limit=2,
                   compare_to_baseline=False)


def sample(errors: bool | None, noisy: bool | None = True) -> list[Measurement]:
    def one(m: MetricSpec, ok: bool | None) -> Measurement:
        value = None if ok is None else (0.0 if ok else 1.0)
        return Measurement(metric=m.name, canary=value, stable=0.0, ok=ok, reason="" if ok is not False else "bad")
    return [one(ERRORS, errors), one(NOISY, noisy)]


def test_sample_row_judges_against_the_stable_query_or_the_reference() -> None:
    row = sample_row([ERRORS], {"errors.canary": 0.2, "errors.stable": 0.0}, {})
    assert row[0].ok is False and "on the canary vs 0 on stable nodes" in row[0].reason
    assert sample_row([ERRORS], {"errors.canary": 0.2, "errors.stable": 0.2}, {})[0].ok is True
    # No stable nodes left (the last step): the stable value seen earlier is the reference.
    assert sample_row([ERRORS], {"errors.canary": 0.2}, {"errors": 0.0})[0].ok is False
    assert sample_row([ERRORS], {"errors.canary": 0.2}, {})[0].ok is True
    assert sample_row([ERRORS], {}, {})[0].ok is None  # no value: not a failure


def test_one_failing_sample_is_a_breach_when_the_spec_tolerates_none() -> None:
    assert confirmed_breach([ERRORS, NOISY], [sample(True), sample(True)]) is None
    breach = confirmed_breach([ERRORS, NOISY], [sample(True), sample(False)])
    assert breach is not None and breach.decision is Decision.ROLLBACK
    assert breach.reasons == ["bad (1 failed measurement(s) in a row after fresh scrapes; 0 tolerated)"]


def test_a_tolerant_metric_needs_its_limit_plus_one_failures_in_a_row() -> None:
    assert confirmed_breach([NOISY], [sample(True, False), sample(True, False)]) is None
    assert confirmed_breach([NOISY], [sample(True, False), sample(True, True), sample(True, False),
                                      sample(True, False)]) is None  # a good sample in between: not in a row
    assert confirmed_breach([NOISY], [sample(True, False), sample(True, None), sample(True, False),
                                      sample(True, False)]) is None  # nor a missing value
    breach = confirmed_breach([NOISY], [sample(True, False)] * 3)
    assert breach is not None and breach.failures == {"noisy": 3}


@given(st.lists(st.sampled_from([True, False, None]), max_size=30), st.integers(min_value=0, max_value=5))
def test_a_breach_is_exactly_a_trailing_run_longer_than_the_limit(oks: list[bool | None], limit: int) -> None:
    metric = NOISY.model_copy(update={"failure_limit": limit})
    trailing = 0
    for ok in reversed(oks):
        if ok is not False:
            break
        trailing += 1
    breach = confirmed_breach([metric], [sample(True, ok) for ok in oks])
    assert (breach is not None) == (trailing > limit)
