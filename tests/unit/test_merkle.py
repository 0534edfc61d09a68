"""RFC 6962 Merkle math against the Certificate Transparency reference vectors, plus properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from westworld import merkle

# The reference leaves and roots of Google's certificate-transparency merkle_tree_test (RFC 6962 test data).
LEAVES = [bytes.fromhex(x) for x in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f"]]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_empty_tree_root() -> None:
    assert merkle.root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_reference_roots() -> None:
    for size in range(1, 9):
        assert merkle.root(LEAVES[:size]).hex() == ROOTS[size - 1], f"size {size}"


def test_reference_inclusion_proof() -> None:
    # Leaf 0 in the 8-leaf tree: the reference audit path.
    hashes = [merkle.leaf_hash(x) for x in LEAVES]
    assert [p.hex() for p in merkle.inclusion_proof(hashes, 0)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]


def test_reference_consistency_proof() -> None:
    hashes = [merkle.leaf_hash(x) for x in LEAVES]
    assert [p.hex() for p in merkle.consistency_proof(hashes, 1)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=40)


@given(leaves=leaf_lists, data=st.data())
def test_every_inclusion_proof_verifies_and_tampering_fails(leaves: list[bytes], data: st.DataObject) -> None:
    hashes = [merkle.leaf_hash(x) for x in leaves]
    root = merkle.root_of_hashes(hashes)
    i = data.draw(st.integers(0, len(leaves) - 1))
    proof = merkle.inclusion_proof(hashes, i)
    assert merkle.verify_inclusion(hashes[i], i, len(leaves), proof, root)
    assert not merkle.verify_inclusion(merkle.leaf_hash(leaves[i] + b"x"), i, len(leaves), proof, root)
    if len(leaves) > 1:
        j = (i + 1) % len(leaves)
        assert hashes[j] == hashes[i] or not merkle.verify_inclusion(hashes[i], j, len(leaves), proof, root)


@given(leaves=leaf_lists, data=st.data())
def test_every_consistency_proof_verifies(leaves: list[bytes], data: st.DataObject) -> None:
    hashes = [merkle.leaf_hash(x) for x in leaves]
    m = data.draw(st.integers(1, len(leaves)))
    proof = merkle.consistency_proof(hashes, m)
    old, new = merkle.root_of_hashes(hashes[:m]), merkle.root_of_hashes(hashes)
    assert merkle.verify_consistency(m, len(leaves), old, new, proof)
    if m < len(leaves):
        forged_old = merkle.node_hash(old, old)
        assert not merkle.verify_consistency(m, len(leaves), forged_old, new, proof)


@given(leaves=st.lists(st.binary(max_size=8), max_size=70))
def test_frontier_agrees_with_full_computation(leaves: list[bytes]) -> None:
    f = merkle.Frontier()
    for x in leaves:
        f.append(merkle.leaf_hash(x))
    assert f.root() == merkle.root(leaves)
    rebuilt = merkle.Frontier(f.size, f.nodes)
    rebuilt.append(merkle.leaf_hash(b"next"))
    assert rebuilt.root() == merkle.root([*leaves, b"next"])
