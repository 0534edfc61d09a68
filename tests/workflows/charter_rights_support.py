"""Test support for the charter's rights workflows: a charter with a committee whose keys the test holds (and the
committee's X25519 report key), the EIP-712 context of the deployed Charter, signing helpers."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from eth_account import Account
from eth_account.signers.local import LocalAccount
from nacl.public import PrivateKey, PublicKey, SealedBox

from activities.charter_chain import DEFAULT_CHARTER_FILE
from westworld.chain import CHARTER, Deployment
from westworld.charter import load_charter
from westworld.charter_cases import (
    ReportSubmission,
    receipt_hash,
    reporter_box_key,
    reporter_sign_key,
    solve_pow,
)
from westworld.charter_consent import ConsentContext
from westworld.charter_rights import CaseAction, sha256_hex, sign_case_action

POW_BITS = 10  # the test charter's difficulty (the shipped default is 18: ~2 s per report)


@dataclass
class Committee:
    members: list[LocalAccount]
    box: PrivateKey  # the committee's report key

    def open(self, sealed: str) -> str:
        return SealedBox(self.box).decrypt(base64.b64decode(sealed)).decode()


def make_committee(n: int = 15) -> Committee:
    return Committee(members=[Account.create(f"member-{i}") for i in range(n)], box=PrivateKey.generate())


def write_charter(path: Path, committee: Committee, threshold: int = 5, per_hour: int = 30) -> Path:
    """The shipped charter with ``committee`` (k = ``threshold``) and a reports section."""
    data = yaml.safe_load(DEFAULT_CHARTER_FILE.read_bytes())
    data["spec"]["committee"] = {"threshold": threshold, "members": [
        {"address": m.address, "role": "dao" if i < 10 else "researcher"} for i, m in enumerate(committee.members)]}
    data["spec"]["reports"] = {"pow_bits": POW_BITS, "per_hour": per_hour,
                               "committee_public_key": bytes(committee.box.public_key).hex()}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    load_charter(path.read_bytes())
    return path


def context(deployment: Deployment) -> ConsentContext:
    return ConsentContext(chain_id=deployment.chain_id, charter_address=deployment.address(CHARTER))


def seal(text: str, public_key: PublicKey) -> str:
    return base64.b64encode(SealedBox(public_key).encrypt(text.encode())).decode()


@dataclass
class Report:
    code: str
    submission: ReportSubmission


def make_report(text: str, committee: Committee, bits: int = POW_BITS) -> Report:
    """What `report submit` does on the reporter's machine: seal, draw a receipt code, derive keys, prove work."""
    code = secrets.token_urlsafe(24)
    sealed = seal(text, committee.box.public_key)
    receipt = receipt_hash(code)
    return Report(code, ReportSubmission(
        sealed_report=sealed, receipt_hash=receipt, reporter_box_key=bytes(reporter_box_key(code).public_key).hex(),
        reporter_verify_key=bytes(reporter_sign_key(code).verify_key).hex(),
        pow_nonce=solve_pow(receipt, sealed, bits)))


def action(case_id: str, verb: str, member: LocalAccount, ctx: ConsentContext, about: str,
           signer: LocalAccount | None = None) -> CaseAction:
    a = CaseAction(case_id=case_id, action=verb, member=member.address, digest=sha256_hex(about))
    return a.model_copy(update={"signature": sign_case_action(a, ctx, (signer or member).key.hex())})
