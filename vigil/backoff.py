"""Pure retry policy: exponential backoff (camera reconnects, wrong passwords, outbox deliveries), the capture
stall test, and how late a live stream's frames arrive (:class:`StreamLag`).

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


def auth_backoff_s(failures: int, cfg: ReconnectConfig) -> float:
    """Seconds to wait after ``failures`` (>= 1) authentication failures in a row (RTSP 401/403):
    ``auth_initial_backoff_s`` doubling up to ``auth_max_backoff_s``, no jitter. Slow on purpose: cameras lock an
    account after a few failed logins, and a wrong password does not fix itself within seconds."""
    return backoff_delay_s(max(failures, 1), cfg.auth_initial_backoff_s, cfg.auth_max_backoff_s)


def is_stalled(last_frame_mono_s: float, now_mono_s: float, stall_timeout_s: float) -> bool:
    """True when no good frame (decoded, and not late: :class:`StreamLag`) arrived for at least ``stall_timeout_s``
    seconds."""
    return now_mono_s - last_frame_mono_s >= stall_timeout_s


class StreamLag:
    """How late a live stream's frames arrive: wall seconds minus stream seconds, relative to the least delayed
    frame of the session so far (the baseline). Fed ``lag_s(now_mono_s, stream_s)`` for every frame.

    Why: a stream that froze and resumes delivers what it held back in a burst (measured on GStreamer's RTSP
    server: 4 s of frames within 0.1 s), and after each read timeout OpenCV returns one stray frame; both are
    decoded "now" but show the past. Their stream clock tells them apart: it advanced much less than the wall
    clock. The baseline creeps up by at most ``CREEP_S_PER_S`` per wall second so a camera clock slower than ours
    (ppm drift) is not taken for a growing delay; a stream clock that goes back (a camera restarting its
    timestamps) restarts the baseline. ``lag_s`` is None for a stream whose clock has never advanced (no usable
    time); once it has, a frame that repeats the last stream time while the wall clock ran on is late like any other.
    """

    CREEP_S_PER_S = 0.001

    def __init__(self) -> None:
        self.baseline_s: float | None = None
        self.last_stream_s: float | None = None
        self.last_mono_s: float | None = None
        self.moving = False  # the stream's clock has advanced at least once (else it gives no usable time)

    def lag_s(self, now_mono_s: float, stream_s: float) -> float | None:
        last_stream, last_mono = self.last_stream_s, self.last_mono_s
        self.last_stream_s, self.last_mono_s = stream_s, now_mono_s
        if last_stream is not None and stream_s != last_stream:
            self.moving = True
        if last_stream is not None and not self.moving:
            return None  # a stream whose clock never moves: nothing to measure with
        offset = now_mono_s - stream_s
        if self.baseline_s is None or last_mono is None or (last_stream is not None and stream_s < last_stream):
            self.baseline_s = offset
        else:
            self.baseline_s = min(self.baseline_s + self.CREEP_S_PER_S * max(now_mono_s - last_mono, 0.0), offset)
        return offset - self.baseline_s
