"""The Burrow-style lag evaluation (models/lag.py): one test per status, plus edges."""

from __future__ import annotations

import pytest

from models.lag import LagStatus, Observation, evaluate, rate, worst

W = 30.0  # window, seconds


def series(*points: tuple[int | None, int], alive: bool | None = True, step: float = 5.0):
    """(committed, end) pairs, ``step`` seconds apart, ending at t = 100."""
    n = len(points)
    return [
        Observation(at=100 - (n - 1 - i) * step, committed=c, end=e, alive=alive)
        for i, (c, e) in enumerate(points)
    ]


def test_ok_when_lag_touched_zero_in_the_window() -> None:
    obs = series((10, 50), (50, 50), (60, 120), (70, 200))
    assert evaluate(obs, 100, W) is LagStatus.OK


def test_ok_when_caught_up_and_idle() -> None:
    obs = series((50, 50), (50, 50), (50, 50), alive=False)
    assert evaluate(obs, 100, W) is LagStatus.OK


def test_ok_when_lag_shrinks() -> None:
    obs = series((10, 100), (40, 110), (80, 120), (110, 125))
    assert evaluate(obs, 100, W) is LagStatus.OK


def test_warn_when_offsets_advance_but_lag_grows() -> None:
    obs = series((10, 100), (20, 130), (30, 160), (40, 190))
    assert evaluate(obs, 100, W) is LagStatus.WARN


def test_no_warn_when_lag_grows_then_shrinks() -> None:
    obs = series((10, 100), (20, 130), (90, 160), (100, 190))
    assert evaluate(obs, 100, W) is LagStatus.OK


def test_stall_when_committed_stops_while_lag_and_consumer_alive() -> None:
    history = series(*[(40, 100 + 10 * i) for i in range(20)])  # 95 s flat, window 30 s
    assert evaluate(history, 100, W) is LagStatus.STALL


def test_stop_when_liveness_unknown_and_flat_longer_than_twice_the_window() -> None:
    flat = [(40, 100 + 10 * i) for i in range(20)]
    assert evaluate(series(*flat[:12], alive=None), 100, W) is LagStatus.STALL  # 55 s
    assert evaluate(series(*flat, alive=None), 100, W) is LagStatus.STOP  # 95 s


def test_stop_when_no_consumer_is_alive() -> None:
    history = series((40, 100), (40, 110), alive=False)
    assert evaluate(history, 100, W) is LagStatus.STOP


def test_stop_for_a_group_that_never_committed_and_has_no_consumer() -> None:
    history = series((None, 100), (None, 120), alive=False)
    assert history[-1].lag == 120
    assert evaluate(history, 100, W) is LagStatus.STOP


def test_rewind_when_an_offset_went_back() -> None:
    obs = series((100, 200), (120, 200), (30, 200), (60, 200))
    assert evaluate(obs, 100, W) is LagStatus.REWIND


def test_rewind_outside_the_window_is_forgotten() -> None:
    obs = series((100, 200), (30, 200), *[(30 + 20 * i, 200 + 5 * i) for i in range(1, 9)])
    assert obs[1].at < 100 - W  # the rewind happened before the window
    assert evaluate(obs, 100, W) is LagStatus.OK


def test_single_sample_of_a_live_consumer_is_ok() -> None:
    assert evaluate(series((10, 100)), 100, W) is LagStatus.OK


def test_old_observations_only_use_the_latest() -> None:
    obs = series((10, 100), (10, 100), alive=None)
    # judged long after the last sample: flat for longer than twice the window
    assert evaluate(obs, 1000, W) is LagStatus.STOP


def test_no_observations_is_an_error() -> None:
    with pytest.raises(ValueError):
        evaluate([], 0, W)


def test_group_status_is_the_worst_partition() -> None:
    assert worst([]) is LagStatus.OK
    assert worst([LagStatus.OK, LagStatus.WARN]) is LagStatus.WARN
    assert worst([LagStatus.STALL, LagStatus.REWIND, LagStatus.OK]) is LagStatus.STALL
    assert worst([LagStatus.WARN, LagStatus.STOP, LagStatus.STALL]) is LagStatus.STOP


def test_rate_is_committed_offsets_per_second() -> None:
    obs = series((0, 100), (50, 100), (100, 100))
    assert rate(obs, 100, W) == pytest.approx(10.0)
    assert rate(obs[:1], 100, W) is None
