"""The Anti-Delos charter as policy code: which metrics may leave a node, under which labels, for how long, with
whose consent; what is never collected; how identifiers are pseudonymised; who decides on violations.

``load_charter(bytes)`` reads the file with the safe loader (``westworld/documents.py``) and raises one
:class:`CharterInvalid` listing EVERY problem with its path and line (``spec.metrics[2].name: 'user_location' is
blocked (category location, pattern '*location*')``). The file's hash (:func:`charter_hash`, SHA-256 of its bytes)
is what the DAO puts on chain: a charter whose hash is not there is not in force.

:class:`Whitelist` is the one decision every enforcement layer takes (the kernel's map is filled from
:meth:`Whitelist.kernel_names`, the userspace gate calls :meth:`Whitelist.judge`, the scrape relabelling is built
from the same metrics). Metric names count only as written: ASCII ``[a-z_:][a-z0-9_:]*``. ``Link_Quality`` or a
Cyrillic a (U+0430) in place of the Latin one is refused, never folded into an allowed name.

Identifiers are pseudonymised with a keyed HMAC-SHA256 (a bare hash of a node id or address is reversed by hashing
every candidate); the key is passed in by the caller and never lives here; its epoch is part of the pseudonym, so
a rotated key yields visibly different pseudonyms.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Set
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from westworld.documents import parse_document
from westworld.errors import CharterInvalid, InvalidInput
from westworld.experiment import _line_of

METRIC_NAME = re.compile(r"[a-z_:][a-z0-9_:]*")
LABEL_NAME = re.compile(r"[a-z_][a-z0-9_]*")
PATTERN = re.compile(r"[a-z0-9_:*]+")
MAX_NAME = 128  # longer names are refused (the kernel filter reads at most this many bytes of a name)
REQUIRED_CATEGORIES = ("identity", "location", "browsing", "content")  # a charter without them is refused
HARD_THRESHOLD_MIN = 2  # no charter lets one committee member decide alone
ADDRESS = r"^0x[0-9a-fA-F]{40}$"
_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AllowedMetric(_Strict):
    name: str = Field(description="Prometheus metric name, ASCII [a-z_:][a-z0-9_:]*.")
    purpose: str = Field(min_length=1, max_length=500, description="Why it is collected, in words a user reads.")
    labels: tuple[str, ...] = Field(default=(), description="Labels kept; every other label is stripped.")
    retention_days: int = Field(ge=1, le=3650)
    consent_required: bool = Field(False, description="Collected only for subjects who consented (EIP-712).")
    granularity_seconds: int = Field(60, ge=1, le=86_400, description="Finest sampling interval kept.")


class BlockedCategory(_Strict):
    category: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    description: str = ""
    patterns: tuple[str, ...] = Field(min_length=1, description="Globs (*) over metric and label names.")


class Pseudonymisation(_Strict):
    labels: tuple[str, ...] = Field(default=("node", "user"), description="Label values replaced by pseudonyms.")
    key_epoch: int = Field(1, ge=1, description="Epoch of the HMAC key in force; rotation bumps it.")
    rotate_days: int = Field(90, ge=1, le=3650)


class Consent(_Strict):
    subject_label: str = Field("user", description="The label naming the data subject (an address).")


class CommitteeMember(_Strict):
    address: str = Field(pattern=ADDRESS)
    role: str = Field(pattern=r"^(dao|researcher)$")
    name: str = Field("", max_length=80)


class Committee(_Strict):
    members: tuple[CommitteeMember, ...] = Field(min_length=1)
    threshold: int = Field(5, ge=1, description="k: signatures needed to decide a case (k-of-n).")


class Reports(_Strict):
    """Anonymous violation reports: the spam brakes (GlobaLeaks-style) and the key reports are sealed to."""

    pow_bits: int = Field(18, ge=8, le=28, description="Leading zero bits of a report's hashcash proof of work.")
    per_hour: int = Field(30, ge=1, le=10_000, description="Reports the intake accepts per hour, from everyone.")
    committee_public_key: str = Field("", pattern=r"^([0-9a-f]{64})?$",
                                      description="The committee's X25519 public key (hex) reports are sealed to.")


class CharterSpec(_Strict):
    metrics: tuple[AllowedMetric, ...] = Field(min_length=1)
    blocked: tuple[BlockedCategory, ...] = Field(min_length=1)
    pseudonymisation: Pseudonymisation = Field(default_factory=Pseudonymisation)
    consent: Consent = Field(default_factory=Consent)
    committee: Committee
    reports: Reports = Field(default_factory=Reports)


class CharterMetadata(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
    version: int = Field(ge=1)


class Charter(_Strict):
    api_version: str = Field("westworld/v1", alias="apiVersion")
    kind: str = Field("Charter", pattern=r"^Charter$")
    metadata: CharterMetadata
    spec: CharterSpec

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def metric(self, name: str) -> AllowedMetric | None:
        return next((m for m in self.spec.metrics if m.name == name), None)

    def whitelist(self) -> Whitelist:
        return Whitelist(self)


# -- loading and validation ---------------------------------------------------------------------------------

def charter_hash(content: bytes) -> str:
    """Hex SHA-256 of the charter file's bytes, as the DAO puts it on chain (no normalisation: the bytes in force
    are the bytes voted on)."""
    return hashlib.sha256(content).hexdigest()


def load_charter(content: bytes | str, source: str = "charter.yaml") -> Charter:
    """Parse and validate a charter (YAML or JSON). Raises CharterInvalid listing every problem."""
    try:
        doc = parse_document(content, source)
    except InvalidInput as err:
        raise CharterInvalid(err.message) from err
    return parse_charter(doc.data, doc.root)


def parse_charter(data: Any, root: yaml.Node | None = None) -> Charter:
    """Validate already-parsed data. Raises CharterInvalid listing every problem: the model's, and the rules
    across fields checked on every part that is itself well formed (a bad metric does not hide a blocked one)."""
    if not isinstance(data, dict):
        raise CharterInvalid(f"(top): expected a mapping with metadata and spec, got {type(data).__name__}")
    problems: list[tuple[tuple[str | int, ...], str]] = []
    charter: Charter | None = None
    try:
        charter = Charter.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        deeper = {tuple(e["loc"][:-1]) for e in errors if len(e["loc"]) > 1}
        for e in errors:
            loc = tuple(e["loc"])
            if e["type"] == "too_short" and any(d[:len(loc)] == loc and len(d) > len(loc) for d in deeper):
                continue  # "at least 1 item, not 0" only because its items failed: those are reported
            msg = "unknown field" if e["type"] == "extra_forbidden" else \
                "required" if e["type"] == "missing" else str(e["msg"]).removeprefix("Value error, ")
            problems.append((loc, msg))
    problems += rule_problems(_Parts.of(data))
    if problems:
        seen: set[tuple[tuple[str | int, ...], str]] = set()
        lines = []
        for path, msg in problems:
            if (path, msg) in seen:
                continue
            seen.add((path, msg))
            line = _line_of(path, root)
            lines.append(f"  {_path(path)}{f' (line {line})' if line else ''}: {msg}")
        raise CharterInvalid(f"{len(lines)} problem(s) in the charter:\n" + "\n".join(lines))
    assert charter is not None
    return charter


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _path(path: tuple[str | int, ...]) -> str:
    """``spec.metrics[2].name``; a key that is not plain is quoted (``spec['\\r']``): one problem, one line."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _PLAIN_KEY.fullmatch(p):
            out += f".{p}" if out else p
        else:
            out += f"[{p!r}]"
    return out or "(top)"


