"""Signature checks on every core: a process pool whose workers verify EIP-712 ballots in chunks.

Requests that arrive in the same turn of the event loop are verified together, split over the pool's processes,
so a burst of concurrent voters costs a few inter-process round trips rather than one each. The workers are
spawned (not forked from a process that holds a Temporal client and database connections) and import only the
pure core.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache
from multiprocessing import get_context

from westworld import ballot
from westworld.errors import VoteRejected
from westworld.vote import VoteRequest

Checked = tuple[bool, str, str]  # (accepted, vote hash or refusal type, refusal message)


@lru_cache(maxsize=64)
def _context(ctx_json: str) -> ballot.BallotContext:
    return ballot.BallotContext.model_validate_json(ctx_json)


def verify_chunk(ctx_json: str, votes: list[VoteRequest]) -> list[Checked]:
    """Runs in a pool process: each vote's hash, or the typed reason its signature or choice is refused."""
    ctx = _context(ctx_json)
    out: list[Checked] = []
    for vote in votes:
        try:
            out.append((True, ballot.verify(vote, ctx), ""))
        except VoteRejected as err:
            out.append((False, err.type, err.message))
    return out


def _warm() -> int:
    return os.getpid()


def _exit_with(parent: int) -> None:
    """Pool initializer: the worker ends when the web process that spawned it is gone (SIGKILLed, crashed). A
    killed parent runs no shutdown, and its orphaned workers (≈ 160 MB each) would otherwise live on."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _pool(processes: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(processes, mp_context=get_context("spawn"), initializer=_exit_with,
                               initargs=(os.getpid(),))


class Verifier:
    """``await verifier.verify(vote, ctx)`` -> the vote hash, or raises ``VoteRejected``."""

    def __init__(self, processes: int | None = None) -> None:
        self.processes = processes or os.cpu_count() or 1
        self._pool = _pool(self.processes)
        self._pending: list[tuple[str, VoteRequest, asyncio.Future[Checked]]] = []

    async def start(self) -> None:
        """Spawn every worker now, not on the first votes."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, _warm) for _ in range(self.processes)))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def verify(self, vote: VoteRequest, ctx_json: str) -> str:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Checked] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((ctx_json, vote, fut))
        ok, value, message = await fut
        if not ok:
            raise VoteRejected(message, type=value)
        return value

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        by_ctx: dict[str, list[tuple[VoteRequest, asyncio.Future[Checked]]]] = {}
        for ctx_json, vote, fut in pending:
            by_ctx.setdefault(ctx_json, []).append((vote, fut))
        for ctx_json, items in by_ctx.items():
            size = -(-len(items) // self.processes)
            for i in range(0, len(items), size):
                self._send(ctx_json, items[i:i + size])

    def _send(self, ctx_json: str, items: list[tuple[VoteRequest, asyncio.Future[Checked]]]) -> None:
        votes = [vote for vote, _ in items]
        try:
            done = asyncio.get_running_loop().run_in_executor(self._pool, verify_chunk, ctx_json, votes)
        except BrokenProcessPool:  # a worker died (killed, out of memory): a new pool for these and later votes
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = _pool(self.processes)
            done = asyncio.get_running_loop().run_in_executor(self._pool, verify_chunk, ctx_json, votes)

        def settle(f: asyncio.Future[list[Checked]]) -> None:
            err: BaseException | None = asyncio.CancelledError() if f.cancelled() else f.exception()
            results = f.result() if err is None else []
            for i, (_, fut) in enumerate(items):
                if fut.done():
                    continue
                if err is not None:
                    fut.set_exception(err)
                else:
                    fut.set_result(results[i])

        done.add_done_callback(settle)
