"""The share of first attempts a node that refuses for rate limiting is offered.

A provider's rate limit refuses volume: over its limit a call gets HTTP 429 at once, under
it every call is served. Sending a limited node all of a service's traffic at a peak wastes
the calls over its limit (each one a retry elsewhere), sending it none wastes its capacity
(usually the cheapest, which is why it was preferred). So a node keeps an admitted share,
1 until it refuses, and routing offers it only the requests whose admission bucket is below
that share (a stable hash of the request, as staged restores do): the others are routed as
if the node were not there. The share moves like a congestion window (additive increase,
multiplicative decrease), from the calls the node answered and refused:

- a batch of outcomes with refusals multiplies it by `accepted / (accepted + refused)` (the
  part of the offered load the node took) times `decrease` (a margin under the limit, since
  arrivals come in bursts);
- while its breaker is closed it regains `1 / recovery_seconds` per second, so after the
  load falls (or was a chance burst) the node gets its traffic back within minutes, and
  probes its limit again if the load did not.

A retry ignores the share: one call is what a rate limit still takes (routing/retry.py).
Pure: `now` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """How fast the admitted share falls on refusals and comes back without them."""

    decrease: float = 0.8  # margin under the taken share after a batch with refusals
    recovery_seconds: float = 600.0  # from no share to the full one without refusals
    floor: float = 0.05  # the share never falls below this: the limit is still probed


@dataclass(frozen=True, slots=True)
class Admission:
    """A node's admitted share and when it was last moved (None: never limited)."""

    share: float = 1.0
    at: datetime | None = None


FULL = Admission()
# A share that moved by this much is routing's business at once: the store notifies the API
# replicas (store/health.py), as for a breaker move; smaller moves wait for the next reload.
NOTIFY_STEP = 0.05


def admit(
    current: Admission,
    *,
    accepted: int,
    refused: int,
    serving: bool,
    now: datetime,
    config: AdmissionConfig,
) -> Admission:
    """The share after time and a batch of `accepted` answered and `refused` calls.

    `serving`: the node's breaker is closed, so the share it regains is offered to it (an
    open breaker's back-off is not time without refusals).
    """
    share = current.share
    if share >= 1.0 and refused == 0:
        return FULL
    if current.at is not None and serving:
        share += max(0.0, (now - current.at).total_seconds()) / config.recovery_seconds
    if refused:
        share *= config.decrease * accepted / (accepted + refused)
        share = max(share, config.floor)
    if share >= 1.0:
        return FULL
    return Admission(share, now)
