"""Verifying the audit log against heads kept apart from it: the latest signed heads and the on-chain anchor.

A log that only agrees with itself proves little: whoever can write its table can drop the last entries, or edit
one and recompute every hash after it, and the rows still chain. So :func:`verify_log` also checks

- every **signed head** in the heads file (signed by the worker's own key, see :mod:`westworld.audit_anchor`):
  its signature, that its size is not beyond the log ("truncated"), and that the root recomputed from the
  payloads at its size is the root it signed ("rewritten", naming the first entry that differs: heads are signed
  after every append, so consecutive heads pin it down to one entry);
- the **latest anchor on chain**: the same two checks, and the RFC 6962 consistency proof from the anchored
  (size, root) to today's head, which the report carries so a client holding only the chain can check it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from westworld import merkle
from westworld.audit import (
    AuditEntry,
    AuditProblem,
    StoredEntry,
    TreeHead,
    VerifyReport,
    check_rows,
    check_trusted_head,
    consistency_proof_of,
)
from westworld.audit_anchor import AnchoredHead, HeadLine, SignedHead, head_signature_ok

MAX_PROBLEMS = 200  # a report travels as one Temporal payload: name the first ones, count the rest
MAX_SHOWN = 1000


def _is_hash(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _roots_at(leaves: Sequence[bytes], sizes: Sequence[int]) -> dict[int, str]:
    """The recomputed root at each of ``sizes`` (those within the log), in one pass."""
    wanted, roots, frontier = sorted({s for s in sizes if s <= len(leaves)}), {}, merkle.Frontier()
    for size in wanted:
        while frontier.size < size:
            frontier.append(leaves[frontier.size])
        roots[size] = frontier.root().hex()
    return roots


def _entries(lo: int, hi: int) -> str:
    return f"entry {lo}" if hi - lo <= 1 else f"one of entries {lo}..{hi - 1}"


def check_signed_heads(
    leaves: Sequence[bytes], lines: Sequence[HeadLine], public_key: str
) -> tuple[SignedHead | None, list[AuditProblem]]:
    """Check the log against the signed heads; returns the latest validly signed head and the problems.

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

    n = len(leaves)
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
    roots = _roots_at(leaves, [h.tree_size for _, h in heads])
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


def check_anchor(leaves: Sequence[bytes], anchor: AnchoredHead) -> list[AuditProblem]:
    """Check the log against the latest on-chain anchor."""
    n, where = len(leaves), f"the anchor on chain (tx {anchor.tx_hash}, block {anchor.block})"
    if anchor.tree_size > n:
        return [AuditProblem(seq=n, kind="truncated",
                             message=f"the log has {n} entries but {where} says {anchor.tree_size} > {n}: entries "
                                     f"{n}..{anchor.tree_size - 1} were removed")]
    if merkle.root_of_hashes(leaves[:anchor.tree_size]).hex() != anchor.root:
        return [AuditProblem(seq=max(anchor.tree_size - 1, 0), kind="rewritten",
                             message=f"the first {anchor.tree_size} entries do not hash to the root "
                                     f"{anchor.root[:16]}… of {where}: an entry below {anchor.tree_size} was "
                                     f"rewritten and its hashes recomputed")]
    return []


def verify_log(
    entries: Sequence[StoredEntry], *, heads: Sequence[HeadLine] | None = None, public_key: str = "",
    anchor: AnchoredHead | None = None, trusted: TreeHead | None = None,
) -> VerifyReport:
    """Recompute the log (:func:`westworld.audit.check_rows`) and check it against the trusted heads given.

    Args:
        entries: every row of the log in ascending ``seq``.
        heads: the signed-heads file's lines (None: not checked); checked with ``public_key``.
        anchor: the latest anchor read from the chain for this log's key (None: none found or not checked).
        trusted: any other earlier head the log must extend.
    """
    leaves, problems = check_rows(entries)
    if trusted is not None and (head := check_trusted_head(leaves, trusted)) is not None:
        problems.append(head)
    report = VerifyReport(tree_size=len(entries), root=merkle.root_of_hashes(leaves).hex(), problems=problems,
                          log_key=public_key)
    # Heads are checked over the *stored* leaf hashes: content that no longer matches its stored hash is already
    # named by check_rows, and a rewrite whose hashes were recomputed shows here, so each change is named once.
    stored = [bytes.fromhex(e.leaf_hash) if _is_hash(e.leaf_hash) else leaf for e, leaf in zip(entries, leaves,
                                                                                                 strict=True)]
    if heads is not None:
        report.signed_head, head_problems = check_signed_heads(stored, heads, public_key)
        report.problems += head_problems
        report.checked.append(
            f"signed heads: {len(heads)} line(s), latest valid size "
            f"{report.signed_head.tree_size if report.signed_head else '-'} (key {public_key[:16]}…)")
    if anchor is not None:
        report.anchor = anchor
        anchor_problems = check_anchor(stored, anchor)
        report.problems += anchor_problems
        if not anchor_problems:
            report.anchor_proof = consistency_proof_of(stored, anchor.tree_size)
        report.checked.append(f"chain anchor: size {anchor.tree_size} in tx {anchor.tx_hash} (block {anchor.block})")
    if len(report.problems) > MAX_PROBLEMS:
        report.omitted_problems = len(report.problems) - MAX_PROBLEMS
        report.problems = report.problems[:MAX_PROBLEMS]
    return report


class AuditVerifyInput(BaseModel):
    """What `westworld audit verify | show` asks the worker: the report, and the ``last`` entries (0: none)."""

    last: int = Field(0, ge=0, le=MAX_SHOWN, description="How many of the latest entries to return as well.")


class AuditVerifyResult(BaseModel):
    """The worker's verification report and the entries asked for (oldest first)."""

    report: VerifyReport
    entries: list[AuditEntry] = []
