"""When an agent's action is *wide*, and how many peers must sign it: the network policy's rule, which the agent
(or a rollout spec, or a canary input) may only make stricter (pure).

The thresholds, k, the longest wait for the peers and the longest life of a peer's discharge come from
``NetworkPolicy.peers`` (the DAO's). A request may ask for a lower threshold (more actions count as wide), a larger
k or a shorter wait; a request for a higher threshold or a smaller k is refused (``LooserThanPolicy``, naming the
policy's value); a longer wait is capped at ``peers.wait_max``.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import NoReturn

from pydantic import BaseModel, ConfigDict

from westworld.errors import LOOSER_THAN_POLICY, PermanentError
from westworld.policy import PeerPolicy


class PeerRule(BaseModel):
    """The rule in force for one action (or every step of one rollout)."""

    model_config = ConfigDict(frozen=True)

    threshold_nodes: int
    threshold_pct: Decimal
    peers_required: int
    wait: timedelta
    discharge_ttl_max: timedelta


# What a run started before the policy existed used when its input left a field out (its history replays so).
LEGACY = PeerRule(threshold_nodes=20, threshold_pct=Decimal("1.0"), peers_required=3, wait=timedelta(hours=1),
                  discharge_ttl_max=timedelta(hours=1))


def refuse_looser(where: str, what: str, asked: object, rule: str, limit: object) -> NoReturn:
    """The typed refusal of an ask looser than the policy: the field, the value asked, the policy's rule and limit."""
    raise PermanentError(f"{where}: {what} {asked} is looser than the network policy ({rule} = {limit}); ask for "
                         f"{limit} or stricter, or leave it out to get the policy's", type=LOOSER_THAN_POLICY)


def peer_rule(policy: PeerPolicy, where: str, *, threshold_nodes: int | None = None,
              threshold_pct: float | Decimal | None = None, peers_required: int | None = None,
              wait: timedelta | None = None, names: tuple[str, str, str] = (
                  "peer_threshold_nodes", "peer_threshold_pct", "peers_required")) -> PeerRule:
    """The rule in force: the policy's, made stricter by what was asked (None: not asked).

    ``names`` are the field names the refusal uses for the three fields (a rollout spec spells them
    ``wide_nodes``, ``wide_pct``, ``threshold``).

    Raises:
        PermanentError: (``LooserThanPolicy``) a threshold above the policy's or a k below it.
    """
    nodes, pct, k = policy.threshold_nodes, Decimal(policy.threshold_pct), policy.peers_required
    if threshold_nodes is not None:
        if threshold_nodes > nodes:
            refuse_looser(where, names[0], threshold_nodes, "peers.threshold_nodes", nodes)
        nodes = threshold_nodes
    if threshold_pct is not None:
        asked = Decimal(str(threshold_pct))
        if asked > pct:
            refuse_looser(where, names[1], threshold_pct, "peers.threshold_pct", pct)
        pct = asked
    if peers_required is not None:
        if peers_required < k:
            refuse_looser(where, names[2], peers_required, "peers.peers_required", k)
        k = peers_required
    waited = policy.wait_max if wait is None else min(wait, policy.wait_max)
    return PeerRule(threshold_nodes=nodes, threshold_pct=pct, peers_required=k, wait=waited,
                    discharge_ttl_max=policy.discharge_ttl_max)


def legacy_rule(*, threshold_nodes: int | None, threshold_pct: float | None, peers_required: int | None,
                wait: timedelta | None) -> PeerRule:
    """The rule a run started before the policy was enforced used: its input's values (for replay only)."""
    return PeerRule(
        threshold_nodes=LEGACY.threshold_nodes if threshold_nodes is None else threshold_nodes,
        threshold_pct=LEGACY.threshold_pct if threshold_pct is None else Decimal(str(threshold_pct)),
        peers_required=LEGACY.peers_required if peers_required is None else peers_required,
        wait=LEGACY.wait if wait is None else wait, discharge_ttl_max=LEGACY.discharge_ttl_max)


def is_wide(node_count: int, live_nodes: int, rule: PeerRule) -> bool:
    """More nodes than the threshold, or more than the threshold share of the live nodes (exact), or an unknown
    network size: wide."""
    if live_nodes <= 0 or node_count > rule.threshold_nodes:
        return True
    return Decimal(100 * node_count) / Decimal(live_nodes) > rule.threshold_pct