class _Parts:
    """The well-formed parts of a charter document, read leniently for the rules across fields."""

    def __init__(self) -> None:
        self.metrics: list[tuple[int, AllowedMetric]] = []
        self.names: list[tuple[int, str]] = []  # every metric's name that is a string, well-formed metric or not
        self.blocked: list[tuple[int, BlockedCategory]] = []
        self.blocked_given = False
        self.pseudonymisation: Pseudonymisation | None = Pseudonymisation()
        self.consent: Consent | None = Consent()
        self.committee: Committee | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> _Parts:
        parts = cls()
        spec = data.get("spec")
        if not isinstance(spec, dict):
            return parts
        parts.metrics = _each(spec.get("metrics"), AllowedMetric)
        raw = spec.get("metrics")
        raw = raw if isinstance(raw, list) else []
        parts.names = [(i, m["name"]) for i, m in enumerate(raw) if isinstance(m, dict) and isinstance(
            m.get("name"), str)]
        parts.blocked_given = isinstance(spec.get("blocked"), list)
        parts.blocked = _each(spec.get("blocked"), BlockedCategory)
        parts.pseudonymisation = _one(spec.get("pseudonymisation", {}), Pseudonymisation)
        parts.consent = _one(spec.get("consent", {}), Consent)
        parts.committee = _one(spec.get("committee"), Committee)
        return parts


