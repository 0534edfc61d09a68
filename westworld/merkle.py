"""RFC 6962 (Certificate Transparency) Merkle tree math: hashes, roots, inclusion and consistency proofs.

Pure functions over SHA-256, no I/O. Leaves are hashed as ``SHA-256(0x00 || data)`` and inner nodes as
``SHA-256(0x01 || left || right)`` (RFC 6962 section 2.1), so a leaf can never pass for a node. Proof
generation follows RFC 6962 section 2.1.1 (``PATH``) and 2.1.2 (``PROOF``); verification follows RFC 9162
sections 2.1.3.2 and 2.1.4.2. :class:`Frontier` keeps only the right edge of the tree (one subtree root
per set bit of the size), so appending to an N-entry log costs O(log N) without reading its leaves.

A stored tree answers proofs without its leaves: every hash a proof needs is the root of a *perfect* subtree,
named by :data:`Node` ``(level, index)``, the root over leaves ``[index << level, (index + 1) << level)``.
:func:`inclusion_nodes`, :func:`consistency_nodes` and :func:`range_nodes` say which nodes each proof element
folds (:func:`fold`), so a proof at any size reads O(log N) stored nodes. :meth:`Frontier.append` returns the
nodes each leaf completes, which is what a store keeps; :func:`node_slot` says where.

:func:`root` takes raw leaf data; every other function takes leaf *hashes*.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from westworld.errors import ProofError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """Hash one leaf's data: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash two child hashes: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The right edge of a Merkle tree: the roots of its perfect subtrees, largest (leftmost) first.

    Appending a leaf hash merges equal-sized subtrees like a binary counter, so the frontier of an
    N-leaf tree holds ``popcount(N)`` hashes and yields the same root as :func:`root_of_hashes`.
    """

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        """Restore a frontier saved as ``(size, nodes)``; with no arguments, the empty tree.

        Raises:
            ValueError: if ``nodes`` does not hold one hash per set bit of ``size``.
        """
        if size < 0 or len(nodes) != size.bit_count():
            raise ValueError(f"a frontier of size {size} holds {max(size, 0).bit_count()} hashes, got {len(nodes)}")
        self._size = size
        self._nodes = list(nodes)

    @classmethod
    def of(cls, hashes: Iterable[bytes]) -> Frontier:
        """The frontier of the tree of ``hashes`` (appended in order)."""
        frontier = cls()
        for h in hashes:
            frontier.append(h)
        return frontier

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def nodes(self) -> list[bytes]:
        """The subtree roots, leftmost first (a copy, for saving)."""
        return list(self._nodes)

    def append(self, leaf: bytes) -> list[bytes]:
        """Append one leaf hash (not leaf data); returns the perfect subtree roots it completes, level 1 first
        (node ``(level, n >> level)`` for ``level`` 1, 2, ..., where ``n`` is the size before; none when it is even)."""
        self._nodes.append(leaf)
        completed: list[bytes] = []
        carry = self._size
        while carry & 1:
            right = self._nodes.pop()
            self._nodes[-1] = node_hash(self._nodes[-1], right)
            completed.append(self._nodes[-1])
            carry >>= 1
        self._size += 1
        return completed

    def root(self) -> bytes:
        """The Merkle tree hash of the leaves appended so far."""
        return fold(self._nodes)

    def copy(self) -> Frontier:
        """An independent copy (append to it; keep it only once the append is durable)."""
        return Frontier(self._size, self._nodes)


Node = tuple[int, int]
"""``(level, index)``: the root of the perfect subtree over leaves ``[index << level, (index + 1) << level)``."""


def node_slot(node: Node) -> tuple[int, int]:
    """Where a store that keeps, with each leaf, the nodes :meth:`Frontier.append` returned for it finds ``node``:
    ``(leaf index, slot)``, slot -1 for the leaf hash itself and ``level - 1`` in the completed list otherwise."""
    level, index = node
    return ((index + 1) << level) - 1, level - 1


def range_nodes(lo: int, hi: int) -> list[Node]:
    """The perfect subtrees whose roots :func:`fold` into ``MTH(D[lo:hi])``, largest first.

    ``lo`` must be aligned as in RFC 6962's recursion (a multiple of the power of two at or above ``hi - lo``),
    which every range of a proof or of a tree's root is.

    Raises:
        ValueError: the range is empty or not so aligned.
    """
    if not 0 <= lo < hi:
        raise ValueError(f"empty or negative range [{lo}, {hi})")
    nodes: list[Node] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo & ((1 << level) - 1):
            raise ValueError(f"range [{lo}, {hi}) is not aligned as RFC 6962 splits a tree")
        nodes.append((level, lo >> level))
        lo += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root over the subtree roots ``hashes`` of :func:`range_nodes` (largest first)."""
    if not hashes:
        return EMPTY_ROOT
    acc, sha256 = hashes[-1], hashlib.sha256
    for i in range(len(hashes) - 2, -1, -1):
        acc = sha256(NODE_PREFIX + hashes[i] + acc).digest()  # node_hash, inlined: this runs once per append
    return acc


