"""Proofs from stored subtree nodes equal the RFC 6962 reference proofs over the leaves, at every size."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from westworld import merkle
from westworld.errors import ProofError


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(n)]


def stored(hashes: list[bytes]) -> dict[merkle.Node, bytes]:
    """What a store keeps: each leaf, and the nodes its append completed, by (level, index) via node_slot."""
    rows: list[tuple[bytes, list[bytes]]] = []
    frontier = merkle.Frontier()
    for h in hashes:
        rows.append((h, frontier.append(h)))
    out: dict[merkle.Node, bytes] = {}
    for level in range(len(hashes).bit_length()):
        for index in range(len(hashes) >> level):
            seq, slot = merkle.node_slot((level, index))
            out[(level, index)] = rows[seq][0] if slot < 0 else rows[seq][1][slot]
    return out


def folded(plan: list[list[merkle.Node]], nodes: dict[merkle.Node, bytes]) -> list[bytes]:
    return [merkle.fold([nodes[n] for n in part]) for part in plan]


@pytest.mark.parametrize("size", range(1, 70))
def test_node_proofs_equal_the_reference_proofs(size: int) -> None:
    hs = leaves(size)
    nodes = stored(hs)
    assert merkle.fold([nodes[n] for n in merkle.range_nodes(0, size)]) == merkle.root_of_hashes(hs)
    for index in range(size):
        assert folded(merkle.inclusion_nodes(index, size), nodes) == merkle.inclusion_proof(hs, index)
    for old in range(size + 1):
        assert folded(merkle.consistency_nodes(old, size), nodes) == merkle.consistency_proof(hs, old)


def test_completed_nodes_are_the_perfect_subtrees_ending_at_each_leaf() -> None:
    hs = leaves(16)
    frontier = merkle.Frontier()
    completed = [frontier.append(h) for h in hs]
    assert [len(c) for c in completed] == [0, 1, 0, 2, 0, 1, 0, 3, 0, 1, 0, 2, 0, 1, 0, 4]
    assert completed[15][3] == merkle.root_of_hashes(hs) and completed[5][0] == merkle.root_of_hashes(hs[4:6])


@given(st.integers(1, 2**40), st.data())
def test_a_proof_reads_logarithmically_many_nodes(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    old = data.draw(st.integers(0, size))
    bound = 2 * size.bit_length() + 2
    assert sum(len(p) for p in merkle.inclusion_nodes(index, size)) <= bound
    assert sum(len(p) for p in merkle.consistency_nodes(old, size)) <= bound
    for part in merkle.inclusion_nodes(index, size) + merkle.consistency_nodes(old, size):
        assert all(merkle.node_slot(n)[0] < size for n in part)  # every node is complete within the tree


def test_bad_ranges_and_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="not aligned"):
        merkle.range_nodes(1, 3)
    with pytest.raises(ValueError, match="empty"):
        merkle.range_nodes(2, 2)
    with pytest.raises(ProofError):
        merkle.inclusion_nodes(3, 3)
    with pytest.raises(ProofError):
        merkle.consistency_nodes(4, 3)