def _each(items: Any, model: type[_M]) -> list[tuple[int, _M]]:
    if not isinstance(items, list):
        return []
    return [(i, m) for i, item in enumerate(items) if (m := _one(item, model)) is not None]


def _one(item: Any, model: type[_M]) -> _M | None:
    try:
        return model.model_validate(item)
    except ValidationError:
        return None


def rule_problems(parts: _Parts) -> list[tuple[tuple[str | int, ...], str]]:
    """The rules across fields: names, blocked patterns, consent, pseudonyms, committee."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    blocked = _patterns(tuple(b for _, b in parts.blocked))
    for i, cat in parts.blocked:
        for j, p in enumerate(cat.patterns):
            if not PATTERN.fullmatch(p):
                out.append((("spec", "blocked", i, "patterns", j), f"{p!r} is not a pattern: a-z, 0-9, _, : and *"))
    cats = [b.category for _, b in parts.blocked]
    if parts.blocked_given:
        for missing in (r for r in REQUIRED_CATEGORIES if r not in cats):
            out.append((("spec", "blocked"), f"must block the {missing!r} category (required by the charter floor)"))
    subject = parts.consent.subject_label if parts.consent else None
    names: dict[str, int] = {}
    for i, name in parts.names:
        if problem := name_problem(name):
            out.append((("spec", "metrics", i, "name"), problem))
        elif hit := _blocked_by(name, blocked):
            out.append((("spec", "metrics", i, "name"), f"{name!r} is blocked (category {hit[0]}, pattern "
                        f"{hit[1]!r})"))
        if name in names:
            out.append((("spec", "metrics", i, "name"), f"{name!r} is listed twice (first at "
                        f"spec.metrics[{names[name]}])"))
        names.setdefault(name, i)
    for i, m in parts.metrics:
        at: tuple[str | int, ...] = ("spec", "metrics", i)
        for j, label in enumerate(m.labels):
            if not LABEL_NAME.fullmatch(label) or label.startswith("__"):
                out.append(((*at, "labels", j), f"{label!r} is not a label name: ASCII [a-z_][a-z0-9_]*, not __*"))
            elif hit := _blocked_by(label, blocked):
                out.append(((*at, "labels", j), f"label {label!r} is blocked (category {hit[0]}, pattern "
                            f"{hit[1]!r})"))
        if len(set(m.labels)) != len(m.labels):
            out.append(((*at, "labels"), "a label is listed twice"))
        if m.consent_required and subject is not None and subject not in m.labels:
            out.append(((*at, "labels"), f"a consent-only metric must keep the subject label {subject!r} "
                        "(spec.consent.subject_label), else consent cannot be checked"))
    if parts.pseudonymisation is not None:
        for j, label in enumerate(parts.pseudonymisation.labels):
            if not LABEL_NAME.fullmatch(label):
                out.append((("spec", "pseudonymisation", "labels", j), f"{label!r} is not a label name"))
        if subject is not None and subject not in parts.pseudonymisation.labels:
            out.append((("spec", "consent", "subject_label"), f"{subject!r} names people: it must be in "
                        "spec.pseudonymisation.labels"))
    if parts.committee is not None:
        out += _committee_problems(parts.committee)
    return out


def _committee_problems(committee: Committee) -> list[tuple[tuple[str | int, ...], str]]:
    out: list[tuple[tuple[str | int, ...], str]] = []
    n = len(committee.members)
    if committee.threshold > n:
        out.append((("spec", "committee", "threshold"), f"{committee.threshold} is more than the {n} members"))
    if committee.threshold < HARD_THRESHOLD_MIN:
        out.append((("spec", "committee", "threshold"), f"{committee.threshold} is under the floor of "
                    f"{HARD_THRESHOLD_MIN}: no member decides alone"))
    seen: dict[str, int] = {}
    for i, member in enumerate(committee.members):
        key = member.address.lower()
        if key in seen:
            out.append((("spec", "committee", "members", i, "address"), f"{member.address} is already member "
                        f"[{seen[key]}]"))
        seen.setdefault(key, i)
    return out


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a metric name that counts, or None. Nothing is folded: case and look-alikes refuse."""
    if not name:
        return "is empty"
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    if not name.isascii():
        return f"{name!r} has non-ASCII characters (look-alikes are refused, never normalised)"
    if not METRIC_NAME.fullmatch(name):
        return f"{name!r} is not a metric name: ASCII [a-z_:][a-z0-9_:]* (upper case is refused, not lowered)"
    return None


def _patterns(blocked: tuple[BlockedCategory, ...]) -> list[tuple[str, str]]:
    return [(b.category, p) for b in blocked for p in b.patterns]


