"""The tamper-evident audit log's models and its verification rules (pure: the store feeds it the rows).

Each entry's leaf is the canonical JSON (sorted keys, no spaces) of its kind, subject, payload and creation
time. The entry's ``seq`` is deliberately not part of the leaf: rows swapped between positions keep valid leaf
hashes and show up as a broken root chain ("reordered") rather than as changed payloads. Every row stores the
root of the log right after it (``root_after``), which :func:`check_rows` re-derives.

Stored rows are read as text and checked before they are trusted: a payload must parse as JSON with no key twice
(a duplicate-refusing ``object_pairs_hook``: with ``{"decision":"rejected","decision":"approved"}`` a first-key
reader and a last-key reader would see different decisions) and its stored bytes must be exactly its canonical
serialisation; a creation time must be an ISO 8601 time. Every unreadable entry is named with what is wrong.
Checking the log against heads kept apart from it (signed heads, on-chain anchors) is :mod:`westworld.audit_trust`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from westworld import merkle
from westworld.audit_anchor import AnchoredHead, SignedHead
from westworld.errors import DuplicateKeyError, InvalidInput

ProblemKind = Literal[
    "payload_changed", "entry_missing", "reordered", "head_mismatch", "not_json", "duplicate_key", "not_canonical",
    "bad_timestamp", "bad_row", "truncated", "rewritten", "bad_signed_head", "no_signed_head",
]
HEX64 = frozenset("0123456789abcdef")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str) -> Any:
    """Parse stored JSON strictly: a key twice in one object, NaN or Infinity is refused.

    Raises:
        DuplicateKeyError: an object names a key twice.
        ValueError: the text is not JSON (``json.JSONDecodeError`` is a ``ValueError``).
    """
    return json.loads(text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the one form entries are stored and hashed in.

    Raises:
        TypeError, ValueError: ``value`` is not plain JSON (or holds NaN/infinity).
    """
    return _CANONICAL.encode(value)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def timestamp(at: datetime) -> str:
    """The hashed form of a creation time: UTC, ISO 8601 with microseconds (a naive time is taken as UTC)."""
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    """A stored creation time (ISO 8601; SQLite keeps it without offset, which means UTC).

    Raises:
        ValueError: ``text`` is not an ISO 8601 time.
    """
    at = datetime.fromisoformat(text)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def entry_leaf(kind: str, subject: str, payload_json: str, created_at: datetime) -> bytes:
    """The leaf data of one entry (``payload_json`` is the stored canonical payload text, parsed strictly)."""
    body = {"kind": kind, "subject": subject, "payload": parse_json(payload_json), "created_at": timestamp(created_at)}
    return canonical_json(body).encode()


def canonical_leaf(kind: str, subject: str, payload_json: str, created_at: str) -> bytes:
    """:func:`entry_leaf` for a payload already in canonical form and a time already in :func:`timestamp` form,
    without parsing anything: the body's keys sort as created_at, kind, payload, subject."""
    return (f'{{"created_at":{encode_basestring(created_at)},"kind":{encode_basestring(kind)},'
            f'"payload":{payload_json},"subject":{encode_basestring(subject)}}}').encode()


def canonical_payload(payload: Any) -> str:
    """The canonical text of a payload to append: its bytes are exactly what :func:`canonical_json` makes of their
    own parse (a payload keyed by numbers sorts as numbers, its stored text as strings: it is sorted again).

    Raises:
        TypeError, ValueError: ``payload`` is not plain JSON, or two of its keys are the same as text
            (:class:`~westworld.errors.DuplicateKeyError`).
    """
    text = canonical_json(payload)
    if canonical_json(json.loads(text)) != text:
        text = canonical_json(parse_json(text))
    return text


def _readable_leaf(kind: str, subject: str, payload_json: str, created_at: str) -> bytes | None:
    """The recomputed leaf hash of a row whose payload is canonical JSON and whose time reads, or None when the row
    needs the full checks. Plain ``json.loads`` is exact here: text with a key twice, NaN or non-canonical bytes
    cannot equal the canonical serialisation of its parse."""
    try:
        if canonical_json(json.loads(payload_json)) != payload_json:
            return None
        at = timestamp(parse_time(created_at))
    except ValueError:
        return None
    return merkle.leaf_hash(canonical_leaf(kind, subject, payload_json, at))


