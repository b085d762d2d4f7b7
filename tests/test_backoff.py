"""Reconnect backoff and stall policy: pure functions, time passed in (a fake clock)."""

from __future__ import annotations

import pytest

from vigil.backoff import is_stalled, next_backoff_s
from vigil.config import ReconnectConfig

DEFAULT = ReconnectConfig()  # 0.5 s initial, x2, 4 s cap, +-10 % jitter
NO_JITTER = ReconnectConfig(jitter_fraction=0.0)


@pytest.mark.parametrize(
    ("attempt", "expected_s"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 4.0), (50, 4.0), (10_000, 4.0)],
)
def test_backoff_doubles_then_caps(attempt: int, expected_s: float) -> None:
    assert next_backoff_s(attempt, NO_JITTER, rand=0.0) == pytest.approx(expected_s)
    assert next_backoff_s(attempt, DEFAULT, rand=0.5) == pytest.approx(expected_s)  # 0.5 = centre, no jitter


@pytest.mark.parametrize(
    ("attempt", "rand", "low_s", "high_s"),
    [
        (0, 0.0, 0.45, 0.45),  # -10 %
        (0, 1.0, 0.55, 0.55),  # +10 %
        (1, 0.25, 0.95, 0.95),
        (2, 0.75, 2.1, 2.1),
        (3, 1.0, 4.0, 4.0),  # jitter never goes above the cap
        (3, 0.0, 3.6, 3.6),  # but may go below it
    ],
)
def test_backoff_jitter_is_driven_by_rand(attempt: int, rand: float, low_s: float, high_s: float) -> None:
    value = next_backoff_s(attempt, DEFAULT, rand)
    assert low_s - 1e-9 <= value <= high_s + 1e-9


WIDE = ReconnectConfig(initial_backoff_s=1, max_backoff_s=30, multiplier=3, jitter_fraction=1)


@pytest.mark.parametrize("cfg", [DEFAULT, WIDE])
def test_backoff_stays_in_bounds_for_any_rand(cfg: ReconnectConfig) -> None:
    for attempt in range(12):
        base = min(cfg.initial_backoff_s * cfg.multiplier**attempt, cfg.max_backoff_s)
        for rand in (0.0, 0.1, 0.5, 0.9, 1.0):
            value = next_backoff_s(attempt, cfg, rand)
            high = min(base * (1 + cfg.jitter_fraction), cfg.max_backoff_s)
            assert base * (1 - cfg.jitter_fraction) - 1e-9 <= value <= high + 1e-9
            assert 0.0 <= value <= cfg.max_backoff_s


def test_reconnect_schedule_on_a_fake_clock_meets_the_5_s_target() -> None:
    """Simulated outage: after any number of failures the next try is at most max_backoff_s (4 s) away."""
    clock_s, waits = 0.0, []
    for attempt in range(10):
        wait = next_backoff_s(attempt, DEFAULT, rand=1.0)  # worst case jitter
        waits.append(wait)
        clock_s += wait
    assert waits[:4] == pytest.approx([0.55, 1.1, 2.2, 4.0])
    assert max(waits) <= 4.0
    assert clock_s == pytest.approx(0.55 + 1.1 + 2.2 + 4.0 * 7)


@pytest.mark.parametrize(("attempt", "rand"), [(-1, 0.5), (0, -0.1), (0, 1.5)])
def test_backoff_rejects_bad_arguments(attempt: int, rand: float) -> None:
    with pytest.raises(ValueError):
        next_backoff_s(attempt, DEFAULT, rand)


@pytest.mark.parametrize(
    ("last_frame_s", "now_s", "timeout_s", "stalled"),
    [
        (100.0, 100.0, 10.0, False),
        (100.0, 109.9, 10.0, False),
        (100.0, 110.0, 10.0, True),
        (100.0, 250.0, 10.0, True),
        (100.0, 100.6, 0.5, True),
        (100.0, 99.0, 0.5, False),  # a frame stamped after "now" (clock read before the frame): not stalled
    ],
)
def test_is_stalled(last_frame_s: float, now_s: float, timeout_s: float, stalled: bool) -> None:
    assert is_stalled(last_frame_s, now_s, timeout_s) is stalled


# ---- a wrong password: slow retries (issue 26, defect 9) ---------------------------------------------------------
@pytest.mark.parametrize(
    ("failures", "expected_s"), [(1, 300.0), (2, 600.0), (3, 1200.0), (4, 2400.0), (5, 3600.0), (40, 3600.0)]
)
def test_auth_failures_back_off_in_minutes_not_seconds(failures: int, expected_s: float) -> None:
    from vigil.backoff import auth_backoff_s

    assert auth_backoff_s(failures, DEFAULT) == expected_s


def test_five_wrong_passwords_take_over_an_hour_with_the_defaults() -> None:
    """Cameras commonly lock an account after 5 failed logins within a few minutes; the old policy made 9 in 23 s."""
    from vigil.backoff import auth_backoff_s

    attempts_at_s = [0.0]
    for failures in range(1, 5):
        attempts_at_s.append(attempts_at_s[-1] + auth_backoff_s(failures, DEFAULT))
    assert attempts_at_s == [0.0, 300.0, 900.0, 2100.0, 4500.0]


# ---- how late a stream's frames arrive (issue 26, defect 3) ------------------------------------------------------
LAG_CASES = [
    # name, [(wall s, stream s)], expected lag per frame (None: unknown); the baseline creeps 1 ms per wall second
    ("on time", [(100.0, 0.0), (100.04, 0.04), (100.08, 0.08)], [0.0, 0.0, 0.0]),
    ("jitter under the baseline", [(100.0, 0.0), (100.03, 0.04), (100.1, 0.08)], [0.0, 0.0, 0.03]),
    # 4 s freeze, then the held-back frames in a burst: the first is 4 s late, the last nearly on time
    ("burst after a freeze", [(100.0, 1.0), (104.0, 1.04), (104.01, 3.0), (104.02, 5.0)], [0.0, 3.956, 2.006, 0.016]),
    # OpenCV's stray frame after a 5 s read timeout: one frame further, five seconds later
    ("stray frame after a read timeout", [(100.0, 3.57), (105.0, 3.604)], [0.0, 4.961]),
    ("same stream time, wall clock ran on", [(100.0, 1.0), (100.04, 1.04), (103.0, 1.04)], [0.0, 0.0, 2.957]),
    ("stream clock never moves", [(100.0, 0.0), (101.0, 0.0), (109.0, 0.0)], [0.0, None, None]),
    ("camera restarts its timestamps", [(100.0, 50.0), (100.04, 50.04), (100.08, 0.0), (100.12, 0.04)], [0, 0, 0, 0]),
]


@pytest.mark.parametrize(("name", "frames", "expected"), LAG_CASES, ids=[c[0] for c in LAG_CASES])
def test_stream_lag_with_a_fake_clock(name: str, frames: list[tuple[float, float]], expected: list) -> None:
    from vigil.backoff import StreamLag

    lag = StreamLag()
    got = [lag.lag_s(wall, stream) for wall, stream in frames]
    assert [None if g is None else round(g, 3) for g in got] == expected


def test_stream_lag_follows_a_slow_camera_clock_without_calling_it_late() -> None:
    """A camera clock 200 ppm slow against ours, for 10 hours: the baseline creeps with it (at most 1 ms/s)."""
    from vigil.backoff import StreamLag

    lag = StreamLag()
    worst = max(lag.lag_s(100.0 + t, t * (1 - 200e-6)) or 0.0 for t in range(0, 36_000, 5))
    assert worst < 0.01