def _blocked_by(name: str, patterns: list[tuple[str, str]]) -> tuple[str, str] | None:
    return next(((cat, p) for cat, p in patterns if fnmatchcase(name, p)), None)


# -- the decision every enforcement layer takes --------------------------------------------------------------

class Verdict(StrEnum):
    KEEP = "keep"
    DROP = "drop"


class Reason(StrEnum):
    KEPT = "kept"
    MALFORMED_NAME = "malformed_name"
    BLOCKED = "blocked"
    NOT_WHITELISTED = "not_whitelisted"
    NO_SUBJECT = "no_subject"
    NO_CONSENT = "no_consent"


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    reason: Reason
    detail: str = ""
    kept_labels: dict[str, str] = Field(default_factory=dict)
    stripped_labels: tuple[str, ...] = ()


class Whitelist:
    """The charter's allowed metrics as a decision: :meth:`judge` keeps or drops one sample."""

    def __init__(self, charter: Charter) -> None:
        self.charter = charter
        self._metrics = {m.name: m for m in charter.spec.metrics}
        self._blocked = _patterns(charter.spec.blocked)
        self.subject_label = charter.spec.consent.subject_label
        self.pseudonymised = frozenset(charter.spec.pseudonymisation.labels)
        # name -> its drop decision (None: the name may be kept). Judging a name against every blocked pattern was
        # most of the gate's time per line; the verdict on a name alone never depends on its labels or consents.
        # Bounded: names a sender makes up past the bound are judged afresh, never remembered.
        self._by_name: dict[str, Decision | None] = {}

    def kernel_names(self) -> tuple[str, ...]:
        """Names the kernel filter lets through (consent is checked by the gate, which knows the subjects)."""
        return tuple(sorted(self._metrics))

    def judge(self, name: str, labels: Mapping[str, str], subject_consents: Set[tuple[str, str]]) -> Decision:
        """Keep or drop one sample named ``name`` with ``labels``; ``subject_consents`` holds (subject address in
        lower case, metric) for every consent in force. Labels not allowed are stripped, never the reason to keep."""
        def drop(reason: Reason, detail: str) -> Decision:
            return Decision(verdict=Verdict.DROP, reason=reason, detail=detail)

        if name in self._by_name:
            dropped = self._by_name[name]
        else:
            dropped = self._judge_name(name)
            if len(self._by_name) < NAME_CACHE:
                self._by_name[name] = dropped
        if dropped is not None:
            return dropped
        metric = self._metrics[name]
        allowed = set(metric.labels)
        kept = {k: v for k, v in labels.items() if k in allowed}
        stripped = tuple(sorted(k for k in labels if k not in allowed))
        if metric.consent_required:
            subject = kept.get(self.subject_label, "").lower()
            if not subject:
                return drop(Reason.NO_SUBJECT, f"{name!r} needs consent and the sample names no "
                            f"{self.subject_label!r}")
            if (subject, name) not in subject_consents:
                return drop(Reason.NO_CONSENT, f"{name!r}: no consent in force for this subject")
        return Decision(verdict=Verdict.KEEP, reason=Reason.KEPT, kept_labels=kept, stripped_labels=stripped)


    def _judge_name(self, name: str) -> Decision | None:
        """The drop decision the name alone earns (malformed, blocked, not in the charter), or None."""
        if problem := name_problem(name):
            return Decision(verdict=Verdict.DROP, reason=Reason.MALFORMED_NAME, detail=problem)
        if hit := _blocked_by(name, self._blocked):
            return Decision(verdict=Verdict.DROP, reason=Reason.BLOCKED,
                            detail=f"{name!r} is blocked (category {hit[0]}, pattern {hit[1]!r})")
        if name not in self._metrics:
            return Decision(verdict=Verdict.DROP, reason=Reason.NOT_WHITELISTED,
                            detail=f"{name!r} is not in the charter")
        return None


NAME_CACHE = 4096  # distinct names whose verdict a Whitelist remembers


# -- pseudonyms and the kernel's name hash -------------------------------------------------------------------

MIN_KEY_BYTES = 32


