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

A share is a fraction of a random stream, so a burst still runs over the limit. A node's
*capacity* is what it was seen to take: the calls it answered in a clock second in which it
also refused some, the median over such seconds among its recent outcomes (`seen_capacity`).
While a capacity is known, each API replica counts the calls it sends the node per second
and, once the count reaches the capacity, routes as if the node were not there until the
second is over (routing/headroom.py), retries included: a call over a per-second limit is
certain to be refused. A capacity is remembered for `capacity_memory_seconds` after it was
last seen, and it is seen again in every second the node takes that many calls, so it holds
as long as it binds; then it lapses, and refusals measure it again (a raised limit shows
then).
Pure: `now` is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from statistics import median
from typing import Protocol


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """How fast the admitted share falls on refusals and comes back without them."""

    decrease: float = 0.8  # margin under the taken share after a batch with refusals
    recovery_seconds: float = 600.0  # from no share to the full one without refusals
    floor: float = 0.05  # the share never falls below this: the limit is still probed
    # A capacity seen is trusted this long, then forgotten (a provider may raise its limit);
    # seeing refusals again measures it again.
    capacity_memory_seconds: float = 600.0


DEFAULT_ADMISSION = AdmissionConfig()
# Seconds after which a second's outcomes are taken as all reported (`seen_capacity`).
SETTLE_SECONDS = 2


@dataclass(frozen=True, slots=True)
class Admission:
    """A node's admitted share and when it was last moved (None: never limited)."""

    share: float = 1.0
    at: datetime | None = None
    capacity: float | None = None  # calls per second the node takes (see the module doc)
    capacity_at: datetime | None = None  # when the capacity was last seen

    def capacity_at_time(
        self, now: datetime, config: AdmissionConfig = DEFAULT_ADMISSION
    ) -> float | None:
        """The capacity while it is remembered at ``now``, else None."""
        if self.capacity is None or self.capacity_at is None:
            return None
        age = (now - self.capacity_at).total_seconds()
        return self.capacity if age < config.capacity_memory_seconds else None


FULL = Admission()
# A share that moved by this much is routing's business at once: the store notifies the API
# replicas (store/health.py), as for a breaker move; smaller moves wait for the next reload.
NOTIFY_STEP = 0.05


class _Call(Protocol):
    """What `seen_capacity` reads of an outcome (routing.health.Observation)."""

    @property
    def observed_at(self) -> datetime: ...

    @property
    def latency_ms(self) -> float: ...

    @property
    def rate_limited(self) -> bool: ...


def seen_capacity(
    observations: Iterable[_Call], now: datetime, known: float | None = None
) -> float | None:
    """The calls per second the node answered in the clock seconds in which it also refused
    some: the median over such seconds among ``observations``. With none, the ``known``
    capacity when some second shows the node taking that many (routing held it there, so the
    capacity still binds and is seen again); else None.

    A call counts in the second it started (its end less its latency), which is the second
    a provider's per-second window counts it in. Only whole seconds count: at least
    `SETTLE_SECONDS` old (outcomes are reported after they end, in batches, so later ones are
    incomplete) and as much newer than the oldest outcome (the window keeps the newest
    outcomes only, so its oldest seconds may be cut).
    """
    settled = int(now.timestamp()) - SETTLE_SECONDS
    calls = [
        (int(o.observed_at.timestamp() - o.latency_ms / 1000.0), o.rate_limited)
        for o in observations
    ]
    if not calls:
        return None
    # The oldest seconds may be cut by the window (the newest outcomes only): left out too.
    whole = min(second for second, _ in calls) + 1
    answered: dict[int, int] = {}
    refusing: set[int] = set()
    for second, refused in calls:
        if second > settled or second < whole:
            continue
        if refused:
            refusing.add(second)
        else:
            answered[second] = answered.get(second, 0) + 1
    if refusing:
        return float(median(answered.get(second, 0) for second in refusing))
    if known is not None and answered and max(answered.values()) >= known:
        return known
    return None


def admit(
    current: Admission,
    *,
    accepted: int,
    refused: int,
    serving: bool,
    now: datetime,
    config: AdmissionConfig,
    capacity: float | None = None,
) -> Admission:
    """The share after time and a batch of `accepted` answered and `refused` calls.

    `serving`: the node's breaker is closed, so the share it regains is offered to it (an
    open breaker's back-off is not time without refusals). `capacity`: the capacity the
    node's recent outcomes show (`seen_capacity`), remembered with the time; a remembered one
    lapses `capacity_memory_seconds` after it was last seen.
    """
    kept: float | None = capacity
    kept_at: datetime | None = now
    if capacity is None:
        kept = current.capacity_at_time(now, config)
        kept_at = current.capacity_at if kept is not None else None
    share = current.share
    if share >= 1.0 and refused == 0:
        return FULL if kept is None else Admission(1.0, None, kept, kept_at)
    if current.at is not None and serving:
        share += max(0.0, (now - current.at).total_seconds()) / config.recovery_seconds
    if refused:
        share *= config.decrease * accepted / (accepted + refused)
        share = max(share, config.floor)
    if share >= 1.0:
        return FULL if kept is None else Admission(1.0, None, kept, kept_at)
    return Admission(share, now, kept, kept_at)