class AuditEntryInput(BaseModel):
    """A decision to record: what happened (``kind``, e.g. ``vote.result``), to what, and its details."""

    kind: str = Field(min_length=1, max_length=64, description="e.g. 'vote.result', 'capability.denied'")
    subject: str = Field(max_length=256, description="What the decision is about, e.g. a proposal id.")
    payload: dict[str, Any]


class AuditReceipt(BaseModel):
    """Where an entry landed: its position, leaf hash, and the log's root and size right after it."""

    seq: int
    leaf_hash: str
    root: str
    tree_size: int


class AuditEntry(BaseModel):
    """One stored entry as read back from the log; ``problem`` says why its payload or time could not be read
    (then ``payload`` is empty, and an unreadable time shows as the epoch)."""

    seq: int
    kind: str
    subject: str
    payload: dict[str, Any]
    leaf_hash: str
    root_after: str
    created_at: datetime
    problem: str | None = None


class StoredEntry(BaseModel):
    """A raw row as verification sees it: every column as stored text, checked by :func:`check_rows`."""

    seq: int
    kind: str
    subject: str
    payload_json: str
    leaf_hash: str
    root_after: str
    created_at: str


class TreeHead(BaseModel):
    """A (size, root) pair someone trusts, e.g. a root anchored on chain earlier."""

    tree_size: int = Field(ge=0)
    root: str


class InclusionProof(BaseModel):
    """Proof that entry ``seq`` is in the tree of ``tree_size`` entries with ``root`` (hex hashes)."""

    seq: int
    tree_size: int
    leaf_hash: str
    root: str
    path: list[str]

    def verify(self) -> bool:
        """Check the proof with the RFC 9162 algorithm."""
        return merkle.verify_inclusion(
            self.seq, self.tree_size, bytes.fromhex(self.leaf_hash), [bytes.fromhex(h) for h in self.path],
            bytes.fromhex(self.root),
        )


class ConsistencyProof(BaseModel):
    """Proof that the log of ``new_size`` entries extends its first ``old_size`` entries (hex hashes)."""

    old_size: int
    new_size: int
    old_root: str
    new_root: str
    path: list[str]

    def verify(self) -> bool:
        """Check the proof with the RFC 9162 algorithm."""
        return merkle.verify_consistency(
            self.old_size, self.new_size, bytes.fromhex(self.old_root), bytes.fromhex(self.new_root),
            [bytes.fromhex(h) for h in self.path],
        )


def inclusion_proof_of(hashes: Sequence[bytes], seq: int) -> InclusionProof:
    """The inclusion proof of entry ``seq`` in the tree of the leaf ``hashes``.

    Raises:
        InvalidInput: ``seq`` is not in the tree.
    """
    if not 0 <= seq < len(hashes):
        raise InvalidInput(f"audit entry {seq} is not in a tree of {len(hashes)} entries")
    return InclusionProof(seq=seq, tree_size=len(hashes), leaf_hash=hashes[seq].hex(),
                          root=merkle.root_of_hashes(hashes).hex(),
                          path=[h.hex() for h in merkle.inclusion_proof(hashes, seq)])


def consistency_proof_of(hashes: Sequence[bytes], old_size: int) -> ConsistencyProof:
    """The proof that the tree of the leaf ``hashes`` extends its first ``old_size`` leaves.

    Raises:
        InvalidInput: ``old_size`` is larger than the tree.
    """
    if not 0 <= old_size <= len(hashes):
        raise InvalidInput(f"old size {old_size} is not within a log of {len(hashes)} entries")
    return ConsistencyProof(old_size=old_size, new_size=len(hashes),
                            old_root=merkle.root_of_hashes(hashes[:old_size]).hex(),
                            new_root=merkle.root_of_hashes(hashes).hex(),
                            path=[h.hex() for h in merkle.consistency_proof(hashes, old_size)])


class AuditProblem(BaseModel):
    """One thing wrong with the log, at entry ``seq``."""

    seq: int
    kind: ProblemKind
    message: str


class VerifyReport(BaseModel):
    """The outcome of recomputing the whole log; ``root`` is over the leaves recomputed from the payloads.

    ``checked`` says in words what the log was checked against; ``anchor_proof`` is the consistency proof from the
    anchored head to this head, which a client holding only the chain's anchor checks on its own.
    """

    tree_size: int
    root: str
    problems: list[AuditProblem] = []
    log_key: str = ""
    signed_head: SignedHead | None = None
    anchor: AnchoredHead | None = None
    anchor_proof: ConsistencyProof | None = None
    checked: list[str] = []
    omitted_problems: int = Field(0, description="Problems found beyond the ones listed (the list is capped).")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def _missing(expected: int, seq: int) -> AuditProblem:
    gap = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
    return AuditProblem(seq=expected, kind="entry_missing",
                        message=f"entry {gap} removed: the log jumps from seq {expected - 1} to {seq}")