def pseudonym(key: bytes, epoch: int, kind: str, identifier: str) -> str:
    """``p<epoch>_<32 hex>``: HMAC-SHA256 under ``key`` of the kind (``node``, ``user``) and the identifier.

    The same identifier gives the same pseudonym within an epoch (series stay joinable), a different one after a
    rotation; without the key nobody can test a guess. Addresses are compared in lower case.
    """
    if len(key) < MIN_KEY_BYTES:
        raise InvalidInput(f"a pseudonymisation key has at least {MIN_KEY_BYTES} bytes (got {len(key)})")
    if epoch < 1:
        raise InvalidInput(f"a key epoch is at least 1 (got {epoch})")
    ident = identifier.lower() if re.fullmatch(ADDRESS, identifier) else identifier
    mac = hmac.new(key, f"westworld-pseudonym\x00{epoch}\x00{kind}\x00{ident}".encode(), hashlib.sha256)
    return f"p{epoch}_{mac.hexdigest()[:32]}"


FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def name_hash(name: str | bytes) -> int:
    """64-bit FNV-1a of the name's bytes: the key of the kernel filter's maps (``bpf/charter_egress.c``)."""
    h = FNV_OFFSET
    for byte in name.encode() if isinstance(name, str) else name:
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


# -- what changed between two charters -----------------------------------------------------------------------

class Change(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    old: Any = None
    new: Any = None
    widens: bool = Field(description="True when the change collects more, keeps longer or protects less.")

    def __str__(self) -> str:
        mark = " (widens collection)" if self.widens else ""
        if self.old is None:
            return f"+ {self.path}: {self.new}{mark}"
        if self.new is None:
            return f"- {self.path}: {self.old}{mark}"
        return f"~ {self.path}: {self.old} -> {self.new}{mark}"


def diff(old: Charter, new: Charter) -> list[Change]:
    """Every change from ``old`` to ``new``, metric by metric and category by category (not line by line)."""
    out: list[Change] = []
    before, after = {m.name: m for m in old.spec.metrics}, {m.name: m for m in new.spec.metrics}
    for name in sorted(before.keys() - after.keys()):
        out.append(Change(path=f"metrics.{name}", old="allowed", widens=False))
    for name in sorted(after.keys() - before.keys()):
        out.append(Change(path=f"metrics.{name}", new="allowed", widens=True))
    for name in sorted(before.keys() & after.keys()):
        a, b = before[name], after[name]
        for field in ("purpose", "retention_days", "consent_required", "granularity_seconds"):
            x, y = getattr(a, field), getattr(b, field)
            if x != y:
                widens = (field == "retention_days" and y > x) or (field == "consent_required" and not y) or \
                    (field == "granularity_seconds" and y < x)
                out.append(Change(path=f"metrics.{name}.{field}", old=x, new=y, widens=widens))
        for label in sorted(set(a.labels) - set(b.labels)):
            out.append(Change(path=f"metrics.{name}.labels.{label}", old="kept", widens=False))
        for label in sorted(set(b.labels) - set(a.labels)):
            out.append(Change(path=f"metrics.{name}.labels.{label}", new="kept", widens=True))
    pb, pa = set(_patterns(old.spec.blocked)), set(_patterns(new.spec.blocked))
    for cat, p in sorted(pb - pa):
        out.append(Change(path=f"blocked.{cat}", old=p, widens=True))
    for cat, p in sorted(pa - pb):
        out.append(Change(path=f"blocked.{cat}", new=p, widens=False))
    ps, ns = set(old.spec.pseudonymisation.labels), set(new.spec.pseudonymisation.labels)
    for label in sorted(ps - ns):
        out.append(Change(path=f"pseudonymisation.labels.{label}", old="pseudonymised", widens=True))
    for label in sorted(ns - ps):
        out.append(Change(path=f"pseudonymisation.labels.{label}", new="pseudonymised", widens=False))
    for field, x, y in (("pseudonymisation.key_epoch", old.spec.pseudonymisation.key_epoch,
                         new.spec.pseudonymisation.key_epoch),
                        ("consent.subject_label", old.spec.consent.subject_label, new.spec.consent.subject_label),
                        ("committee.threshold", old.spec.committee.threshold, new.spec.committee.threshold)):
        if x != y:
            out.append(Change(path=field, old=x, new=y,
                              widens=field == "committee.threshold" and isinstance(y, int) and y < int(x)))
    om = {m.address.lower(): m.role for m in old.spec.committee.members}
    nm = {m.address.lower(): m.role for m in new.spec.committee.members}
    for addr in sorted(om.keys() - nm.keys()):
        out.append(Change(path=f"committee.members.{addr}", old=om[addr], widens=False))
    for addr in sorted(nm.keys() - om.keys()):
        out.append(Change(path=f"committee.members.{addr}", new=nm[addr], widens=False))
    if old.metadata.version != new.metadata.version:
        out.append(Change(path="metadata.version", old=old.metadata.version, new=new.metadata.version, widens=False))
    return out
