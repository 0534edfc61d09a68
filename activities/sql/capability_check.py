"""The capability check's path on SQLite, part of :class:`activities.sql.capability_store.CapabilityStore`.

One plain ``sqlite3`` connection to the project database file serves the checks. They queue up, and every check
waiting at that moment runs in ONE write transaction (``BEGIN IMMEDIATE``: SQLite's single writer lock, which every
process takes to write) — group commit: a lone check costs one commit, fifty concurrent ones share theirs. The
batch runs on the event loop when the lock is free at once (no thread hop); when another connection holds it, a
thread of its own waits for the lock instead, and the loop is never blocked on it. Inside the transaction each
check reads, decides and writes as the general path does (recorded decision by ``action_id``, state, budget
window, decision row, reservation), one after the other, so a check sees the reservations of those before it in
the batch and in every other process.

What a check reads is cached, and a cache is only ever used at the generation it was built at:

- ``cap_counters.state_generation`` (kept by triggers, migration 0004, in the writing transaction, whoever
  writes) covers root keys, revocations, the revocation epoch, the node registry and halts. Each transaction reads
  it first; a different value (or none) drops the state cache. Revoking, rotating, retiring, halting in any
  process therefore takes effect at the next check that starts after it committed.
- The usage ledger is followed incrementally: new rows are those above the highest ``cap_usage.id`` seen (SQLite
  gives each new row a larger id, and the writer lock orders them), and ``usage_generation`` (bumped by a release
  or a delete, the only other changes) drops the per-agent usage cache.

Any error rolls the transaction back, drops both caches and fails every check of the batch (each retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from westworld import capability as cap
from westworld import caveats as cv
from westworld.agents import CapabilityCheckInput, CapabilityCheckOutcome
from westworld.errors import Denial

STATE_GENERATION = "state_generation"
USAGE_GENERATION = "usage_generation"
UNREGISTERED = "registered-nodes"
MAX_BATCH = 256
CHECKPOINT_EVERY = 500  # commits between two WAL checkpoints, run on the check thread (never on the loop)
MAX_AGENTS = 1024  # agents whose budget windows are cached
MAX_ENTRIES = 65536  # token ids / node ids remembered per generation (they come from unverified input)
_DIALECT = sqlite_dialect.dialect()
_TS = sa.DateTime(timezone=True).dialect_impl(_DIALECT).bind_processor(_DIALECT)


def stored_time(at: datetime) -> str:
    """``at`` as SQLAlchemy stores a timestamp on SQLite (compared as text, as the SQL path compares it)."""
    assert _TS is not None
    return str(_TS(at))


def decide(inp: CapabilityCheckInput, parsed: cap.ParsedToken | None, early: cap.CheckResult | None,
           state: cap.CheckState, regions: dict[str, str], windows: dict[int, int],
           root_key: bytes | None) -> cap.CheckResult:
    """The decision of one check on the state read in its transaction (both paths)."""
    if parsed is None:
        assert early is not None
        return cap.halted(state.halt_epoch) if state.halt_epoch else early
    targets = sorted(set(inp.node_ids))
    facts = cv.Facts(action=inp.action, targets=[cv.Target(node_id=n, region=regions.get(n, "")) for n in targets],
                     live_nodes=state.live_nodes, now=state.now, window_usage=windows,
                     action_digest=inp.action_digest)
    result = cap.check(parsed, root_key, state, inp.agent_id, facts)
    unknown = [n for n in targets if n not in regions]
    if result.allowed and unknown:
        result = result.model_copy(update={"allowed": False, "caveat": UNREGISTERED, "reason": (
            f"{len(unknown)} target nodes are not registered, e.g. {unknown[:5]}")})
    return result


def parse(inp: CapabilityCheckInput) -> tuple[cap.ParsedToken | None, cap.CheckResult | None]:
    try:
        return cap.parse_token_shared(inp.token, inp.discharges), None
    except Denial as d:
        return None, cap.CheckResult(allowed=False, caveat=d.caveat, reason=d.reason)


@dataclass
class _State:
    """What checks read, as of one ``state_generation`` (None: valid for one transaction only)."""

    generation: int | None
    halt_epoch: int
    live_nodes: int
    revocation_epoch: int
    revoked: dict[str, bool] = field(default_factory=dict)
    keys: dict[str, bytes | None] = field(default_factory=dict)
    regions: dict[str, str | None] = field(default_factory=dict)


@dataclass
class _Window:
    """One agent's non-released reservations in one rolling window: ``last`` holds each node's newest time after
    ``since``, ``order`` the same times oldest first, so the window slides by popping its front (amortised O(1))."""

    since: str
    last: dict[str, str] = field(default_factory=dict)
    order: deque[tuple[str, str]] = field(default_factory=deque)
    stale: bool = False  # a row arrived out of time order: reload rather than slide

    def add(self, node: str, at: str) -> None:
        if at <= self.since:
            return
        if self.order and at < self.order[-1][0]:
            self.stale = True
        self.order.append((at, node))
        if at > self.last.get(node, ""):
            self.last[node] = at

    def count(self, since: str, targets: list[str]) -> int:
        """Distinct nodes with a reservation after ``since`` (not before ``self.since``), ``targets`` included."""
        while self.order and self.order[0][0] <= since:
            at, node = self.order.popleft()
            if self.last.get(node) == at:
                del self.last[node]
        self.since = since
        return len(self.last) + sum(1 for n in targets if n not in self.last)


@dataclass
class _Usage:
    generation: int | None = None
    high_water: int = 0
    agents: OrderedDict[str, dict[int, _Window]] = field(default_factory=OrderedDict)  # agent -> seconds -> window


@dataclass
class _Pending:
    inp: CapabilityCheckInput
    now: datetime
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[CapabilityCheckOutcome]


class SqliteCheck:
    """The group-committing check on one SQLite file; ``unseal(key_id, sealed_hex)`` gives a root key."""

    def __init__(self, path: str, unseal: Callable[[str, str], bytes]) -> None:
        self._path, self._unseal = path, unseal
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capability-check")
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._draining = False
        self._conn: sqlite3.Connection | None = None  # used by one drainer at a time (loop or check thread)
        self._waits: bool | None = None  # whether its busy timeout waits for the write lock
        self._checkpointer: sqlite3.Connection | None = None  # the check thread's, for WAL checkpoints
        self._commits = 0
        self._state: _State | None = None
        self._usage = _Usage()

    async def check(self, inp: CapabilityCheckInput, now: datetime) -> CapabilityCheckOutcome:
        loop = asyncio.get_running_loop()
        item = _Pending(inp, now, loop, loop.create_future())
        with self._lock:
            self._pending.append(item)
            start, self._draining = not self._draining, True
        if start:  # the callers that arrive in this turn of the loop join the batch
            loop.call_soon(self._drain_inline, loop)
        return await item.future

    def close(self) -> None:
        """Close the connection (after the checks already queued)."""
        self._executor.submit(self._close)
        self._executor.shutdown(wait=True)

    def _drain_inline(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the event loop: a batch whose write lock is free at once runs here (no thread hop; a transaction
        takes well under a millisecond). If another connection holds the lock, the check thread waits for it
        instead and drains the queue from then on, so one drainer at a time ever touches the caches."""
        with self._lock:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        try:
            outcomes = self._run(batch, wait=False)
        except _Busy:
            self._executor.submit(self._drain, batch)
            return
        except BaseException as err:
            _answer(batch, err, loop)
        else:
            _answer(batch, outcomes, loop)
        with self._lock:
            if not self._pending:
                self._draining = False
                return
        loop.call_soon(self._drain_inline, loop)

    # --- on the check thread ------------------------------------------------------------------------------
    def _close(self) -> None:
        for conn in (self._conn, self._checkpointer):
            if conn is not None:
                conn.close()
        self._conn = self._checkpointer = None

    def _checkpoint(self) -> None:
        """Copy the WAL back into the database file (PASSIVE: it waits for no one and blocks no writer). The
        check connection does not checkpoint on commit, so its commits never pay this on the event loop."""
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(self._path, isolation_level=None, timeout=10,
                                                 check_same_thread=False)
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _drain(self, batch: list[_Pending]) -> None:
        while batch:
            try:
                outcomes = self._run(batch, wait=True)
            except BaseException as err:  # every waiting caller hears of it; the thread keeps serving
                _answer(batch, err)
            else:
                _answer(batch, outcomes)
            with self._lock:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                if not batch:
                    self._draining = False

    # --- on whichever drains ------------------------------------------------------------------------------
    def _connect(self, wait: bool) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=10, check_same_thread=False)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "wal_autocheckpoint=0"):
                conn.execute(f"PRAGMA {pragma}")
            self._conn, self._waits = conn, None
        if self._waits is not wait:
            self._conn.execute(f"PRAGMA busy_timeout={10000 if wait else 0}")
            self._waits = wait
        return self._conn

    def _run(self, batch: list[_Pending], wait: bool) -> list[CapabilityCheckOutcome]:
        conn = self._connect(wait)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            if not wait and err.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                raise _Busy from None
            raise
        try:
            self._refresh(conn)
            outcomes = [self._one(conn, item.inp, item.now) for item in batch]
            conn.execute("COMMIT")
            self._commits += 1
            if self._commits % CHECKPOINT_EVERY == 0:
                self._executor.submit(self._checkpoint)
        except BaseException:
            self._state, self._usage = None, _Usage()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes

    def _refresh(self, conn: sqlite3.Connection) -> None:
        gens = dict(conn.execute("SELECT name, value FROM cap_counters WHERE name IN (?, ?)",
                                 (STATE_GENERATION, USAGE_GENERATION)).fetchall())
        state_gen, usage_gen = gens.get(STATE_GENERATION), gens.get(USAGE_GENERATION)
        if self._state is None or state_gen is None or self._state.generation != state_gen:
            halt, live, epoch = conn.execute(
                "SELECT (SELECT max(epoch) FROM cap_halts WHERE started_at IS NOT NULL AND resumed_at IS NULL), "
                "(SELECT count(*) FROM cap_nodes), (SELECT value FROM cap_counters WHERE name = ?)",
                ("revocation_epoch",)).fetchone()
            self._state = _State(state_gen, int(halt or 0), int(live or 0), int(epoch or 0))
        if usage_gen is None or self._usage.generation != usage_gen:
            top = conn.execute("SELECT max(id) FROM cap_usage").fetchone()[0]
            self._usage = _Usage(generation=usage_gen, high_water=int(top or 0))
        else:
            self._follow_usage(conn)

    def _follow_usage(self, conn: sqlite3.Connection) -> None:
        """Bring the cached agents' windows up to the ledger: the rows added since the last look."""
        usage = self._usage
        for row_id, agent, node, at, state in conn.execute(
                "SELECT id, agent_id, node_id, at, state FROM cap_usage WHERE id > ? ORDER BY id",
                (usage.high_water,)):
            usage.high_water = row_id
            if state != "released":
                for window in usage.agents.get(agent, {}).values():
                    window.add(node, at)

    def _one(self, conn: sqlite3.Connection, inp: CapabilityCheckInput, now: datetime) -> CapabilityCheckOutcome:
        prior = conn.execute("SELECT result, live_nodes FROM cap_decisions WHERE action_id = ?",
                             (inp.action_id,)).fetchone()
        if prior is not None:
            return CapabilityCheckOutcome(result=cap.CheckResult.model_validate_json(prior[0]), live_nodes=prior[1])
        assert self._state is not None
        st = self._state
        parsed, early = parse(inp)
        targets = sorted(set(inp.node_ids))
        state = cap.CheckState(live_nodes=st.live_nodes, now=now, halt_epoch=st.halt_epoch,
                               revocation_epoch=st.revocation_epoch, discharge_ttl_max=inp.discharge_ttl_max,
                               revoked=parsed is not None and self._revoked(conn, parsed.identity.token_id))
        regions = self._regions(conn, targets)
        windows: dict[int, int] = {}
        key: bytes | None = None
        if parsed is not None:
            if windows_wanted := cv.budget_windows(parsed.caveats):
                windows = {w: self._window(conn, inp.agent_id, targets, w, now) for w in windows_wanted}
            key = self._key(conn, parsed.identity.key_id)
        result = decide(inp, parsed, early, state, regions, windows, key)
        at = stored_time(now)
        conn.execute("INSERT INTO cap_decisions (action_id, agent_id, action, at, live_nodes, node_ids, result) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", (inp.action_id, inp.agent_id, inp.action, at,
                                                      state.live_nodes, json.dumps(targets), result.model_dump_json()))
        if not result.allowed:
            conn.execute("INSERT INTO cap_events (action_id, agent_id, at, allowed, caveat, node_ids, endorsed_by) "
                         "VALUES (?, ?, ?, 0, ?, '[]', '[]')", (inp.action_id, inp.agent_id, at, result.caveat))
        elif targets:
            self._reserve(conn, inp.agent_id, inp.action_id, targets, at)
        return CapabilityCheckOutcome(result=result, live_nodes=state.live_nodes)

    def _reserve(self, conn: sqlite3.Connection, agent: str, action_id: str, targets: list[str], at: str) -> None:
        """Insert the reservations, and add them to the cached windows: no other writer runs inside this
        transaction, so the rows above the high-water mark are these (SQLite numbers each new row max + 1)."""
        usage = self._usage
        for i in range(0, len(targets), 100):
            chunk = targets[i:i + 100]
            rows = ",".join("(?, ?, ?, ?, 'reserved')" for _ in chunk)  # placeholders only: values are bound
            cur = conn.execute(f"INSERT INTO cap_usage (agent_id, node_id, action_id, at, state) VALUES {rows}",  # noqa: S608
                               [v for n in chunk for v in (agent, n, action_id, at)])
            if cur.lastrowid != usage.high_water + len(chunk):  # not numbered as expected: follow the table
                self._follow_usage(conn)
                continue
            usage.high_water = cur.lastrowid
            for window in usage.agents.get(agent, {}).values():
                for node in chunk:
                    window.add(node, at)

    def _revoked(self, conn: sqlite3.Connection, token_id: str) -> bool:
        assert self._state is not None
        revoked = self._state.revoked
        if (found := revoked.get(token_id)) is None:
            found = conn.execute("SELECT 1 FROM cap_revoked WHERE token_id = ?", (token_id,)).fetchone() is not None
            if len(revoked) >= MAX_ENTRIES:
                revoked.clear()
            revoked[token_id] = found
        return found

    def _key(self, conn: sqlite3.Connection, key_id: str) -> bytes | None:
        assert self._state is not None
        keys = self._state.keys
        if key_id not in keys:
            row = conn.execute("SELECT sealed FROM cap_root_keys WHERE key_id = ?", (key_id,)).fetchone()
            if len(keys) >= MAX_ENTRIES:
                keys.clear()
            keys[key_id] = None if row is None else self._unseal(key_id, row[0])
        return keys[key_id]

    def _regions(self, conn: sqlite3.Connection, targets: list[str]) -> dict[str, str]:
        assert self._state is not None
        known = self._state.regions
        missing = [n for n in targets if n not in known]
        if len(known) + len(missing) > MAX_ENTRIES:
            known.clear()
        for i in range(0, len(missing), 500):
            chunk = missing[i:i + 500]
            marks = ",".join("?" * len(chunk))  # placeholders only: the ids are bound
            found = dict(conn.execute(f"SELECT node_id, region FROM cap_nodes WHERE node_id IN ({marks})",  # noqa: S608
                                      chunk).fetchall())
            known.update({n: found.get(n) for n in chunk})
        return {n: r for n in targets if (r := known[n]) is not None}

    def _window(self, conn: sqlite3.Connection, agent: str, targets: list[str], seconds: int, now: datetime) -> int:
        """Distinct nodes the agent holds non-released reservations on within ``seconds`` before ``now``, with
        ``targets`` (as ``SELECT DISTINCT node_id ... WHERE at > since`` would count them)."""
        since = stored_time(now - timedelta(seconds=seconds))
        agents = self._usage.agents
        windows = agents.setdefault(agent, {})
        agents.move_to_end(agent)
        while len(agents) > MAX_AGENTS:
            agents.popitem(last=False)
        window = windows.get(seconds)
        if window is None or window.stale or since < window.since:
            window = _Window(since=since)
            for node, at in conn.execute(
                    "SELECT node_id, max(at) AS newest FROM cap_usage WHERE agent_id = ? AND at > ? "
                    "AND state != 'released' GROUP BY node_id ORDER BY newest", (agent, since)):
                window.add(node, at)
            windows[seconds] = window
        return window.count(since, targets)


class _Busy(Exception):
    """Another connection holds the write lock (a drainer that must not wait hands over to the thread)."""


def _answer(batch: list[_Pending], outcomes: list[CapabilityCheckOutcome] | BaseException,
            running: asyncio.AbstractEventLoop | None = None) -> None:
    """Hand each caller its outcome: directly on ``running`` (the loop this runs on), thread-safely elsewhere."""
    for i, item in enumerate(batch):
        if isinstance(outcomes, BaseException):
            if item.loop is running:
                _fail(item.future, outcomes)
            else:
                _call(item.loop, _fail, item.future, outcomes)
        elif item.loop is running:
            _resolve(item.future, outcomes[i])
        else:
            _call(item.loop, _resolve, item.future, outcomes[i])


def _call(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits for this answer
        loop.call_soon_threadsafe(fn, *args)


def _resolve(future: asyncio.Future[CapabilityCheckOutcome], outcome: CapabilityCheckOutcome) -> None:
    if not future.done():
        future.set_result(outcome)


def _fail(future: asyncio.Future[Any], err: BaseException) -> None:
    if not future.done():
        future.set_exception(err)