def _changed(entry: StoredEntry) -> AuditProblem:
    return AuditProblem(
        seq=entry.seq, kind="payload_changed",
        message=f"entry {entry.seq} ({entry.kind} {entry.subject}): its content no longer matches its leaf hash "
                f"{entry.leaf_hash[:16]}…: the payload, kind, subject or time was changed",
    )


def _reordered(seq: int, root_after: str) -> AuditProblem:
    return AuditProblem(
        seq=seq, kind="reordered",
        message=f"entry {seq}: the root recorded after it ({root_after[:16]}…) does not follow from "
                f"the entries up to it although its own leaf hash is intact: entries were reordered (or replaced "
                f"together with their leaf hashes)",
    )


def _hex64(value: str) -> bool:
    return len(value) == 64 and set(value) <= HEX64


def _unreadable(entry: StoredEntry) -> AuditProblem | None:
    """Why the stored row cannot be read as an entry, or None."""
    where = f"entry {entry.seq} ({entry.kind} {entry.subject})"
    try:
        payload = parse_json(entry.payload_json)
    except DuplicateKeyError as err:
        return AuditProblem(seq=entry.seq, kind="duplicate_key",
                            message=f"{where}: its payload is not canonical JSON: {err} (readers that keep the first "
                                    f"or the last value would see different content)")
    except ValueError as err:
        return AuditProblem(seq=entry.seq, kind="not_json",
                            message=f"{where}: its payload is not JSON ({err}): {entry.payload_json[:60]!r}")
    if canonical_json(payload) != entry.payload_json:
        return AuditProblem(seq=entry.seq, kind="not_canonical",
                            message=f"{where}: its stored payload bytes differ from their canonical serialisation "
                                    f"(sorted keys, no spaces): {entry.payload_json[:60]!r}")
    try:
        parse_time(entry.created_at)
    except ValueError:
        return AuditProblem(seq=entry.seq, kind="bad_timestamp",
                            message=f"{where}: its creation time {entry.created_at[:40]!r} is not an ISO 8601 time")
    for column, value in (("leaf_hash", entry.leaf_hash), ("root_after", entry.root_after)):
        if not _hex64(value):
            return AuditProblem(seq=entry.seq, kind="bad_row",
                                message=f"{where}: its {column} {value[:70]!r} is not a 64-digit hex hash")
    return None


