"""The business keys stay byte-identical: saved histories and sealed capability bindings name these exact ids."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from westworld import keys

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("built", "expected"), [
    (keys.vote_id("mtu-1400"), "vote:mtu-1400"),
    (keys.proposal_of("vote:mtu-1400"), "mtu-1400"),
    (keys.experiment_id("mtu"), "experiment:mtu"),
    (keys.experiment_proposal_id("mtu", "0123456789abcdef"), "mtu-01234567"),
    (keys.canary_id("mtu"), "canary:mtu"),
    (keys.canary_step_action("mtu", 2), "canary:mtu:step-2"),
    (keys.canary_rollback_action("mtu", "1.3.0"), "canary:mtu:rollback-1.3.0"),
    (keys.canary_step_workflow_id("bot", "mtu", 0), "agent-action:bot:canary:mtu:step-0"),
    (keys.sandbox_id("mtu", "treatment"), "mtu-treatment"),
    (keys.canary_mesh_id("mtu"), "mtu-mesh"),
    (keys.collection_id("experiment:mtu", 3), "experiment:mtu:3"),
    (keys.agent_action_id("router", "wide-1"), "agent-action:router:wide-1"),
    (keys.execute_action_id("agent-action:router:wide-1"), "agent-action:router:wide-1:execute"),
    (keys.admin_id("ab" * 8), "capability-admin:" + "ab" * 8),
    (keys.admin_nonce("capability-admin:" + "ab" * 8), "ab" * 8),
    (keys.halt_id(4), "halt:4"),
    (keys.capability_read_id("n"), "capability-read:n"),
    (keys.capability_directory_id("n"), "capability-directory:n"),
    (keys.access_id("r1"), "access:r1"),
    (keys.access_id("r1", emergency=True), "emergency:r1"),
    (keys.access_proposal_id("r1"), "access-r1"),
    (keys.access_proposal_id("r1", emergency=True), "emergency-r1"),
    (keys.rotation_id(2), "rotation:2"),
    (keys.rotation_run_key("rotation:2", "run"), "rotation:2/run"),
    (keys.rotation_proposal_id(2, "run"), "rotation-2-run"),
    (keys.key_ceremony_id("ceremony-1"), "key-ceremony:ceremony-1"),
    (keys.key_epoch_read_id("n"), "key-epoch-read:n"),
    (keys.document_id("minutes"), "document:minutes"),
    (keys.audit_verify_id("n"), "audit-verify-n"),
    (keys.WATCH_ID, "anomaly-watch"),
])
def test_ids_are_the_ones_saved_histories_hold(built: str, expected: str) -> None:
    assert built == expected


def test_access_candidates_take_a_workflow_id_or_a_bare_request() -> None:
    assert keys.access_candidates("rotation:3") == ["rotation:3"]
    assert keys.access_candidates("r1") == ["access:r1", "emergency:r1"]


def test_search_attribute_names_are_registered_with_their_types() -> None:
    assert keys.SEARCH_ATTRIBUTES == {
        "WestworldStep": "Keyword", "WestworldStepSince": "Datetime", "ProposalId": "Keyword",
        "VoteState": "Keyword", "ExperimentName": "Keyword", "AgentId": "Keyword", "DocumentId": "Keyword"}


# A workflow-id prefix spelled in a string literal outside westworld/keys.py means a second place builds the key.
PREFIX = re.compile(r"^(vote|experiment|canary|access|emergency|rotation|halt|agent-action|document|key-ceremony|"
                    r"capability-(admin|read|directory)|key-epoch-read):(?![ <])")  # not prose, not help text


def test_no_module_spells_a_workflow_id_prefix_itself() -> None:
    found = []
    for folder in ("westworld", "workflows", "activities", "workers"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "westworld" / "keys.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                    head = str(node.values[0].value)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    head = node.value
                else:
                    continue
                if PREFIX.match(head):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {head!r}")
    assert not found, "build these ids with westworld.keys:\n" + "\n".join(found)
