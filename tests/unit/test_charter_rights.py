"""The charter rights core: export requests and committee actions signed (EIP-712) by whom they name, k-of-n
decisions, the reporter's proof of work, receipt-derived keys, and the export bundle."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from westworld.charter_cases import (
    answer_message,
    check_pow,
    leading_zero_bits,
    pow_digest,
    receipt_hash,
    reporter_sign_key,
    solve_pow,
    verify_answer,
)
from westworld.charter_consent import ConsentContext
from westworld.charter_data import BundleSection, build_bundle, read_bundle
from westworld.charter_rights import (
    CaseAction,
    ExportRequest,
    decided,
    sha256_hex,
    sign_case_action,
    sign_export,
    verify_case_action,
    verify_export,
)
from westworld.errors import (
    SIGNER_BAD_SIGNATURE,
    SIGNER_UNKNOWN,
    CaseRefused,
    ExportRefused,
    ReportRefused,
)

CTX = ConsentContext(chain_id=31337, charter_address="0x" + "11" * 20)
OTHER_CHAIN = ConsentContext(chain_id=1, charter_address="0x" + "11" * 20)


def test_export_request_counts_only_signed_by_its_subject_on_this_chain() -> None:
    user, thief = Account.create(), Account.create()
    req = ExportRequest(subject=user.address, public_key="ab" * 32, nonce=1, expiry=100)
    good = req.model_copy(update={"signature": sign_export(req, CTX, user.key.hex())})
    verify_export(good, CTX, now=50)
    with pytest.raises(ExportRefused, match="only the subject"):
        verify_export(req.model_copy(update={"signature": sign_export(req, CTX, thief.key.hex())}), CTX, now=50)
    with pytest.raises(ExportRefused, match="only the subject"):
        verify_export(good, OTHER_CHAIN, now=50)  # a signature for one chain and Charter only
    with pytest.raises(ExportRefused, match="expired"):
        verify_export(good, CTX, now=101)
    with pytest.raises(ExportRefused, match="malformed"):
        verify_export(req.model_copy(update={"signature": "0x1234"}), CTX, now=50)


def test_case_action_from_a_member_only() -> None:
    member, outsider = Account.create(), Account.create()
    members = [member.address.lower()]
    a = CaseAction(case_id="case:" + "0" * 32, action="claim", member=member.address, digest=sha256_hex("x"))
    assert verify_case_action(a.model_copy(update={"signature": sign_case_action(a, CTX, member.key.hex())}), CTX,
                              members) == member.address.lower()
    with pytest.raises(CaseRefused) as err:
        verify_case_action(a.model_copy(update={"signature": sign_case_action(a, CTX, outsider.key.hex())}), CTX,
                           members)
    assert err.value.type == SIGNER_BAD_SIGNATURE
    b = a.model_copy(update={"member": outsider.address})
    with pytest.raises(CaseRefused) as err:
        verify_case_action(b.model_copy(update={"signature": sign_case_action(b, CTX, outsider.key.hex())}), CTX,
                           members)
    assert err.value.type == SIGNER_UNKNOWN


@given(st.dictionaries(st.text(min_size=1, max_size=4), st.sampled_from([("upheld", "a"), ("dismissed", "a"),
                                                                         ("upheld", "b")]), max_size=15),
       st.integers(min_value=2, max_value=15))
def test_a_decision_needs_k_members_on_the_same_outcome_and_summary(
        signatures: dict[str, tuple[str, str]], k: int) -> None:
    got = decided(signatures, k)
    counts = {p: list(signatures.values()).count(p) for p in set(signatures.values())}
    assert (got is not None) == any(n >= k for n in counts.values())
    if got is not None:
        assert counts[got] >= k


@settings(max_examples=20)
@given(st.binary(min_size=1, max_size=64))
def test_proof_of_work(sealed: bytes) -> None:
    receipt, text = receipt_hash(sealed.hex()), sealed.hex()
    nonce = solve_pow(receipt, text, 8)
    check_pow(receipt, text, nonce, 8)
    assert leading_zero_bits(pow_digest(receipt, text, nonce)) >= 8
    weak = next(n for n in range(1000) if leading_zero_bits(pow_digest(receipt, text, n)) < 8)
    with pytest.raises(ReportRefused, match="leading zero bits"):
        check_pow(receipt, text, weak, 8)


def test_only_the_receipt_code_signs_answers() -> None:
    code = secrets.token_urlsafe(24)
    verify = bytes(reporter_sign_key(code).verify_key).hex()
    sig = reporter_sign_key(code).sign(answer_message("case:x", "sealed")).signature.hex()
    verify_answer("case:x", "sealed", sig, verify)
    forged = reporter_sign_key("guess").sign(answer_message("case:x", "sealed")).signature.hex()
    with pytest.raises(CaseRefused):
        verify_answer("case:x", "sealed", forged, verify)
    with pytest.raises(CaseRefused):
        verify_answer("case:x", "other", sig, verify)


def test_bundle_says_what_each_item_is() -> None:
    section = BundleSection(name="votes", what="Ballots", source="vote store", retention="kept", columns=["a", "b"],
                            rows=[{"a": 1, "b": "x"}])
    doc = read_bundle(build_bundle("0xAB", "export:0xab:1", datetime(2026, 1, 1, tzinfo=UTC), [section]))
    assert doc["subject"] == "0xab" and doc["sections"][0]["what"] == "Ballots" and doc["csv_files"] == ["votes.csv"]
