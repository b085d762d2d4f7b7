"""Pure reconnect and stall policy for camera capture (no clock, no randomness of its own: both are passed in).

Times are seconds; "mono" values come from ``time.monotonic()``.
"""

from __future__ import annotations

from vigil.config import ReconnectConfig

_MAX_EXPONENT = 64  # multiplier ** 64 is far above any cap and still a finite float (multiplier <= 10)


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
    base = cfg.initial_backoff_s * cfg.multiplier ** min(attempt, _MAX_EXPONENT)
    base = min(base, cfg.max_backoff_s)
    jittered = base * (1.0 + cfg.jitter_fraction * (2.0 * rand - 1.0))
    return min(max(jittered, 0.0), cfg.max_backoff_s)


def is_stalled(last_frame_mono_s: float, now_mono_s: float, stall_timeout_s: float) -> bool:
    """True when no frame arrived for at least ``stall_timeout_s`` seconds."""
    return now_mono_s - last_frame_mono_s >= stall_timeout_s
