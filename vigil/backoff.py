"""Pure retry policy: exponential backoff (camera reconnects, outbox deliveries) and the capture stall test.

No clock, no randomness of their own: both are passed in. Times are seconds; "mono" values come from
``time.monotonic()``.
"""

from __future__ import annotations

from vigil.config import ReconnectConfig

_MAX_EXPONENT = 64  # multiplier ** 64 is far above any cap and still a finite float (multiplier <= 10)


def backoff_delay_s(failures: int, initial_s: float, max_s: float, multiplier: float = 2.0) -> float:
    """Seconds to wait after ``failures`` (>= 1) failed attempts: ``initial * multiplier**(failures-1)``, capped at
    ``max_s``; 0 before any failure. No jitter (the outbox has one sender, so there is no herd to spread out;
    :func:`next_backoff_s` adds it for cameras)."""
    if failures < 1:
        return 0.0
    return min(max_s, initial_s * multiplier ** min(failures - 1, _MAX_EXPONENT))


def next_backoff_s(attempt: int, cfg: ReconnectConfig, rand: float) -> float:
    """Seconds to wait before reconnect attempt number ``attempt + 1`` (``attempt`` = failures so far, from 0).

    ``initial_backoff_s * multiplier ** attempt``, capped at ``max_backoff_s``, then spread by
    ``+- jitter_fraction`` using ``rand`` in [0, 1] (0 -> lowest, 0.5 -> no jitter, 1 -> highest) so that many
    cameras behind one failed switch do not retry in lockstep. ``max_backoff_s`` is a hard ceiling: jitter above it
    is cut, so with the default 4 s a camera that comes back is retried at most 4 s later.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if not 0.0 <= rand <= 1.0:
        raise ValueError(f"rand must be in [0, 1], got {rand}")
    base = backoff_delay_s(attempt + 1, cfg.initial_backoff_s, cfg.max_backoff_s, cfg.multiplier)
    jittered = base * (1.0 + cfg.jitter_fraction * (2.0 * rand - 1.0))
    return min(max(jittered, 0.0), cfg.max_backoff_s)


def is_stalled(last_frame_mono_s: float, now_mono_s: float, stall_timeout_s: float) -> bool:
    """True when no frame arrived for at least ``stall_timeout_s`` seconds."""
    return now_mono_s - last_frame_mono_s >= stall_timeout_s
