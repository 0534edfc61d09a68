"""Voting power at a vote's snapshot, read from the token in batches and cached.

``getPastVotes(voter, timepoint)`` answers only for a timepoint already past (the token reverts otherwise), and a
past checkpoint never changes: an answer may be kept for as long as the process lives. Lookups that arrive while
a batch is in flight are sent together as one JSON-RPC batch of ``eth_call`` s, so many concurrent voters cost a
few round trips to the chain rather than one each.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from eth_utils.crypto import keccak

from activities.chain import ChainClient
from westworld.chain import TOKEN
from westworld.errors import VOTE_UNAVAILABLE, TransientError

GET_PAST_VOTES = keccak(text="getPastVotes(address,uint256)")[:4].hex()
MAX_BATCH = 250  # eth_calls per JSON-RPC batch
MAX_ENTRIES = 1_000_000  # about 150 MB at most; least recently used answers go first


def _calldata(voter: str, timepoint: int) -> str:
    return "0x" + GET_PAST_VOTES + voter.lower().removeprefix("0x").rjust(64, "0") + format(timepoint, "064x")


class VotingPower:
    """``await power.of(voter, timepoint)``: one voter's weight, cached per (timepoint, voter)."""

    def __init__(self, chain: ChainClient, max_entries: int = MAX_ENTRIES) -> None:
        self._chain = chain
        self._max = max_entries
        self._known: OrderedDict[tuple[int, str], int] = OrderedDict()
        self._wanted: dict[tuple[int, str], asyncio.Future[int]] = {}
        self._flushing = False

    async def of(self, voter: str, timepoint: int) -> int:
        key = (timepoint, voter.lower())
        if (weight := self._known.get(key)) is not None:
            self._known.move_to_end(key)
            return weight
        fut = self._wanted.get(key)
        if fut is None:
            fut = self._wanted[key] = asyncio.get_running_loop().create_future()
            if not self._flushing:
                self._flushing = True
                asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._flush()))
        return await asyncio.shield(fut)

    async def _flush(self) -> None:
        try:
            while self._wanted:
                keys = list(self._wanted)[:MAX_BATCH]
                futures = [self._wanted.pop(k) for k in keys]
                try:
                    weights = await self._read(keys)
                except Exception as err:  # transient: every waiting caller sees it, nothing is cached
                    for f in futures:
                        if not f.done():
                            f.set_exception(err)
                    continue
                for key, f, w in zip(keys, futures, weights, strict=True):
                    self._known[key] = w
                    if not f.done():
                        f.set_result(w)
                while len(self._known) > self._max:
                    self._known.popitem(last=False)
        finally:
            self._flushing = False

    async def _read(self, keys: list[tuple[int, str]]) -> list[int]:
        token = self._chain.dep.address(TOKEN)
        calls: list[tuple[str, Any]] = [("eth_call", [{"to": token, "data": _calldata(v, t)}, "latest"])
                                        for t, v in keys]
        answers = await self._chain.w3.provider.make_batch_request(calls)
        if isinstance(answers, dict):  # the whole batch refused (a node without batch support answers one error)
            raise TransientError(f"getPastVotes batch refused by the chain: {answers.get('error')}",
                                 type=VOTE_UNAVAILABLE)
        out: list[int] = []
        for (t, v), answer in zip(keys, sorted(answers, key=lambda a: int(a["id"])), strict=True):
            if "error" in answer or not answer.get("result"):
                raise TransientError(f"getPastVotes({v}, {t}) failed: {answer.get('error')}", type=VOTE_UNAVAILABLE)
            out.append(int(answer["result"], 16))
        return out
