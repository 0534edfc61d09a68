"""store_evidence: the bundle and one PNG per metric under the bundle's content hash; idempotent; refuses a bad name."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.evidence import EvidenceActivities
from tests.fixtures.activity_env import InterceptedEnvironment
from westworld.evidence import ChaosEvent, EvidenceBundle, EvidenceInput, bundle_hash
from westworld.experiment import load_spec
from westworld.judge import MetricSamples, judge
from westworld.series import Point, Series

GOOD = Path(__file__).parents[2] / "deploy" / "experiments" / "good.yaml"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def bundle() -> EvidenceBundle:
    spec = load_spec(GOOD.read_text())
    series, samples = [], {}
    for m in spec.spec.metrics:
        base = [0.01 + 0.001 * (i % 3) for i in range(10)]
        treat = [v * 1.02 for v in base]
        samples[m.name] = MetricSamples(baseline=base, treatment=treat)
        for arm, values in (("baseline", base), ("treatment", treat)):
            series.append(Series(query=m.name, key=arm, points=[
                Point(at=T0 + timedelta(seconds=3 * i), value=v) for i, v in enumerate(values)]))
    return EvidenceBundle(
        experiment=spec.name, spec_hash=spec.spec_hash(), spec=spec.model_dump(mode="json", by_alias=True),
        started_at=T0, ended_at=T0 + timedelta(seconds=30), series=series,
        chaos_timeline=[ChaosEvent(fault_id="f0", kind="latency", action="applied", offset_s=6, arm="treatment"),
                        ChaosEvent(fault_id="f0", kind="latency", action="cleared", offset_s=15, arm="treatment")],
        judgement=judge(spec.spec.metrics, samples, spec.spec.judge))


def test_bundle_and_plots_stored_under_their_hash_once(tmp_path: Path) -> None:
    acts = EvidenceActivities(tmp_path / "evidence")
    b = bundle()
    ref = InterceptedEnvironment().run(acts.store_evidence, EvidenceInput(bundle=b))
    assert ref.hash == bundle_hash(b) and Path(ref.path) == tmp_path / "evidence" / b.experiment / ref.hash
    assert ref.files == ["bundle.json", "delivery_ratio.png", "p95_latency_seconds.png",
                         "relay_errors_per_second.png"]
    for name in ref.files[1:]:
        png = Path(ref.path, name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    stored = json.loads(Path(ref.path, "bundle.json").read_text())
    assert EvidenceBundle.model_validate(stored).digest() == ref.hash
    mtime = Path(ref.path, "bundle.json").stat().st_mtime_ns
    again = InterceptedEnvironment().run(acts.store_evidence, EvidenceInput(bundle=b))
    assert again == ref and Path(ref.path, "bundle.json").stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "evidence" / b.experiment).iterdir()] == [ref.hash]  # no partial folder


def test_a_different_bundle_gets_another_folder(tmp_path: Path) -> None:
    acts = EvidenceActivities(tmp_path)
    b = bundle()
    other = b.model_copy(update={"ended_at": b.ended_at + timedelta(seconds=1)})
    assert InterceptedEnvironment().run(acts.store_evidence, EvidenceInput(bundle=b)).hash != \
        InterceptedEnvironment().run(acts.store_evidence, EvidenceInput(bundle=other)).hash


def test_a_name_that_is_not_a_dns_label_is_refused(tmp_path: Path) -> None:
    b = bundle().model_copy(update={"experiment": "../escape"})
    with pytest.raises(ApplicationError, match="not a DNS label") as exc:
        InterceptedEnvironment().run(EvidenceActivities(tmp_path).store_evidence, EvidenceInput(bundle=b))
    assert exc.value.type == "InvalidInput" and exc.value.non_retryable
    assert not any(tmp_path.iterdir())
