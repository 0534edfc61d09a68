"""Token amounts: exact whole tokens for people, decimal strings on the wire, old numeric payloads still read."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from google.protobuf.json_format import ParseDict
from hypothesis import given
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import History

from westworld.amounts import format_tokens, to_tokens
from westworld.chain import ChainSnapshot
from westworld.vote import DaoVoteResult, DaoVoteStatus, VoteState
from workers.codec import build_data_converter, create_keyring, load_keyring

HISTORIES = Path(__file__).parents[1] / "replay" / "histories"
SUPPLY = 1_000_000 * 10**18


@pytest.mark.parametrize(("wei", "text"), [
    (40_000 * 10**18, "40,000 MESH"),
    (SUPPLY, "1,000,000 MESH"),
    (15 * 10**17, "1.5 MESH"),
    (1, "0.000000000000000001 MESH"),
    (0, "0 MESH"),
    (2**256 - 1, "115,792,089,237,316,195,423,570,985,008,687,907,853,269,984,665,640,564,039,457."
                 "584007913129639935 MESH"),
])
def test_amounts_print_as_exact_whole_tokens(wei: int, text: str) -> None:
    assert format_tokens(wei, "MESH") == text


@given(st.integers(min_value=0, max_value=2**256))
def test_printed_tokens_read_back_to_the_same_wei(wei: int) -> None:
    whole, _, fraction = format_tokens(wei).replace(",", "").partition(".")
    assert int(whole) * 10**18 + int(fraction.ljust(18, "0")) == wei
    assert to_tokens(wei) == Decimal(format_tokens(wei).replace(",", ""))


def status() -> DaoVoteStatus:
    return DaoVoteStatus(proposal_id="p", state=VoteState.OPEN, step="open", deadline=None,
                         tally={"for": 550_000 * 10**18 + 1, "against": 0}, votes=2, rejected=0,
                         total_supply=SUPPLY, quorum_weight=40_000 * 10**18)


async def test_the_data_converter_writes_amounts_as_decimal_strings(tmp_path: Path) -> None:
    converter = build_data_converter(create_keyring(tmp_path / "keys.json"))
    [encrypted] = await converter.encode([status()])
    assert b"550000" not in encrypted.data  # what goes to history is encrypted; the codec server shows the JSON
    [plain] = await converter.payload_codec.decode([encrypted]) if converter.payload_codec else [encrypted]
    shown = json.loads(plain.data)
    assert shown["tally"] == {"for": "550000000000000000000001", "against": "0"}
    assert shown["total_supply"] == str(SUPPLY) and shown["quorum_weight"] == str(40_000 * 10**18)
    [back] = await converter.decode([encrypted], [DaoVoteStatus])
    assert back == status()


def test_numbers_written_before_still_read() -> None:
    old = {"proposal_id": "p", "state": "open", "step": "open", "deadline": None,
           "tally": {"for": 550000000000000000000001, "against": 0}, "votes": 2, "rejected": 0,
           "total_supply": SUPPLY, "quorum_weight": 40000000000000000000000}
    assert DaoVoteStatus.model_validate_json(json.dumps(old)) == status()
    assert ChainSnapshot.model_validate({"chain_id": 1, "timepoint": 5, "total_supply": "7", "token": "0x"}
                                        ).total_supply == 7


@pytest.mark.parametrize("bad", ["1.5", "5.5e+23", "ten", ""])
def test_an_amount_is_whole_wei(bad: str) -> None:
    with pytest.raises(ValueError, match="whole number of wei"):
        ChainSnapshot.model_validate({"chain_id": 1, "timepoint": 5, "total_supply": bad, "token": "0x"})


async def test_a_recorded_vote_result_with_numeric_tally_still_decodes() -> None:
    """A DaoVoteWorkflow result recorded before amounts were strings (JSON numbers) decodes with today's code, as
    do the ones recorded since (strings)."""
    numbers = strings = 0
    for path in sorted(HISTORIES.glob("DaoVoteWorkflow--*.history.json")):
        keyring = load_keyring(path.with_name(path.name.replace(".history.json", ".keyring.json")))
        converter = build_data_converter(keyring)
        history = ParseDict(json.loads(path.read_text()), History(), ignore_unknown_fields=True)
        for event in history.events:
            if not event.HasField("workflow_execution_completed_event_attributes"):
                continue
            [payload] = event.workflow_execution_completed_event_attributes.result.payloads
            assert converter.payload_codec is not None
            [plain] = await converter.payload_codec.decode([payload])
            raw = json.loads(plain.data)
            if not isinstance(raw, dict) or "tally" not in raw:
                continue  # a continued-as-new run
            [result] = await converter.decode([Payload(metadata=payload.metadata, data=payload.data)],
                                              [DaoVoteResult])
            assert result.tally == {k: int(v) for k, v in raw["tally"].items()}
            if all(isinstance(v, int) for v in raw["tally"].values()):
                numbers += 1
            else:
                assert all(isinstance(v, str) for v in raw["tally"].values()), raw["tally"]
                strings += 1
    assert numbers, "no recorded DaoVoteWorkflow result with a numeric tally"
