"""Durations people type into vote and shelter inputs take the forms experiment specs take (``1m``, ``2d``,
``1h30m``), as well as seconds and ISO 8601; through the project's data converter they are written as before and
old payloads (ISO 8601 strings, as pydantic wrote them) still decode."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter

from westworld.durations import parse_duration
from westworld.rotation import GuardianRotationInput
from westworld.shelter import StoreDocumentInput
from westworld.shelter_access import AccessRequest, DocumentAccessInput, EmergencyAccessInput, VoteTerms
from westworld.vote import DaoVoteInput, Proposal
from workers.codec import build_data_converter, create_keyring

REQUEST = AccessRequest(request_id="report-7", document_id="d", requester="me", requester_public_key="ab" * 32,
                        reason="audit")
PROPOSAL = {"id": "my-first-vote", "title": "t"}


@pytest.mark.parametrize(("typed", "expected"), [
    ("1m", timedelta(minutes=1)), ("90s", timedelta(seconds=90)), ("1h30m", timedelta(hours=1, minutes=30)),
    ("2d", timedelta(days=2)), (60, timedelta(minutes=1)), (90.5, timedelta(seconds=90.5)),
    ("PT1M", timedelta(minutes=1)), ("P3D", timedelta(days=3)),
])
def test_every_typed_duration_takes_the_spec_forms(typed: Any, expected: timedelta) -> None:
    assert DaoVoteInput.model_validate({"proposal": PROPOSAL, "voting_window": typed}).voting_window == expected
    assert VoteTerms.model_validate({"voting_window": typed}).voting_window == expected
    rotation = GuardianRotationInput.model_validate({"share_window": typed, "ack_window": typed,
                                                     "reminder_every": typed})
    assert rotation.share_window == rotation.ack_window == rotation.reminder_every == expected
    access = DocumentAccessInput.model_validate({"request": REQUEST.model_dump(), "share_window": typed,
                                                 "reminder_every": typed})
    assert access.share_window == access.reminder_every == expected
    emergency = EmergencyAccessInput.model_validate({"request": REQUEST.model_dump(), "window": typed,
                                                     "reminder_every": typed})
    assert emergency.window == emergency.reminder_every == expected
    assert parse_duration(typed) == expected  # what an experiment spec reads from the same text


@pytest.mark.parametrize("bad", ["1 minute", "-1m", "0s", "99999d", True])
def test_a_bad_window_is_refused_with_the_field_named(bad: Any) -> None:
    with pytest.raises(ValidationError, match="voting_window"):
        DaoVoteInput.model_validate({"proposal": PROPOSAL, "voting_window": bad})


async def _round_trip(converter: DataConverter, value: BaseModel) -> tuple[dict[str, Any], BaseModel]:
    [encrypted] = await converter.encode([value])
    [plain] = await converter.payload_codec.decode([encrypted]) if converter.payload_codec else [encrypted]
    [back] = await converter.decode([encrypted], [type(value)])
    return json.loads(plain.data), back


async def test_written_as_before_and_old_payloads_decode(tmp_path: Path) -> None:
    converter = build_data_converter(create_keyring(tmp_path / "keys.json"))
    vote = DaoVoteInput(proposal=Proposal(id="my-first-vote", title="t"), voting_window="1m")
    shown, back = await _round_trip(converter, vote)
    assert shown["voting_window"] == "PT1M" and back == vote  # ISO 8601, as a plain timedelta was written
    rotation = GuardianRotationInput(share_window="2d")
    shown, back = await _round_trip(converter, rotation)
    assert shown["share_window"] == "P2D" and back == rotation
    store = StoreDocumentInput.model_validate({"document_id": "d", "title": "t", "replicate_timeout": "30s"})
    assert store.replicate_timeout == timedelta(seconds=30)
    # an old payload, as the SDK's pydantic converter wrote it before (plain JSON, ISO 8601 durations)
    old = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({
        "proposal": PROPOSAL, "voting_window": "PT72H"}).encode())
    [decoded] = converter.payload_converter.from_payloads([old], [DaoVoteInput])
    assert decoded.voting_window == timedelta(hours=72)
