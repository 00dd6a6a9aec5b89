"""Consumer-lag status over a sliding window of observations, the way Burrow evaluates it.

Pure: plain data in, a status out; no broker, no clock (``now`` is passed in).

One observation of a partition is (time, committed offset of the group, end offset of the
partition, whether a live consumer of the group reported the partition). Over the
observations inside the window:

- ``REWIND``: the committed offset went back (a reset, or a consumer re-committing an older
  offset): events are being processed again.
- ``OK``: the lag touched zero at least once in the window, or there is not enough history
  to say otherwise while the group is alive.
- ``STOP``: lag > 0, the committed offset did not move in the window, and no consumer of the
  group reported the partition within the window (the group is gone or no longer commits).
  When liveness is unknown (``alive=None``), an offset that has not moved for longer than
  twice the window counts as stopped.
- ``STALL``: lag > 0 and the committed offset did not move in the window, but a consumer is
  still alive (it is stuck on something: a poison loop, a database it waits for).
- ``WARN``: the committed offset moves, but the lag never went down in the window and grew
  overall: the consumers do not keep up.

The group's status is its worst partition's (severity OK < WARN < REWIND < STALL < STOP).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise


class LagStatus(StrEnum):
    OK = "OK"
    WARN = "WARN"
    REWIND = "REWIND"
    STALL = "STALL"
    STOP = "STOP"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {
    LagStatus.OK: 0,
    LagStatus.WARN: 1,
    LagStatus.REWIND: 2,
    LagStatus.STALL: 3,
    LagStatus.STOP: 4,
}


@dataclass(frozen=True, slots=True)
class Observation:
    """One sample of a (group, topic, partition)."""

    at: float
    """Seconds (any epoch; only differences matter)."""
    committed: int | None
    """The group's committed offset (the next offset it will read); None: never committed."""
    end: int
    """The partition's end offset (high watermark)."""
    alive: bool | None = None
    """A consumer of the group reported the partition recently; None: unknown."""
    start: int = 0
    """The partition's first offset: with no commit, the lag counts from here."""

    @property
    def lag(self) -> int:
        base = self.committed if self.committed is not None else self.start
        return max(0, self.end - base)


def worst(statuses: Iterable[LagStatus]) -> LagStatus:
    """The group status: the most severe of its partitions (OK for none)."""
    return max(statuses, key=lambda s: s.severity, default=LagStatus.OK)


def in_window(history: Sequence[Observation], now: float, window: float) -> list[Observation]:
    """The observations inside ``[now - window, now]``; at least the latest one."""
    inside = [o for o in history if o.at >= now - window]
    if not inside and history:
        inside = [history[-1]]
    return inside


def _last_move(history: Sequence[Observation]) -> float:
    """When the committed offset took its current value (first sighting of it)."""
    t = history[-1].at
    current = history[-1].committed
    for o in reversed(history):
        if o.committed != current:
            break
        t = o.at
    return t


def evaluate(history: Sequence[Observation], now: float, window: float) -> LagStatus:
    """The status of one partition from its observations (oldest first).

    ``history`` may reach further back than the window: it tells how long the committed
    offset has not moved. Only the observations inside the window are judged otherwise.
    """
    if not history:
        raise ValueError("no observations")
    obs = in_window(history, now, window)
    latest = obs[-1]
    committed = [o.committed for o in obs if o.committed is not None]
    if any(b < a for a, b in pairwise(committed)):
        return LagStatus.REWIND
    if any(o.lag == 0 for o in obs):
        return LagStatus.OK
    moved = obs[0].committed != latest.committed
    if not moved:
        if latest.alive is False:
            return LagStatus.STOP
        if latest.alive is None and now - _last_move(history) > 2 * window:
            return LagStatus.STOP  # nobody tells us the group is alive: judge by time alone
        if len(obs) < 2:
            return LagStatus.OK  # one sample of a live consumer: too early to judge
        return LagStatus.STALL
    lags = [o.lag for o in obs]
    never_shrank = all(b >= a for a, b in pairwise(lags))
    if never_shrank and lags[-1] > lags[0]:
        return LagStatus.WARN
    return LagStatus.OK


def rate(history: Sequence[Observation], now: float, window: float) -> float | None:
    """Observed consumption rate (committed offsets per second) over the window."""
    obs = [o for o in in_window(history, now, window) if o.committed is not None]
    if len(obs) < 2 or obs[-1].at <= obs[0].at:
        return None
    first, last = obs[0].committed, obs[-1].committed
    assert first is not None and last is not None  # filtered above
    return max(0.0, (last - first) / (obs[-1].at - obs[0].at))


__all__ = ["LagStatus", "Observation", "evaluate", "in_window", "rate", "worst"]