class RowChecker:
    """:func:`check_rows` one row at a time, in constant memory, for logs too large to hold.

    It keeps the tree over the *stored* leaf hashes (:attr:`stored`, which also checks the root chain) and, once
    a recomputed leaf differs from its stored hash, a second tree over the recomputed leaves (:attr:`recomputed`).
    A row's stored tree nodes (the perfect subtree roots its append completed, hex, level 1 first) are checked
    against the stored leaf hashes (:meth:`stale_nodes`).
    """

    def __init__(self) -> None:
        self.problems: list[AuditProblem] = []
        self.rows = 0
        self.stored = merkle.Frontier()
        self._recomputed: merkle.Frontier | None = None
        self._chain_ok = True
        self._stale_first: int | None = None
        self._stale_count = 0

    @property
    def recomputed(self) -> merkle.Frontier:
        """The tree over the leaves recomputed from the payloads."""
        return self._recomputed if self._recomputed is not None else self.stored

    def feed(self, seq: int, kind: str, subject: str, payload_json: str, leaf_hash: str, root_after: str,
             created_at: str, nodes: str | None = None) -> tuple[bytes, bytes, list[bytes]]:
        """Check the next row; returns its recomputed leaf, the leaf counted in the stored tree, and the nodes
        appending that leaf completed in the stored tree."""
        expected, self.rows = self.rows, self.rows + 1
        if self._chain_ok and seq != expected:
            self.problems.append(_missing(expected, seq))
            self._chain_ok = False  # later roots cover the removed leaves: they cannot be rechecked
        leaf = _readable_leaf(kind, subject, payload_json, created_at)
        # A leaf that matches its stored hash proves that hash well-formed; root_after is proved by the chain check
        # below while the chain holds, and checked here once it no longer does.
        fast = leaf is not None and leaf.hex() == leaf_hash and (self._chain_ok or _hex64(root_after))
        if leaf is not None and fast:
            stored = leaf
        else:
            leaf, stored = self._full_check(self._entry(seq, kind, subject, payload_json, leaf_hash, root_after,
                                                        created_at))
        if self._recomputed is None and leaf != stored:
            self._recomputed = self.stored.copy()
        completed = self.stored.append(stored)
        if self._recomputed is not None:
            self._recomputed.append(leaf)
        if self._chain_ok and self.stored.root().hex() != root_after:
            bad = _unreadable(self._entry(seq, kind, subject, payload_json, leaf_hash, root_after, created_at))
            self.problems.append(bad if fast and bad is not None else _reordered(seq, root_after))
            self._chain_ok = False  # every later root differs too: report the first break only
        if nodes is not None and "".join(h.hex() for h in completed) != nodes:
            self._stale_count += 1
            self._stale_first = seq if self._stale_first is None else self._stale_first
        return leaf, stored, completed

    @staticmethod
    def _entry(seq: int, kind: str, subject: str, payload_json: str, leaf_hash: str, root_after: str,
               created_at: str) -> StoredEntry:
        return StoredEntry(seq=seq, kind=kind, subject=subject, payload_json=payload_json, leaf_hash=leaf_hash,
                           root_after=root_after, created_at=created_at)

    def _full_check(self, entry: StoredEntry) -> tuple[bytes, bytes]:
        """The strict checks of a row the fast path could not clear; its (recomputed, stored-in-tree) leaves."""
        if (bad := _unreadable(entry)) is not None:
            self.problems.append(bad)
            self._chain_ok = self._chain_ok and _hex64(entry.leaf_hash) and _hex64(entry.root_after)
            leaf = bytes.fromhex(entry.leaf_hash) if _hex64(entry.leaf_hash) else merkle.EMPTY_ROOT
            return leaf, leaf
        leaf = merkle.leaf_hash(entry_leaf(entry.kind, entry.subject, entry.payload_json,
                                           parse_time(entry.created_at)))
        if leaf.hex() != entry.leaf_hash:
            self.problems.append(_changed(entry))
        return leaf, bytes.fromhex(entry.leaf_hash)

    def finish(self) -> list[AuditProblem]:
        """The problems found in the rows (stale tree nodes apart: :meth:`stale_nodes`)."""
        return self.problems

    def stale_nodes(self) -> AuditProblem | None:
        """The first row whose stored tree nodes do not follow from the stored leaf hashes; for the caller to name
        when nothing else was found (a rewrite leaves them stale too, and the rewrite is what to name)."""
        if self._stale_first is None:
            return None
        first = self._stale_first
        return AuditProblem(
            seq=first, kind="bad_row",
            message=f"entry {first}: the tree nodes stored with it (and with {self._stale_count - 1} later entries) "
                    f"do not follow from the stored leaf hashes: proofs served from them would not verify (the "
                    f"nodes column was edited)")


def check_rows(entries: Iterable[StoredEntry]) -> tuple[list[bytes], list[AuditProblem]]:
    """Recompute each leaf and the root chain; returns the recomputed leaf hashes and the problems.

    An unreadable entry is reported and counts in the recomputed tree with its stored leaf hash (when that is a
    hash at all), so heads that cover it are not reported a second time for it.
    """
    checker = RowChecker()
    leaves = [checker.feed(e.seq, e.kind, e.subject, e.payload_json, e.leaf_hash, e.root_after, e.created_at)[0]
              for e in entries]
    return leaves, checker.finish()


def check_trusted_head(n: int, root_at: str | None, trusted: TreeHead) -> AuditProblem | None:
    """Check a log of ``n`` entries, whose recomputed root at the trusted size is ``root_at``, against ``trusted``."""
    if trusted.tree_size > n:
        return AuditProblem(
            seq=n, kind="head_mismatch",
            message=f"the log has {n} entries but a trusted head has {trusted.tree_size}: "
                    f"entries {n}..{trusted.tree_size - 1} were removed",
        )
    if root_at != trusted.root:
        return AuditProblem(
            seq=max(trusted.tree_size - 1, 0), kind="head_mismatch",
            message=f"the first {trusted.tree_size} entries do not hash to the trusted root {trusted.root[:16]}…: "
                    f"the log is not an extension of the trusted head (its history was rewritten)",
        )
    return None