def inclusion_nodes(index: int, size: int) -> list[list[Node]]:
    """For each hash of ``PATH(index, D[size])`` (leaf side first), the nodes that fold into it.

    Raises:
        ProofError: if ``index`` is not in ``[0, size)``.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    path: list[list[Node]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(range_nodes(lo + k, hi))
            hi = lo + k
        else:
            path.append(range_nodes(lo, lo + k))
            lo += k
    path.reverse()
    return path


def consistency_nodes(old_size: int, new_size: int) -> list[list[Node]]:
    """For each hash of ``PROOF(old_size, D[new_size])``, the nodes that fold into it.

    Raises:
        ProofError: if ``old_size`` is not in ``[0, new_size]``.
    """
    if not 0 <= old_size <= new_size:
        raise ProofError(f"old size {old_size} is outside [0, {new_size}]")
    if old_size in (0, new_size):
        return []
    path: list[list[Node]] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(range_nodes(lo + k, hi))
            hi = lo + k
        else:
            path.append(range_nodes(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        path.append(range_nodes(lo, hi))
    path.reverse()
    return path


def _range_root(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH of the leaf hashes ``hashes[lo:hi]``, iteratively and without copying them."""
    frontier = Frontier()
    for i in range(lo, hi):
        frontier.append(hashes[i])
    return frontier.root()


def root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash (MTH) of a list of leaf hashes; the empty tree hashes to ``SHA-256("")``."""
    return _range_root(hashes, 0, len(hashes))


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of a list of raw leaf data."""
    return root_of_hashes([leaf_hash(d) for d in leaves])


def inclusion_proof(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path ``PATH(index, D[n])`` of leaf ``index`` in the tree of ``hashes`` (RFC 6962 2.1.1).

    Raises:
        ProofError: if ``index`` is not in ``[0, len(hashes))``.
    """
    if not 0 <= index < len(hashes):
        raise ProofError(f"leaf index {index} is outside a tree of size {len(hashes)}")
    path: list[bytes] = []
    lo, hi = 0, len(hashes)
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(_range_root(hashes, lo + k, hi))
            hi = lo + k
        else:
            path.append(_range_root(hashes, lo, lo + k))
            lo += k
    path.reverse()  # collected root-side first; the proof lists the leaf side first
    return path


def consistency_proof(hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """``PROOF(old_size, D[n])`` between the first ``old_size`` leaves and all of ``hashes`` (RFC 6962 2.1.2).

    Raises:
        ProofError: if ``old_size`` is not in ``[0, len(hashes)]``.
    """
    if not 0 <= old_size <= len(hashes):
        raise ProofError(f"old size {old_size} is outside [0, {len(hashes)}]")
    if old_size in (0, len(hashes)):
        return []
    path: list[bytes] = []
    lo, hi, m, complete = 0, len(hashes), old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(_range_root(hashes, lo + k, hi))
            hi = lo + k
        else:
            path.append(_range_root(hashes, lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
        path.append(_range_root(hashes, lo, hi))
    path.reverse()
    return path


def _check_sizes(*hashes: bytes) -> None:
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise ProofError(f"a hash has {len(h)} bytes, expected {HASH_SIZE}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root ``proof`` implies for leaf hash ``leaf`` at ``index`` in a tree of ``size`` (RFC 9162 2.1.3.2).

    Raises:
        ProofError: if the index is out of range, a hash has the wrong size, or the proof has the wrong length.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_sizes(leaf, *proof)
    fn, sn, acc = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError(f"the proof is too long for leaf {index} of {size}")
        if fn & 1 or fn == sn:
            acc = node_hash(p, acc)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            acc = node_hash(acc, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"the proof is too short for leaf {index} of {size}")
    return acc


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size`` leaves with ``root_hash``."""
    try:
        return root_from_inclusion_proof(index, size, leaf, proof) == root_hash
    except ProofError:
        return False


def _consistency_roots(old_size: int, new_size: int, old_root: bytes, proof: Sequence[bytes]) -> tuple[bytes, bytes]:
    """Recompute (old root, new root) from a proof for ``0 < old_size < new_size`` (RFC 9162 2.1.4.2, 2-7)."""
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # the old tree is a perfect subtree: its root starts the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"the consistency proof is too long for {old_size} -> {new_size}")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"the consistency proof is too short for {old_size} -> {new_size}")
    return fr, sr


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree (``new_size``, ``new_root``) extends (``old_size``, ``old_root``).

    The empty tree is a prefix of every tree (with an empty proof); equal sizes need equal roots and an
    empty proof.
    """
    if not 0 <= old_size <= new_size:
        return False
    if old_size in (0, new_size):
        return not proof and (old_size == 0 or old_root == new_root)
    if not proof:
        return False
    try:
        _check_sizes(old_root, new_root, *proof)
        fr, sr = _consistency_roots(old_size, new_size, old_root, proof)
    except ProofError:
        return False
    return fr == old_root and sr == new_root
