"""The charter core: validation (every problem with its path, never a crash), the judge, pseudonyms, the kernel's
name hash, EIP-712 consent, diff."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from westworld import charter_consent as consent
from westworld.charter import (
    Reason,
    Verdict,
    charter_hash,
    diff,
    load_charter,
    name_hash,
    parse_charter,
    pseudonym,
)
from westworld.errors import CharterInvalid, ConsentRejected

RAW = (Path(__file__).resolve().parents[2] / "deploy" / "charter.yaml").read_bytes()
CHARTER = load_charter(RAW)
DATA: dict[str, Any] = yaml.safe_load(RAW)
KEY = b"k" * 32
SUBJECT_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil account 1
SUBJECT = Account.from_key(SUBJECT_KEY).address


def problems_of(data: Any) -> str:
    with pytest.raises(CharterInvalid) as info:
        parse_charter(data)
    return info.value.message


def test_the_default_charter_is_valid_and_has_its_5_of_15_committee() -> None:
    assert CHARTER.metadata.version == 1
    assert len(CHARTER.spec.committee.members) == 15
    assert CHARTER.spec.committee.threshold == 5
    assert charter_hash(RAW) == charter_hash(RAW) and len(charter_hash(RAW)) == 64
    assert charter_hash(RAW + b"\n") != charter_hash(RAW)


def test_every_problem_is_reported_at_once_with_its_path_and_line() -> None:
    text = RAW.decode().replace("name: mesh_link_quality", "name: user_location", 1) \
        .replace("retention_days: 90", "retention_days: 0", 1).replace("threshold: 5", "threshold: 16", 1) \
        .replace("labels: [node, direction]", "labels: [node, Direction, gps_fix]", 1)
    with pytest.raises(CharterInvalid) as info:
        load_charter(text)
    msg = info.value.message
    assert msg.splitlines()[0] == "5 problem(s) in the charter:"
    assert "spec.metrics[0].name (line 11): 'user_location' is blocked (category location" in msg
    assert "spec.metrics[4].retention_days" in msg
    assert "spec.metrics[2].labels[1]" in msg and "spec.metrics[2].labels[2]" in msg
    assert "spec.committee.threshold" in msg and "more than the 15 members" in msg


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d["spec"]["blocked"].pop(0), "must block the 'identity' category"),
    (lambda d: d["spec"]["committee"].update(threshold=1), "under the floor of 2"),
    (lambda d: d["spec"]["metrics"][5].update(labels=["node"]), "must keep the subject label 'user'"),
    (lambda d: d["spec"]["metrics"].append(dict(d["spec"]["metrics"][0])), "listed twice"),
    (lambda d: d["spec"]["pseudonymisation"].update(labels=["node"]), "'user' names people"),
    (lambda d: d["spec"]["committee"]["members"].append(d["spec"]["committee"]["members"][0]), "already member"),
    (lambda d: d["spec"].update(surprise=True), "spec.surprise: unknown field"),
])
def test_rules(edit: Any, expected: str) -> None:
    data = copy.deepcopy(DATA)
    edit(data)
    assert expected in problems_of(data)


@pytest.mark.parametrize("name", ["Mesh_link_quality", "mesh_link_quаlity", "mesh-link", "9mesh", "",
                                  "mesh_link_quality\u200b", "ｍesh", "a" * 129])
def test_look_alikes_and_bad_names_are_refused_never_normalised(name: str) -> None:
    d = CHARTER.whitelist().judge(name, {}, set())
    assert d.verdict is Verdict.DROP and d.reason is Reason.MALFORMED_NAME


def test_the_judge() -> None:
    w = CHARTER.whitelist()
    keep = w.judge("mesh_link_quality", {"node": "n1", "peer": "n2", "email": "x@y"}, set())
    assert keep.verdict is Verdict.KEEP and keep.kept_labels == {"node": "n1", "peer": "n2"}
    assert keep.stripped_labels == ("email",)
    assert w.judge("user_location", {}, set()).reason is Reason.BLOCKED
    assert w.judge("router_gps_fix", {}, set()).reason is Reason.BLOCKED
    assert w.judge("mesh_wifi_ssid", {}, set()).reason is Reason.NOT_WHITELISTED
    session = "mesh_user_session_seconds"
    assert w.judge(session, {"node": "n1"}, set()).reason is Reason.NO_SUBJECT
    assert w.judge(session, {"user": SUBJECT}, set()).reason is Reason.NO_CONSENT
    assert w.judge(session, {"user": SUBJECT}, {(SUBJECT.lower(), session)}).verdict is Verdict.KEEP
    assert w.judge(session, {"user": SUBJECT}, {(SUBJECT.lower(), "mesh_link_quality")}).reason is Reason.NO_CONSENT
    assert "user_location" not in w.kernel_names() and session in w.kernel_names()


def test_pseudonyms_are_keyed_stable_and_rotate_with_the_epoch() -> None:
    p = pseudonym(KEY, 1, "user", SUBJECT)
    assert p == pseudonym(KEY, 1, "user", SUBJECT.lower()) and p.startswith("p1_") and len(p) == 35
    assert p != pseudonym(b"j" * 32, 1, "user", SUBJECT)
    assert p != pseudonym(KEY, 2, "user", SUBJECT)
    assert p != pseudonym(KEY, 1, "node", SUBJECT)
    assert SUBJECT.lower()[2:] not in p
    with pytest.raises(Exception, match="at least 32 bytes"):
        pseudonym(b"short", 1, "user", SUBJECT)


def test_name_hash_is_fnv1a_64() -> None:
    assert name_hash("") == 0xCBF29CE484222325
    assert name_hash("a") == 0xAF63DC4C8601EC8C  # the published FNV-1a 64 test vector
    assert name_hash("mesh_link_quality") == name_hash(b"mesh_link_quality")


def _consent(**kw: Any) -> consent.ConsentRequest:
    fields: dict[str, Any] = {"subject": SUBJECT, "metric": "mesh_user_session_seconds", "grant": True,
                              "nonce": 1, "expiry": 2_000_000_000}
    fields.update(kw)
    return consent.ConsentRequest(**fields)


CTX = consent.ConsentContext(chain_id=31337, charter_address="0x5FbDB2315678afecb367f032d93F642f64180aa3")


def test_consent_signed_by_its_subject_is_accepted() -> None:
    req = _consent()
    signed = req.model_copy(update={"signature": consent.sign(req, CTX, SUBJECT_KEY)})
    assert consent.verify(signed, CTX, CHARTER, now=1_900_000_000) == consent.consent_hash(req, CTX)
    withdraw = _consent(grant=False, nonce=2)
    assert consent.consent_hash(withdraw, CTX) != consent.consent_hash(req, CTX)


@pytest.mark.parametrize(("change", "expected"), [
    ({"subject": "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"}, "not by its subject"),
    ({"grant": False}, "not by its subject"),
    ({"expiry": 1}, "expired"),
    ({"metric": "mesh_link_quality"}, "does not make it consent-only"),
    ({"metric": "user_location"}, "not a metric of charter"),
    ({"signature": "0x1234"}, "malformed"),
])
def test_consent_refusals(change: dict[str, Any], expected: str) -> None:
    req = _consent()
    signed = req.model_copy(update={"signature": consent.sign(req, CTX, SUBJECT_KEY)})
    with pytest.raises(ConsentRejected, match=expected):
        consent.verify(signed.model_copy(update=change), CTX, CHARTER, now=1_900_000_000)


def test_consent_is_bound_to_the_chain_and_the_contract() -> None:
    req = _consent()
    signed = req.model_copy(update={"signature": consent.sign(req, CTX, SUBJECT_KEY)})
    for other in (CTX.model_copy(update={"chain_id": 1}),
                  CTX.model_copy(update={"charter_address": "0x" + "11" * 20})):
        with pytest.raises(ConsentRejected, match="not by its subject"):
            consent.verify(signed, other, CHARTER, now=0)


def test_diff_names_each_change_and_what_widens_collection() -> None:
    data = copy.deepcopy(DATA)
    data["metadata"]["version"] = 2
    data["spec"]["metrics"][0]["retention_days"] = 365
    data["spec"]["metrics"][0]["labels"].append("channel")
    data["spec"]["metrics"][5]["consent_required"] = False
    data["spec"]["metrics"].pop(4)
    data["spec"]["blocked"][1]["patterns"].remove("*gps*")
    new = parse_charter(data)
    changes = {c.path: c for c in diff(CHARTER, new)}
    assert changes["metrics.mesh_link_quality.retention_days"].widens
    assert changes["metrics.mesh_link_quality.labels.channel"].widens
    assert changes["metrics.mesh_user_session_seconds.consent_required"].widens
    assert not changes["metrics.mesh_node_uptime_seconds"].widens
    assert changes["blocked.location"].widens and changes["blocked.location"].old == "*gps*"
    assert str(changes["metadata.version"]) == "~ metadata.version: 1 -> 2"
    assert diff(CHARTER, CHARTER) == []


# -- fuzzing: bad documents give errors with paths, never a crash; valid ones round-trip ---------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=20))
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                     max_leaves=20)
_paths = st.lists(st.sampled_from(["spec", "metrics", 0, 1, 5, "labels", "name", "committee", "members", "threshold",
                                   "blocked", "patterns", "retention_days", "metadata", "version", "consent"]),
                  min_size=1, max_size=5)


def _mutate(data: Any, path: list[Any], value: Any) -> Any:
    data = copy.deepcopy(data)
    node = data
    for step in path[:-1]:
        inside = (isinstance(node, dict) and step in node) or (
            isinstance(node, list) and isinstance(step, int) and step < len(node))
        if not inside:
            break
        node = node[step]
    last = path[-1]
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(last, int) and last < len(node)):
        node[last] = value
    return data


@settings(max_examples=300, deadline=None)
@given(_paths, _json)
def test_fuzzed_charters_are_refused_with_paths_or_accepted(path: list[Any], value: Any) -> None:
    data = _mutate(DATA, path, value)
    try:
        c = parse_charter(data)
    except CharterInvalid as err:
        lines = err.message.splitlines()
        assert "problem(s) in the charter" in lines[0] or lines[0].startswith("(top)")
        assert all(": " in line for line in lines[1:])
        return
    again = parse_charter(c.model_dump(mode="json", by_alias=True))
    assert again == c


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_loader(content: bytes) -> None:
    with contextlib.suppress(CharterInvalid):  # a refusal is fine; any other exception fails the test
        load_charter(content)
