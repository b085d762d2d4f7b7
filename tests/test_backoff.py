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
