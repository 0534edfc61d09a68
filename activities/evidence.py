"""Evidence storage: an experiment's bundle as JSON plus one PNG per metric (baseline vs treatment, chaos shaded),
under ``<data dir>/evidence/<experiment>/<bundle hash>/``.

Content-addressed and idempotent: a folder that already holds the bundle with that hash is returned as is;
a new one is written to a temporary folder and renamed into place, so a crash never leaves half a bundle.
Plots use matplotlib's object API with the Agg canvas (no pyplot global state), safe on the worker's threads.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from temporalio import activity

from westworld.errors import InvalidInput
from westworld.evidence import EvidenceBundle, EvidenceInput, EvidenceRef, bundle_hash
from westworld.experiment import NAME_PATTERN, ExperimentSpec

COLORS = {"baseline": "#1f77b4", "treatment": "#d62728"}


class EvidenceActivities:
    """Built with the folder evidence is stored under (``<data dir>/evidence``)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    @activity.defn(name="store_evidence")
    def store_evidence(self, inp: EvidenceInput) -> EvidenceRef:
        """Store the bundle and its plots; returns the content hash and where they are."""
        bundle = inp.bundle
        if not re.match(NAME_PATTERN, bundle.experiment):
            raise InvalidInput(f"experiment name {bundle.experiment!r} is not a DNS label")
        digest = bundle_hash(bundle)
        final = self._root / bundle.experiment / digest
        if (final / "bundle.json").exists():
            return self._ref(digest, final)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=final.parent))
        try:
            (tmp / "bundle.json").write_text(json.dumps(bundle.model_dump(mode="json"), indent=2, sort_keys=True))
            for name, png in render_plots(bundle).items():
                (tmp / f"{name}.png").write_bytes(png)
            try:
                tmp.rename(final)
            except OSError:
                if not (final / "bundle.json").exists():  # another attempt won the race: keep its copy
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self._ref(digest, final)

    @staticmethod
    def _ref(digest: str, folder: Path) -> EvidenceRef:
        return EvidenceRef(hash=digest, path=str(folder), url=folder.resolve().as_uri(),
                           files=sorted(p.name for p in folder.iterdir()))


def render_plots(bundle: EvidenceBundle) -> dict[str, bytes]:
    """One PNG per metric: each arm's series over the run, the chaos windows shaded, the threshold drawn."""
    spec = ExperimentSpec.model_validate(bundle.spec)
    by_metric: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(dict)
    for s in bundle.series:
        by_metric[s.query][s.key] = [((p.at - bundle.started_at).total_seconds(), p.value)
                                     for p in s.points if p.value is not None]
    verdicts = {m.name: m for m in bundle.judgement.metrics}
    windows = _chaos_windows(bundle)
    out: dict[str, bytes] = {}
    for metric in spec.spec.metrics:
        fig = Figure(figsize=(8, 3.6), dpi=100)
        ax = fig.add_subplot()
        for arm, points in sorted(by_metric.get(metric.name, {}).items()):
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, label=arm, color=COLORS.get(arm))
        for (start, end), label in windows:
            ax.axvspan(start, end, color="orange", alpha=0.15)
            ax.text(start, 1.0, label, transform=ax.get_xaxis_transform(), fontsize=7, va="top")
        if metric.threshold is not None:
            for bound in (metric.threshold.max, metric.threshold.min):
                if bound is not None:
                    ax.axhline(bound, color="gray", linestyle="--", linewidth=1, label="threshold")
        j = verdicts.get(metric.name)
        ax.set_title(f"{bundle.experiment}: {metric.name} — {j.status.value if j else '?'} "
                     f"({metric.direction.value} is better)", fontsize=9)
        ax.set_xlabel("seconds since start")
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        out[metric.name] = buf.getvalue()
    return out


def _chaos_windows(bundle: EvidenceBundle) -> list[tuple[tuple[float, float], str]]:
    starts: dict[str, tuple[float, str]] = {}
    windows: list[tuple[tuple[float, float], str]] = []
    end = (bundle.ended_at - bundle.started_at).total_seconds()
    for e in bundle.chaos_timeline:
        if e.action == "applied":
            starts.setdefault(e.fault_id, (e.offset_s, e.kind))
        elif e.action == "cleared" and e.fault_id in starts:
            s, kind = starts.pop(e.fault_id)
            windows.append(((s, e.offset_s), kind))
    windows += [((s, end), kind) for s, kind in starts.values()]
    # Both arms get each fault at the same offsets: draw each window once.
    unique: dict[tuple[str, int, int], tuple[tuple[float, float], str]] = {}
    for (begin, finish), kind in windows:
        unique.setdefault((kind, round(begin), round(finish)), ((begin, finish), kind))
    return sorted(unique.values())
