"""RFC 6962 Merkle math against published reference vectors, plus hypothesis properties.

The vectors are copied from Google's certificate-transparency (python/ct/crypto/merkle_test.py) and
transparency-dev/merkle (testonly/constants.go, proof/verify_test.go), never computed by this code.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from westworld import merkle
from westworld.errors import ProofError

LEAVES = [bytes.fromhex(x) for x in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f",
)]
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# NodeHashes(): level 0 are the leaf hashes, level 3 is the 8-leaf root.
NODES = [
    ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
     "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
     "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
     "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
     "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
     "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
     "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
     "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"],
    ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
     "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"],
    ["d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
ROOTS = [  # by tree size 1..8
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# CompactTrees(): the frontier of each tree size, as (level, index) into NODES.
COMPACT = [[], [(0, 0)], [(1, 0)], [(1, 0), (0, 2)], [(2, 0)], [(2, 0), (0, 4)], [(2, 0), (1, 2)],
           [(2, 0), (1, 2), (0, 6)], [(3, 0)]]
# (0-based leaf index, tree size, audit path)
INCLUSION = [
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
# A real CT log audit path (certificate-transparency merkle_test.py): leaf 848049 of 3630887.
CT_LEAF_HASH = "7a395c866d5ecdb0cccb623e011dbc392cd348d1d1d72776174e127a24b09c78"
CT_INDEX, CT_SIZE = 848049, 3630887
CT_ROOT = "78316a05c9bcf14a3a4548f5b854a9adfcd46a4c034401b3ce7eb7ac2f1d0ecb"
CT_PATH = [
    "1a208aeebcd1b39fe2de247ee8db9454e1e93a312d206b87f6ca9cc6ec6f1ddd",
    "0a1b78b383f580856f433c01a5741e160d451c185910027f6cc9f828687a40c4",
    "3d1745789bc63f2da15850de1c12a5bf46ed81e1cc90f086148b1662e79aab3d",
    "9095b61e14d8990acf390905621e62b1714fb8e399fbb71de5510e0aef45affe",
    "0a332b91b8fab564e6afd1dd452449e04619b18accc0ff9aa8393cd4928451f2",
    "2336f0181d264aed6d8f3a6507ca14a8d3b3c3a23791ac263e845d208c1ee330",
    "b4ce56e300590500360c146c6452edbede25d4ed83919278749ee5dbe178e048",
    "933f6ddc848ea562e4f9c5cfb5f176941301dad0c6fdb9d1fbbe34fac1be6966",
    "b95a6222958a86f74c030be27c44f57dbe313e5e7c7f4ffb98bcbd3a03bb52f2",
    "daeeb3ce5923defd0faeb8e0c210b753b85b809445d7d3d3cd537a9aabaa9c45",
    "7fadd0a13e9138a2aa6c3fdec4e2275af233b94812784f66bcca9aa8e989f2bc",
    "1864e6ba3e32878610546539734fb5eeae2529991f130c575c73a7e25a2a7c56",
    "12842d1202b1dc6828a17ab253c02e7ce9409b5192430feba44189f39cc02d66",
    "29af64b16fa3053c13d02ac63aa75b23aa468506e44c3a2315edc85d2dc22b11",
    "b527b99934a0bd9edd154e449b0502e2c499bba783f3bc3dfe23364b6b532009",
    "4584db8ae8e351ace08e01f306378a92bfd43611714814f3d834a2842d69faa8",
    "86a9a41573b0d6e4292f01e93243d6cc65b30f06606fc6fa57390e7e90ed580f",
    "a88b98fbe84d4c6aae8db9d1605dfac059d9f03fe0fcb0d5dff1295dacba09e6",
    "06326dc617a6d1f7021dc536026dbfd5fffc6f7c5531d48ef6ccd1ed1569f2a1",
    "f41fe8fdc3a2e4e8345e30216e7ebecffee26ff266eeced208a6c2a3cf08f960",
    "40cf5bde8abb76983f3e98ba97aa36240402975674e120f234b3448911090f8d",
    "b3222dc8658538079883d980d7fdc2bef9285344ea34338968f736b04aeb387a",
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def h(x: str) -> bytes:
    return bytes.fromhex(x)


def hashes(n: int) -> list[bytes]:
    return [merkle.leaf_hash(x) for x in LEAVES[:n]]


def flip(b: bytes, bit: int = 3) -> bytes:
    return bytes([b[0] ^ (1 << bit)]) + b[1:]


def test_hashes_match_the_reference_hasher() -> None:
    assert merkle.EMPTY_ROOT.hex() == EMPTY
    assert merkle.leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert merkle.leaf_hash(h("101112131415161718191a1b1c1d1e1f")).hex() == (
        "3bfb960453ebaebf33727da7a1f4db38acc051d381b6da20d6d4e88f0eabfd7a")
    left = h("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
    right = h("202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f")
    assert merkle.node_hash(left, right).hex() == "1a378704c17da31e2d05b6d121c2bb2c7d76f6ee6fa8f983e596c2d034963c57"
    assert [x.hex() for x in hashes(8)] == NODES[0]


@pytest.mark.parametrize("size", range(9))
def test_reference_roots_and_frontiers(size: int) -> None:
    expected = ROOTS[size - 1] if size else EMPTY
    assert merkle.root(LEAVES[:size]).hex() == expected
    frontier = merkle.Frontier.of(hashes(size))
    assert frontier.root().hex() == expected
    assert [x.hex() for x in frontier.nodes] == [NODES[level][i] for level, i in COMPACT[size]]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_reference_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    assert [p.hex() for p in merkle.inclusion_proof(hashes(size), index)] == path
    proof, leaf, root = [h(p) for p in path], hashes(size)[index], h(ROOTS[size - 1])
    assert merkle.verify_inclusion(index, size, leaf, proof, root)
    wrong = [
        (index - 1, size, leaf, proof, root), (index + 1, size, leaf, proof, root),
        (index ^ 2, size, leaf, proof, root),
        (index, size * 2, leaf, proof, root), (index, size // 2, leaf, proof, root),
        (index, size, b"WrongLeaf", proof, root), (index, size, leaf, proof, h(EMPTY)),
        (index, size, leaf, proof, SOME_HASH), (index, size, leaf, [*proof, root], root),
        (index, size, leaf, [root, *proof], root), (index, size, leaf, [*proof, b""], root),
    ]
    wrong += [(index, size, leaf, [*proof[:i], flip(p), *proof[i + 1:]], root) for i, p in enumerate(proof)]
    if proof:
        wrong.append((index, size, leaf, proof[:-1], root))
    for probe in wrong:
        assert not merkle.verify_inclusion(*probe), probe


def test_real_ct_log_audit_path() -> None:
    path = [h(p) for p in CT_PATH]
    assert merkle.root_from_inclusion_proof(CT_INDEX, CT_SIZE, h(CT_LEAF_HASH), path).hex() == CT_ROOT
    assert not merkle.verify_inclusion(CT_INDEX, CT_SIZE, h(CT_LEAF_HASH), path, bytes(32))
    with pytest.raises(ProofError):
        merkle.root_from_inclusion_proof(CT_INDEX + 2 ** (len(path) + 1), CT_SIZE, h(CT_LEAF_HASH), path)


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_reference_consistency_proofs(old: int, new: int, path: list[str]) -> None:
    assert [p.hex() for p in merkle.consistency_proof(hashes(new), old)] == path
    proof, r1, r2 = [h(p) for p in path], h(ROOTS[old - 1]), h(ROOTS[new - 1])
    assert merkle.verify_consistency(old, new, r1, r2, proof)
    if not proof:
        return
    wrong = [
        (old - 1, new, r1, r2, proof), (old + 1, new, r1, r2, proof), (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof), (old, new // 2, r1, r2, proof), (old, new, b"WrongRoot", r2, proof),
        (old, new, r1, b"WrongRoot", proof), (old, new, r2, r1, proof), (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, b""]), (old, new, r1, r2, [*proof, r1]), (old, new, r1, r2, [*proof, r2]),
        (old, new, r1, r2, [b"", *proof]), (old, new, r1, r2, [r1, *proof]), (old, new, r1, r2, [r2, *proof]),
        (old, new, r1, r2, [proof[0], *proof]), (old, new, r1, r2, proof[:-1]),
    ]
    wrong += [(old, new, r1, r2, [*proof[:i], flip(p, 4), *proof[i + 1:]]) for i, p in enumerate(proof)]
    for probe in wrong:
        assert not merkle.verify_consistency(*probe), probe[:2]


def test_consistency_edge_cases() -> None:
    r1, r2 = b"don't care 1", b"don't care 2"
    assert merkle.verify_consistency(0, 0, r1, r1, [])
    assert merkle.verify_consistency(0, 1, r1, r2, [])
    assert merkle.verify_consistency(1, 1, r2, r2, [])
    assert not merkle.verify_consistency(1, 1, r1, r2, [])
    assert not merkle.verify_consistency(1, 0, r1, r2, [])
    assert not merkle.verify_consistency(2, 1, r1, r2, [])
    assert not merkle.verify_consistency(1, 2, r1, r2, [])
    assert not merkle.verify_consistency(0, 1, h(EMPTY), h(EMPTY), [h(EMPTY)])
    assert not merkle.verify_consistency(1, 1, h(EMPTY), h(EMPTY), [h(EMPTY)])


def test_out_of_range_requests_are_refused() -> None:
    with pytest.raises(ProofError):
        merkle.inclusion_proof(hashes(3), 3)
    with pytest.raises(ProofError):
        merkle.consistency_proof(hashes(3), 4)
    for index, size in ((0, 0), (1, 0), (2, 1)):
        assert not merkle.verify_inclusion(index, size, SOME_HASH, [], h(EMPTY))
    with pytest.raises(ValueError, match="holds 2 hashes"):
        merkle.Frontier(3, [SOME_HASH])


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@given(leaf_lists, st.data())
def test_every_inclusion_proof_verifies_and_a_wrong_index_or_bit_fails(
    leaves: list[bytes], data: st.DataObject
) -> None:
    hs = [merkle.leaf_hash(x) for x in leaves]
    n, root = len(hs), merkle.root_of_hashes(hs)
    index = data.draw(st.integers(0, n - 1))
    proof = merkle.inclusion_proof(hs, index)
    assert merkle.verify_inclusion(index, n, hs[index], proof, root)
    other = data.draw(st.integers(0, n - 1))
    if other != index and hs[other] != hs[index]:
        assert not merkle.verify_inclusion(other, n, hs[other], proof, root)
    if proof:
        i, bit = data.draw(st.integers(0, len(proof) - 1)), data.draw(st.integers(0, 255))
        bad = bytearray(proof[i])
        bad[bit // 8] ^= 1 << (bit % 8)
        tampered = [*proof[:i], bytes(bad), *proof[i + 1:]]
        assert not merkle.verify_inclusion(index, n, hs[index], tampered, root)


@given(leaf_lists, st.data())
def test_consistency_proofs_between_any_sizes_verify(leaves: list[bytes], data: st.DataObject) -> None:
    hs = [merkle.leaf_hash(x) for x in leaves]
    new = data.draw(st.integers(0, len(hs)))
    old = data.draw(st.integers(0, new))
    r1, r2 = merkle.root_of_hashes(hs[:old]), merkle.root_of_hashes(hs[:new])
    proof = merkle.consistency_proof(hs[:new], old)
    assert merkle.verify_consistency(old, new, r1, r2, proof)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad = bytearray(proof[i])
        bad[data.draw(st.integers(0, 31))] ^= 1
        assert not merkle.verify_consistency(old, new, r1, r2, [*proof[:i], bytes(bad), *proof[i + 1:]])
        assert not merkle.verify_consistency(old, new, r1, flip(r2), proof)


@given(leaf_lists, st.integers(0, 69))
def test_frontier_agrees_with_the_full_computation(leaves: list[bytes], split: int) -> None:
    hs = [merkle.leaf_hash(x) for x in leaves]
    split = min(split, len(hs))
    saved = merkle.Frontier.of(hs[:split])
    resumed = merkle.Frontier(saved.size, saved.nodes)  # restored from its saved form, then extended
    for x in hs[split:]:
        resumed.append(x)
    assert resumed.size == len(hs)
    assert resumed.root() == merkle.root_of_hashes(hs) == merkle.root(leaves)
    assert saved.root() == merkle.root_of_hashes(hs[:split])
