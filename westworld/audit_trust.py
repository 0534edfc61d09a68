"""Verifying the audit log against heads kept apart from it: the latest signed heads and the on-chain anchor.

A log that only agrees with itself proves little: whoever can write its table can drop the last entries, or edit
one and recompute every hash after it, and the rows still chain. So :func:`verify_log` also checks

- every **signed head** in the heads file (signed by the worker's own key, see :mod:`westworld.audit_anchor`):
  its signature, that its size is not beyond the log ("truncated"), and that the root recomputed from the
  payloads at its size is the root it signed ("rewritten", naming the first entry that differs: heads are signed
  after every append, so consecutive heads pin it down to one entry);
- the **latest anchor on chain**: the same two checks, and the RFC 6962 consistency proof from the anchored
  (size, root) to today's head, which the report carries so a client holding only the chain can check it.

:class:`LogVerifier` does all of it one row at a time: the sizes whose roots the heads need and the nodes of
the anchor's proof are known before the rows are read, so a log of millions of entries is checked in constant
memory, in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, Field

from westworld import merkle
from westworld.audit import (
    AuditEntry,
    AuditProblem,
    ConsistencyProof,
    RowChecker,
    StoredEntry,
    TreeHead,
    VerifyReport,
    check_trusted_head,
)
from westworld.audit_anchor import AnchoredHead, HeadLine, SignedHead, head_signature_ok

MAX_PROBLEMS = 200  # a report travels as one Temporal payload: name the first ones, count the rest
MAX_SHOWN = 1000


def _entries(lo: int, hi: int) -> str:
    return f"entry {lo}" if hi - lo <= 1 else f"one of entries {lo}..{hi - 1}"


def check_signed_heads(
    n: int, roots: Mapping[int, str], lines: Sequence[HeadLine], public_key: str
) -> tuple[SignedHead | None, list[AuditProblem]]:
    """Check the log of ``n`` entries, whose root at each head's size (within the log) is in ``roots``, against
    the signed heads; returns the latest validly signed head and the problems.

    A signature is checked only where it decides something (an Ed25519 check costs far more than a root): the
    latest head (truncation), a head whose root the log does not match (rewritten, or a forged line), and the
    nearest matching head below it (which bounds the rewritten entries). A line that does not verify is named.
    """
    problems = [AuditProblem(seq=-1, kind="bad_signed_head", message=f"signed heads, line {x.line}: unreadable "
                             f"({x.error})") for x in lines if x.head is None]
    heads = sorted(((x.line, x.head) for x in lines if x.head is not None), key=lambda v: v[1].tree_size)
    forged: dict[int, bool] = {}

    def valid(line: int, head: SignedHead) -> bool:
        if line not in forged:
            forged[line] = not head_signature_ok(head, public_key)
            if forged[line]:
                problems.append(AuditProblem(
                    seq=max(head.tree_size - 1, 0), kind="bad_signed_head",
                    message=f"signed heads, line {line} (size {head.tree_size}): the signature does not verify "
                            f"under the log key {public_key[:16]}…: the heads file was edited"))
        return not forged[line]

    latest = next(((line, head) for line, head in reversed(heads) if valid(line, head)), None)
    if latest is None:
        if n:
            problems.append(AuditProblem(seq=n - 1, kind="no_signed_head",
                                         message=f"the log has {n} entries but no valid signed head vouches for any "
                                                 f"of them: the heads file is missing, empty or was replaced"))
        return None, problems
    if latest[1].tree_size > n:
        problems.append(AuditProblem(
            seq=n, kind="truncated",
            message=f"the log has {n} entries but the signed head on line {latest[0]} (signed {latest[1].signed_at}) "
                    f"says {latest[1].tree_size} > {n}: entries {n}..{latest[1].tree_size - 1} were removed"))
    for i, (line, head) in enumerate(heads):
        if head.tree_size > n:
            break
        if roots[head.tree_size] == head.root or not valid(line, head):
            continue
        lo = next((h.tree_size for ln, h in reversed(heads[:i]) if roots[h.tree_size] == h.root and valid(ln, h)), 0)
        problems.append(AuditProblem(
            seq=lo, kind="rewritten",
            message=f"{_entries(lo, head.tree_size)} differs from what the signed head of size {head.tree_size} "
                    f"(line {line}, signed {head.signed_at}) committed to: the log was rewritten and its hashes "
                    f"recomputed"))
        break  # every later head covers the same change
    return latest[1], problems


def check_anchor(n: int, root_at_anchor: str | None, anchor: AnchoredHead) -> list[AuditProblem]:
    """Check the log of ``n`` entries, whose root at the anchor's size is ``root_at_anchor``, against the latest
    on-chain anchor."""
    where = f"the anchor on chain (tx {anchor.tx_hash}, block {anchor.block})"
    if anchor.tree_size > n:
        return [AuditProblem(seq=n, kind="truncated",
                             message=f"the log has {n} entries but {where} says {anchor.tree_size} > {n}: entries "
                                     f"{n}..{anchor.tree_size - 1} were removed")]
    if root_at_anchor != anchor.root:
        return [AuditProblem(seq=max(anchor.tree_size - 1, 0), kind="rewritten",
                             message=f"the first {anchor.tree_size} entries do not hash to the root "
                                     f"{anchor.root[:16]}… of {where}: an entry below {anchor.tree_size} was "
                                     f"rewritten and its hashes recomputed")]
    return []


class LogVerifier:
    """:func:`verify_log` over rows fed one at a time (:meth:`feed`), for a log of ``size`` rows."""

    def __init__(
        self, size: int, *, heads: Sequence[HeadLine] | None = None, public_key: str = "",
        anchor: AnchoredHead | None = None, trusted: TreeHead | None = None,
    ) -> None:
        self._size, self._heads, self._key, self._anchor, self._trusted = size, heads, public_key, anchor, trusted
        self._rows = RowChecker()
        # Heads are checked over the *stored* leaf hashes: content that no longer matches its stored hash is named
        # by the row checks, and a rewrite whose hashes were recomputed shows here, so each change is named once.
        sizes = {h.head.tree_size for h in heads or () if h.head is not None}
        self._stored_at = {s: "" for s in sizes | ({anchor.tree_size} if anchor else set()) if s <= size}
        self._recomputed_at = {trusted.tree_size: ""} if trusted is not None and trusted.tree_size <= size else {}
        for roots in (self._stored_at, self._recomputed_at):
            if 0 in roots:
                roots[0] = merkle.EMPTY_ROOT.hex()
        self._proof_plan = (merkle.consistency_nodes(anchor.tree_size, size)
                            if anchor is not None and anchor.tree_size <= size else [])
        self._wanted: dict[merkle.Node, bytes] = {n: b"" for part in self._proof_plan for n in part}

    def feed(self, seq: int, kind: str, subject: str, payload_json: str, leaf_hash: str, root_after: str,
             created_at: str, nodes: str | None = None) -> None:
        """The next row, every column as stored text (``nodes``: the stored tree nodes, None if not stored)."""
        index = self._rows.rows
        _, stored, completed = self._rows.feed(seq, kind, subject, payload_json, leaf_hash, root_after, created_at,
                                               nodes)
        size = index + 1
        if size in self._stored_at:
            self._stored_at[size] = self._rows.stored.root().hex()
        if size in self._recomputed_at:
            self._recomputed_at[size] = self._rows.recomputed.root().hex()
        if self._wanted:
            if (0, index) in self._wanted:
                self._wanted[(0, index)] = stored
            for level, node in enumerate(completed, start=1):
                if (level, index >> level) in self._wanted:
                    self._wanted[(level, index >> level)] = node

    def report(self) -> VerifyReport:
        """The report over the rows fed.

        Raises:
            ValueError: fewer or more rows were fed than the size given.
        """
        n = self._rows.rows
        if n != self._size:
            raise ValueError(f"the verifier was told of {self._size} rows and fed {n}")
        problems = self._rows.finish()
        if self._trusted is not None and (head := check_trusted_head(
                n, self._recomputed_at.get(self._trusted.tree_size), self._trusted)) is not None:
            problems.append(head)
        report = VerifyReport(tree_size=n, root=self._rows.recomputed.root().hex(), problems=problems,
                              log_key=self._key)
        if self._heads is not None:
            report.signed_head, head_problems = check_signed_heads(n, self._stored_at, self._heads, self._key)
            report.problems += head_problems
            report.checked.append(
                f"signed heads: {len(self._heads)} line(s), latest valid size "
                f"{report.signed_head.tree_size if report.signed_head else '-'} (key {self._key[:16]}…)")
        if (anchor := self._anchor) is not None:
            report.anchor = anchor
            anchor_problems = check_anchor(n, self._stored_at.get(anchor.tree_size), anchor)
            report.problems += anchor_problems
            if not anchor_problems:
                report.anchor_proof = ConsistencyProof(
                    old_size=anchor.tree_size, new_size=n, old_root=self._stored_at[anchor.tree_size],
                    new_root=self._rows.stored.root().hex(),
                    path=[merkle.fold([self._wanted[x] for x in part]).hex() for part in self._proof_plan])
            report.checked.append(f"chain anchor: size {anchor.tree_size} in tx {anchor.tx_hash} "
                                  f"(block {anchor.block})")
        if not report.problems and (stale := self._rows.stale_nodes()) is not None:
            report.problems.append(stale)  # named only when nothing else is: any rewrite leaves them stale too
        if len(report.problems) > MAX_PROBLEMS:
            report.omitted_problems = len(report.problems) - MAX_PROBLEMS
            report.problems = report.problems[:MAX_PROBLEMS]
        return report


def verify_log(
    entries: Iterable[StoredEntry], *, heads: Sequence[HeadLine] | None = None, public_key: str = "",
    anchor: AnchoredHead | None = None, trusted: TreeHead | None = None,
) -> VerifyReport:
    """Recompute the log (:class:`westworld.audit.RowChecker`) and check it against the trusted heads given.

    Args:
        entries: every row of the log in ascending ``seq``.
        heads: the signed-heads file's lines (None: not checked); checked with ``public_key``.
        anchor: the latest anchor read from the chain for this log's key (None: none found or not checked).
        trusted: any other earlier head the log must extend.
    """
    rows = entries if isinstance(entries, Sequence) else list(entries)
    verifier = LogVerifier(len(rows), heads=heads, public_key=public_key, anchor=anchor, trusted=trusted)
    for e in rows:
        verifier.feed(e.seq, e.kind, e.subject, e.payload_json, e.leaf_hash, e.root_after, e.created_at)
    return verifier.report()


class AuditVerifyInput(BaseModel):
    """What `westworld audit verify | show` asks the worker: the report, and the ``last`` entries (0: none)."""

    last: int = Field(0, ge=0, le=MAX_SHOWN, description="How many of the latest entries to return as well.")


class AuditVerifyResult(BaseModel):
    """The worker's verification report and the entries asked for (oldest first)."""

    report: VerifyReport
    entries: list[AuditEntry] = []
