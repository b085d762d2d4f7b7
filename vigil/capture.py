"""Frame sources: live cameras (one thread each, reconnect, stall watchdog) and video files (every frame, in order).

Cameras (:class:`CameraSource`)
    One supervisor thread per camera runs *sessions*: a session is one capture opened by :func:`open_capture` and
    read by its own reader thread until it fails. The supervisor is the stall watchdog: it wakes every
    ``_WATCHDOG_POLL_S`` and, when no frame arrived for ``stall_timeout_s``, cancels the session and opens a fresh
    one. Why two threads: a blocked ``VideoCapture.read()`` cannot be interrupted from Python, and OpenCV's own read
    timeout is not a tight bound (measured with OpenCV 5.0 on a frozen RTSP stream: ``read()`` returned False
    after ~3x ``CAP_PROP_READ_TIMEOUT_MSEC``). A stuck reader is *abandoned*, not joined: it publishes nothing once
    cancelled, and releases its capture whenever its read finally returns. So a dead camera never blocks the other
    cameras (each has its own threads) nor shutdown (``stop()`` waits at most its timeout; threads are daemons).

    After any failure (open fails, read returns False or times out, stall) the capture is released and reopened:
    after a read timeout OpenCV's capture never recovers. Waits between attempts follow
    :func:`vigil.backoff.next_backoff_s` and use the stop event, so ``stop()`` is immediate. While a network
    camera's port refuses connections, the wait also probes the port every ``_PROBE_INTERVAL_S`` and retries as
    soon as it accepts again: a camera that comes back is reconnected within about one open time, not one backoff.

    Frames go to a bounded latest-frame queue of ``queue_size``: when full, the OLDEST frame is dropped and counted
    in ``frames_dropped``. ``fps_cap`` skips frames (``frames_skipped``) to cap the delivered rate.

    A video *file* configured as a camera is played like one: at its own frame rate (:class:`FilePacer`), and from
    the start again when it ends (one INFO line, then DEBUG), without a reconnect. Read as fast as decoding allows it
    would be consumed in a fraction of a second and "fail" at its end every time (a warning per loop).

Files (:class:`FileSource`)
    A generator in the caller's thread: every frame, in order, none dropped, one frame in memory at a time.

RTSP over TCP: OpenCV reads FFmpeg options from the environment variable ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` at
each open. :func:`ensure_rtsp_over_tcp` sets ``rtsp_transport;tcp`` in it once, from ``CameraSource.start()`` in the
caller's thread before any reader thread exists (``open_capture`` also calls it for rtsp URLs, a no-op by then);
never at import. Caveat: the environment is process-wide, so every FFmpeg capture in the process gets the option
(other demuxers ignore it); a value the user already set is kept, with ``rtsp_transport;tcp`` appended when it
names no transport.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np

from vigil.backoff import StreamLag, auth_backoff_s, is_stalled, next_backoff_s
from vigil.config import CameraConfig, ReconnectConfig
from vigil.errors import VigilError
from vigil.redact import mask_url
from vigil.rtsp_probe import ProbeResult, is_plain_rtsp, probe_rtsp
from vigil.types import Frame

if TYPE_CHECKING:
    import cv2

log = logging.getLogger("vigil.capture")

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
RTSP_TCP_OPTION = "rtsp_transport;tcp"
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}
_WATCHDOG_POLL_S = 0.1  # how often the supervisor checks its session (seconds)
_PROBE_INTERVAL_S = 0.25  # TCP probe period while a camera's port refuses connections (seconds)
_PROBE_TIMEOUT_S = 0.5
_FPS_WINDOW_S = 5.0  # stats().fps is measured over this many recent seconds
_REMIND_S = 60.0  # while a camera stays down, one warning per this many seconds (DEBUG in between)
_FILE_FPS_FALLBACK = 25.0  # a file camera whose container reports no usable frame rate is played at this rate
_RECHECK_UNREACHABLE_S = 300.0  # a camera the RTSP check calls unreachable is still handed to OpenCV this often
_RECHECK_FRAMES = 16  # after a failed read, number this many frames by their timestamps (the decoder's delay)


# ---- opening ---------------------------------------------------------------------------------------------------
def ensure_rtsp_over_tcp() -> None:
    """Make OpenCV's FFmpeg backend ask RTSP servers for TCP (process-wide; see the module docstring)."""
    current = os.environ.get(FFMPEG_OPTIONS_ENV, "")
    if "rtsp_transport" in current:
        return
    os.environ[FFMPEG_OPTIONS_ENV] = f"{current}|{RTSP_TCP_OPTION}" if current else RTSP_TCP_OPTION


@dataclass(frozen=True)
class DecodeOptions:
    """How FFmpeg decodes a camera (``CameraConfig.hw_acceleration``, ``decode_threads``)."""

    hw_acceleration: str = "off"  # off | any | vaapi | mfx | d3d11 | drm (OpenCV's VIDEO_ACCELERATION_*)
    threads: int | None = None  # FFmpeg decoder threads; None: OpenCV's default (one per core)


def decode_params(options: DecodeOptions) -> list[int]:
    """OpenCV open parameters for ``options`` (empty for software decoding with OpenCV's threads)."""
    import cv2

    params: list[int] = []
    if options.hw_acceleration != "off":
        params += [cv2.CAP_PROP_HW_ACCELERATION, getattr(cv2, f"VIDEO_ACCELERATION_{options.hw_acceleration.upper()}")]
    if options.threads is not None:
        params += [cv2.CAP_PROP_N_THREADS, options.threads]
    return params


def open_capture(
    source: str | int,
    open_timeout_s: float,
    read_timeout_s: float,
    logger: logging.Logger | None = None,
    level: int = logging.WARNING,
    decode: DecodeOptions | None = None,
) -> cv2.VideoCapture | None:
    """An opened ``cv2.VideoCapture``, or None (one log line at ``level``, URL password masked) when it won't open.

    Strings use the FFMPEG backend with open and read timeouts (without them OpenCV blocks ~30 s on a dead host);
    device indices use the default backend, which takes no timeouts (the stall watchdog covers them). An
    ``rtsp://`` source makes sure RTSP goes over TCP first (:func:`ensure_rtsp_over_tcp`; a no-op once a
    ``CameraSource`` has set it from the main thread). ``decode`` asks for hardware decoding or a number of decoder
    threads; when the open fails with hardware decoding asked for, it is tried once more in software (OpenCV's
    ``any`` falls back by itself; a named device that is absent fails the open).
    """
    decode = decode or DecodeOptions()
    capture = _open(source, open_timeout_s, read_timeout_s, logger, level, decode)
    if capture is None and decode.hw_acceleration != "off" and not isinstance(source, int):
        (logger or log).info("%s: hardware decoding (%s) failed: decoding in software", mask_url(source),
                             decode.hw_acceleration)  # fmt: skip
        capture = _open(source, open_timeout_s, read_timeout_s, logger, level, replace(decode, hw_acceleration="off"))
    return capture


def _open(
    source: str | int,
    open_timeout_s: float,
    read_timeout_s: float,
    logger: logging.Logger | None,
    level: int,
    decode: DecodeOptions,
) -> cv2.VideoCapture | None:
    import cv2

    if isinstance(source, str) and source.lower().startswith(("rtsp://", "rtsps://")):
        ensure_rtsp_over_tcp()

    started_s = time.monotonic()
    try:
        if isinstance(source, int):
            capture = cv2.VideoCapture(source)
        else:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                int(open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(read_timeout_s * 1000),
                *decode_params(decode),
            ]
            capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    except cv2.error as exc:
        reason = " ".join(str(exc).split())  # OpenCV errors span several lines
        (logger or log).log(level, "%s: cannot open (%s)", mask_url(source), mask_url(reason))
        return None
    if capture.isOpened():
        return capture
    capture.release()
    elapsed_s = time.monotonic() - started_s
    (logger or log).log(level, "%s: cannot open (gave up after %.1f s)", mask_url(source), elapsed_s)
    return None


def tcp_endpoint(source: str | int) -> tuple[str, int] | None:
    """(host, port) of a network source's server, None for files and devices."""
    if not isinstance(source, str):
        return None
    try:
        parts = urlsplit(source)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port


def tcp_reachable(endpoint: tuple[str, int], timeout_s: float = _PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to ``endpoint`` opens within ``timeout_s`` (it is closed at once)."""
    try:
        with socket.create_connection(endpoint, timeout=timeout_s):
            return True
    except OSError:
        return False


# ---- small parts -----------------------------------------------------------------------------------------------
UP, STALLED, DOWN, AUTH_FAILED = "up", "STALLED", "DOWN", "AUTH-FAILED"  # CameraStats.state


@dataclass(frozen=True)
class CameraStats:
    """A snapshot of one camera's counters (``CameraSource.stats()``).

    ``state``: ``up`` while good frames flow; otherwise what the current outage began with, kept until frames flow
    again: ``STALLED`` (the watchdog gave up on a silent stream), ``AUTH-FAILED`` (the camera refused the password),
    or ``DOWN`` (anything else, and before the first frame).
    """

    name: str
    connected: bool = False
    state: str = DOWN
    frames_read: int = 0  # frames decoded from the camera
    frames_dropped: int = 0  # oldest frames pushed out of the full latest-frame queue
    frames_skipped: int = 0  # frames left out by fps_cap
    frames_late: int = 0  # frames older than max_frame_age_s when they arrived: dropped, not processed
    reconnect_attempts: int = 0  # opens tried after the first one, successful or not
    reconnects: int = 0  # successful opens after a failure
    stalls: int = 0  # sessions the watchdog abandoned (no good frame for stall_timeout_s)
    auth_failures: int = 0  # opens the camera refused for the credentials (RTSP 401/403)
    file_loops: int = 0  # a file played as a camera: times it reached its end and started again
    last_error: str = ""
    fps: float = 0.0  # frames read per second over the last few seconds


class LatestFrameQueue:
    """A bounded queue that keeps the newest frames: ``put`` on a full queue drops the oldest."""

    def __init__(self, maxsize: int) -> None:
        self._frames: deque[Frame] = deque(maxlen=maxsize)
        self._ready = threading.Condition()

    def put(self, frame: Frame) -> bool:
        """Add ``frame``; True when the oldest frame was dropped to make room."""
        with self._ready:
            dropped = len(self._frames) == self._frames.maxlen
            self._frames.append(frame)
            self._ready.notify()
            return dropped

    def get(self, timeout_s: float) -> Frame | None:
        """The oldest queued frame, or None when none arrives within ``timeout_s``."""
        with self._ready:
            if not self._ready.wait_for(lambda: len(self._frames) > 0, timeout=max(timeout_s, 0.0)):
                return None
            return self._frames.popleft()

    def waiting(self) -> list[tuple[int, float]]:
        """(index, mono_ts_s) of every queued frame, oldest first; nothing is taken."""
        with self._ready:
            return [(frame.index, frame.mono_ts_s) for frame in self._frames]

    def take(self, index: int) -> Frame | None:
        """Remove and return the frame numbered ``index``, discarding the older ones; None when it is gone."""
        with self._ready:
            while self._frames and self._frames[0].index < index:
                self._frames.popleft()
            if self._frames and self._frames[0].index == index:
                return self._frames.popleft()
            return None

    def __len__(self) -> int:
        with self._ready:
            return len(self._frames)


class RateLimiter:
    """Lets through at most ``fps`` events per second on average (None: all) - a token bucket.

    Tokens accrue at ``fps`` per second up to ``_BURST`` (1.5): an event passes when a whole token is there. The
    half-token slack absorbs a camera's frame-time jitter; after a long gap at most one extra frame gets through.
    """

    _BURST = 1.5

    def __init__(self, fps: float | None) -> None:
        self.fps = fps
        self.tokens = 1.0
        self.last_s: float | None = None

    def allow(self, now_s: float) -> bool:
        """True when an event at ``now_s`` (monotonic seconds) may pass."""
        if not self.fps:
            return True
        if self.last_s is not None:
            self.tokens = min(self.tokens + max(now_s - self.last_s, 0.0) * self.fps, self._BURST)
        self.last_s = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class FilePacer:
    """When to read the next frame of a file played as a live camera, at ``fps`` frames per second.

    ``wait_s(now_s)`` is called before each read and returns how long to wait first. Frames are due every
    ``1 / fps`` seconds from the first one; a reader that falls more than ``MAX_LAG_S`` behind (a slow disk, a
    suspended process) restarts the clock instead of bursting through the backlog.
    """

    MAX_LAG_S = 1.0

    def __init__(self, fps: float) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.period_s = 1.0 / fps
        self.next_due_s: float | None = None

    def wait_s(self, now_s: float) -> float:
        if self.next_due_s is None or now_s - self.next_due_s > self.MAX_LAG_S:
            self.next_due_s = now_s
        wait = max(self.next_due_s - now_s, 0.0)
        self.next_due_s += self.period_s
        return wait


def file_fps(reported_fps: float) -> float:
    """The rate to play a file camera at: the container's frame rate, or ``_FILE_FPS_FALLBACK`` when it reports
    none (0, NaN) or an implausible one."""
    return reported_fps if 1.0 <= reported_fps <= 240.0 else _FILE_FPS_FALLBACK


@dataclass
class _Session:
    """One opened-or-opening capture and its reader thread's progress (shared with the supervisor)."""

    number: int  # 0 for the first open, then one more per reconnect attempt
    last_progress_mono_s: float  # when the session started, opened, or last read a good frame
    cancel: threading.Event
    done: threading.Event
    opened: bool = False
    frames: int = 0
    error: str = ""
    outage: str = DOWN  # the state this session's failure puts the camera in (STALLED, AUTH-FAILED, DOWN)


# ---- cameras ---------------------------------------------------------------------------------------------------
class CameraSource:
    """A live camera read by its own threads; ``get()`` returns its newest frames.

    ``Frame.index`` counts frames delivered since ``start()`` and does not restart on reconnect; ``video_ts_s`` is
    seconds since ``start()`` (monotonic). A live stream's ``CAP_PROP_POS_MSEC`` is not used: it starts at an
    arbitrary value (measured -233 ms on RTSP) and restarts at every reconnect.
    """

    def __init__(self, camera: CameraConfig, reconnect: ReconnectConfig | None = None, seed: int | None = None) -> None:
        self.camera = camera
        self.reconnect = reconnect or ReconnectConfig()
        self.log = logging.getLogger(f"vigil.camera.{camera.name}")
        self._queue = LatestFrameQueue(camera.queue_size)
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards the counters below and publishing
        self._stats = CameraStats(name=camera.name)
        self._read_times: deque[float] = deque(maxlen=2048)  # enough for 400 fps over _FPS_WINDOW_S
        self._next_index = 0
        self._started_mono_s = 0.0
        self._supervisor: threading.Thread | None = None
        self._readers: list[threading.Thread] = []
        self._down_since_mono_s: float | None = None
        self._outage: str | None = DOWN  # None while good frames flow (see CameraStats.state)
        self._last_warning_mono_s = float("-inf")
        self._probe_enabled = True  # the RTSP check before each open (off once OpenCV contradicted it)
        self._refusals_confirmed: set[str] = set()  # kinds of refusal (ProbeResult.refusal) OpenCV agreed with
        self._unreachable_checked_mono_s = (
            time.monotonic()
        )  # when OpenCV last tried a camera the check calls unreachable

    @property
    def name(self) -> str:
        return self.camera.name

    # ---- public ----
    def start(self) -> None:
        """Start reading in the background (returns at once; the first open happens in the thread)."""
        if self._supervisor is not None:
            raise RuntimeError(f"camera {self.name}: already started")
        if self.camera.is_network:
            ensure_rtsp_over_tcp()  # before any thread opens a capture: os.environ is not thread-safe
        self._started_mono_s = time.monotonic()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name=f"vigil-cam-{self.name}")
        self._supervisor.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop and release; waits at most ``timeout_s``. True when every thread ended (a reader stuck in a read
        is left behind as a daemon and releases its capture when the read returns)."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        threads = ([self._supervisor] if self._supervisor else []) + list(self._readers)
        for thread in threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        return not any(thread.is_alive() for thread in threads)

    def get(self, timeout_s: float) -> Frame | None:
        """The oldest queued frame, or None when none arrives within ``timeout_s`` seconds."""
        return self._queue.get(timeout_s)

    def waiting_frames(self) -> list[tuple[int, float]]:
        """(index, mono_ts_s) of the queued frames, oldest first (a two-source camera matches by them)."""
        return self._queue.waiting()

    def take_frame(self, index: int) -> Frame | None:
        """Take the queued frame numbered ``index`` (older ones are discarded); None when it was dropped."""
        return self._queue.take(index)

    def stats(self) -> CameraStats:
        now = time.monotonic()
        with self._lock:
            state = UP if self._outage is None and self._stats.connected else (self._outage or DOWN)
            return replace(self._stats, fps=self._fps(now), state=state)

    # ---- supervisor (watchdog) ----
    def _supervise(self) -> None:
        failures = 0  # consecutive sessions that delivered no frame
        auth_failures = 0  # consecutive sessions refused for the credentials
        number = 0
        while not self._stop.is_set():
            session = self._run_session(number)
            number += 1
            failures = 0 if session.frames else failures + 1
            auth_failures = auth_failures + 1 if session.outage == AUTH_FAILED else 0
            if self._stop.is_set():
                break
            self._on_session_end(session)
            if auth_failures:
                self._stop.wait(auth_backoff_s(auth_failures, self.reconnect))
            else:
                self._wait_before_retry(next_backoff_s(max(failures - 1, 0), self.reconnect, self._rng.random()))

    def _run_session(self, number: int) -> _Session:
        """Open and read in a new reader thread; return when it ends, stalls or stop is asked."""
        session = _Session(number, time.monotonic(), threading.Event(), threading.Event())
        if number > 0:
            self._count(reconnect_attempts=1)
        reader = threading.Thread(target=self._read, args=(session,), daemon=True, name=f"vigil-cam-{self.name}-r")
        self._readers = [t for t in self._readers if t.is_alive()] + [reader]
        reader.start()
        while not self._stop.is_set() and not session.done.wait(_WATCHDOG_POLL_S):
            if is_stalled(session.last_progress_mono_s, time.monotonic(), self._stall_limit_s(session)):
                self._abandon(session)
                break
        session.cancel.set()
        return session

    def _stall_limit_s(self, session: _Session) -> float:
        """No-frame limit: ``stall_timeout_s``; while still opening, at least the open timeout plus a second."""
        if session.opened:
            return self.camera.stall_timeout_s
        return max(self.camera.stall_timeout_s, self.camera.open_timeout_s + 1.0)

    def _abandon(self, session: _Session) -> None:
        """Give up on a session whose reader is stuck: it may still be blocked in OpenCV, but publishes nothing
        more and releases its capture when the call returns (OpenCV's own timeouts bound that in practice)."""
        with self._lock:
            session.cancel.set()  # under the lock: the stuck reader can publish nothing from now on
            session.error = f"stalled: no good frame for {self._stall_limit_s(session):.1f} s"
            session.outage = STALLED if session.opened else session.outage
        self._count(stalls=1)
        stuck = sum(1 for thread in self._readers if thread.is_alive())
        if stuck > 1:
            self.log.warning("camera %s: %d reader threads still blocked in OpenCV", self.name, stuck)

    def _on_session_end(self, session: _Session) -> None:
        """Log the failure: a warning when the camera goes down, then one per ``_REMIND_S`` (DEBUG between)."""
        now = time.monotonic()
        error = session.error or "stream ended"
        with self._lock:
            self._stats = replace(self._stats, connected=False, last_error=error)
            if self._outage is None or session.outage != DOWN:  # a stall or refusal names the outage until it ends
                self._outage = session.outage
        went_down = self._down_since_mono_s is None
        down_since = now if self._down_since_mono_s is None else self._down_since_mono_s
        self._down_since_mono_s = down_since
        down_s = now - down_since
        if went_down or now - self._last_warning_mono_s >= _REMIND_S:
            source = mask_url(self.camera.source)
            self.log.warning("camera %s: %s (down %.0f s, retrying %s)", self.name, mask_url(error), down_s, source)
            self._last_warning_mono_s = now
        else:
            self.log.debug("camera %s: %s (down %.0f s)", self.name, mask_url(error), down_s)

    def _wait_before_retry(self, delay_s: float) -> None:
        """Wait ``delay_s`` (or until stop); end early when a refused network port starts accepting again.

        The probe is a plain TCP connect-and-close to the camera's host and port every ``_PROBE_INTERVAL_S``, only
        while the port refuses or times out (a reachable port that fails at the RTSP level gets the plain backoff).
        Caveat: a host *name* is resolved by the system resolver, which Python cannot time out.
        """
        endpoint = tcp_endpoint(self.camera.source)
        if endpoint is None or tcp_reachable(endpoint):
            self._stop.wait(delay_s)
            return
        deadline = time.monotonic() + delay_s
        while not self._stop.wait(min(_PROBE_INTERVAL_S, max(deadline - time.monotonic(), 0.0))):
            if time.monotonic() >= deadline:
                return
            if tcp_reachable(endpoint):
                self.log.debug("camera %s: the port accepts connections again: retrying now", self.name)
                return

    # ---- reader ----
    def _read(self, session: _Session) -> None:
        """Reader thread body: open, then grab/retrieve/publish until failure, cancel or stop."""
        capture = None
        try:
            capture = self._open(session)
            if capture is not None:
                self._read_frames(session, capture)
        except Exception as exc:  # a reader must never die silently; the supervisor reconnects
            session.error = f"reader failed: {type(exc).__name__}: {exc}"
        finally:
            if capture is not None:
                capture.release()
            session.done.set()

    def _open(self, session: _Session):
        """Open the capture (its failure is logged by the supervisor, once per outage).

        An ``rtsp://`` camera is asked first (:func:`vigil.rtsp_probe.probe_rtsp`, one DESCRIBE), and OpenCV is not
        asked to open what the check says it cannot: a wrong password is not tried twice (camera lockouts), and a
        closed port or a server that does not answer does not hold OpenCV's FFmpeg open lock. That lock is process-wide
        (measured: while one camera's open waited out its 5 s timeout on a silent port, a killed camera's refused
        connection took 4.5 s to report and a returning camera's open 6 s instead of 2). Trust is checked, not
        assumed: the first wrong-password or error-status refusal is verified by opening anyway, and a camera the
        check has found unreachable for ``_RECHECK_UNREACHABLE_S`` is handed to OpenCV once more; if OpenCV opens
        the stream, the check is switched off for this camera.
        """
        source, cam = self.camera.source, self.camera
        probe = self._probe()
        refusal = probe.refusal if probe is not None else None
        if probe is not None and refusal is not None and self._trust(refusal):
            return self._refused(session, probe)
        decode = DecodeOptions(cam.hw_acceleration, cam.decode_threads)
        capture = open_capture(source, cam.open_timeout_s, cam.read_timeout_s, self.log, logging.DEBUG, decode)
        if probe is not None and refusal is not None:
            if capture is None:
                self._refusals_confirmed.add(refusal)
                return self._refused(session, probe)
            self._probe_enabled = False
            self.log.info("camera %s: the RTSP check said %r but the stream opened: not checking again", self.name,
                          probe.describe())  # fmt: skip
        if capture is None:
            session.error = "cannot open"
            return None
        session.opened = True
        session.last_progress_mono_s = time.monotonic()
        with self._lock:
            if session.cancel.is_set():
                return capture  # released by the caller
            reconnected = session.number > 0
            self._stats = replace(self._stats, connected=True, reconnects=self._stats.reconnects + reconnected)
        return capture

    def _trust(self, refusal: str) -> bool:
        """Whether a refusal of this kind (ProbeResult.refusal) is taken without asking OpenCV (see ``_open``)."""
        if refusal != "unreachable":
            return refusal in self._refusals_confirmed
        now = time.monotonic()
        if now - self._unreachable_checked_mono_s < _RECHECK_UNREACHABLE_S:
            return True
        self._unreachable_checked_mono_s = now
        return False

    def _probe(self) -> ProbeResult | None:
        if not self._probe_enabled or not is_plain_rtsp(self.camera.source):
            return None
        return probe_rtsp(str(self.camera.source), self.camera.open_timeout_s)

    def _refused(self, session: _Session, probe: ProbeResult) -> None:
        session.error = probe.describe()
        if probe.auth_failed:
            session.outage = AUTH_FAILED
            self._count(auth_failures=1)
        return None

    def _log_flowing(self) -> None:
        """The first good frame of a session: the camera is up (again)."""
        with self._lock:
            self._outage = None
        if self._down_since_mono_s is None:
            self.log.info("camera %s: connected to %s", self.name, mask_url(self.camera.source))
            return
        down_s = time.monotonic() - self._down_since_mono_s
        self.log.info("camera %s: reconnected after %.1f s down: frames flowing", self.name, down_s)
        self._down_since_mono_s = None

    def _read_frames(self, session: _Session, capture) -> None:
        import cv2

        limiter = RateLimiter(self.camera.fps_cap)
        pacer = FilePacer(file_fps(capture.get(cv2.CAP_PROP_FPS))) if self.camera.is_file else None
        max_age_s = self.camera.max_frame_age_s if self.camera.is_network else None
        lag = StreamLag()
        frames_this_pass = 0
        while not self._stop.is_set() and not session.cancel.is_set():
            if pacer is not None and self._stop.wait(pacer.wait_s(time.monotonic())):
                return
            asked = time.monotonic()
            if not capture.grab():
                if pacer is not None and frames_this_pass > 0 and self._rewind(capture, frames_this_pass):
                    frames_this_pass = 0
                    continue
                session.error = "read failed or timed out"
                return
            frames_this_pass += 1
            now = time.monotonic()
            if max_age_s is not None and self._late(lag, capture.get(cv2.CAP_PROP_POS_MSEC), asked, now, max_age_s):
                self._count(frames_read=1, frames_late=1, read_time=now)  # old news: not a good frame
                continue
            session.last_progress_mono_s = now
            if not limiter.allow(now):
                self._count(frames_read=1, frames_skipped=1, read_time=now)
                continue
            ok, image = capture.retrieve()
            if not ok or image is None:
                session.error = "frame decode failed"
                return
            self._publish(session, image, now)

    def _late(self, lag: StreamLag, stream_ms: float, asked: float, now: float, max_age_s: float) -> bool:
        """A frame from the past: behind the stream's clock by more than ``max_age_s``, or the one frame OpenCV hands
        out after its read timeout fired (the grab took about ``read_timeout_s``), which shows the stream as it was."""
        behind_s = lag.lag_s(now, stream_ms / 1000.0) or 0.0
        return behind_s > max_age_s or now - asked >= 0.9 * self.camera.read_timeout_s

    def _rewind(self, capture, frames: int) -> bool:
        """A file camera reached its end: seek back to the first frame (True when the seek worked)."""
        import cv2

        if not capture.set(cv2.CAP_PROP_POS_FRAMES, 0):
            return False
        self._count(file_loops=1)
        level = logging.INFO if self.stats().file_loops == 1 else logging.DEBUG
        self.log.log(
            level, "camera %s: end of the file after %d frames: playing it again from the start", self.name, frames
        )
        return True

    def _publish(self, session: _Session, image: np.ndarray, now: float) -> None:
        if session.frames == 0 and not session.cancel.is_set():
            self._log_flowing()
        with self._lock:
            if session.cancel.is_set():
                return
            frame = Frame(self.name, self._next_index, now, now - self._started_mono_s, image)
            self._next_index += 1
            session.frames += 1
            dropped = self._queue.put(frame)
            self._read_times.append(now)
            self._stats = replace(
                self._stats,
                frames_read=self._stats.frames_read + 1,
                frames_dropped=self._stats.frames_dropped + int(dropped),
            )

    def _count(self, read_time: float | None = None, **increments: int) -> None:
        with self._lock:
            if read_time is not None:
                self._read_times.append(read_time)
            values = {key: getattr(self._stats, key) + value for key, value in increments.items()}
            self._stats = replace(self._stats, **values)

    def _fps(self, now: float) -> float:
        """Frames read per second over the last ``_FPS_WINDOW_S`` seconds (call with the lock held)."""
        return sum(1 for t in self._read_times if now - t <= _FPS_WINDOW_S) / _FPS_WINDOW_S


# ---- files -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SkippedFrames:
    """Frames of a file that did not decode: ``first``..``last`` (frame numbers, inclusive)."""

    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"frame {self.first}" if self.first == self.last else f"frames {self.first}-{self.last}"


def read_failure_budget(frame_count: int | None, next_index: int) -> int:
    """How many failed reads in a row a file may have before it is taken to be at its end.

    OpenCV cannot tell a frame that does not decode from the end of the file: both are a failed ``read()``. But
    each failed read inside a damaged section consumes one packet (measured: 10 failed reads over 10 corrupt frames,
    then the frames after them decode), while at the end every read fails. So the reader may go on for as many
    frames as the container says are left, plus a margin; an unknown count gets a fixed allowance.
    """
    if frame_count is None:
        return 300
    return max(frame_count - next_index, 0) + 16


class FileSource:
    """Every frame of a video file, in order, none dropped (for ``vigil process``).

    ``frames()`` is a generator run in the caller's thread, so memory is one frame.

    Time is the video's own: ``video_ts_s`` is ``index / fps`` (``CAP_PROP_POS_MSEC`` when the file has no frame
    rate), and ``mono_ts_s`` is ``clock_offset_s + video_ts_s``, so the tracker's and the rules' clocks (track age,
    cooldown) run at the video's pace whatever the machine's speed (a file of several videos passes each one the
    end of the previous as its offset).

    Damaged files: a read that fails is retried (:func:`read_failure_budget`): frames after a corrupt section are
    read and numbered by their position in the file, and each gap is kept in ``skipped``. A file that opens but
    yields no frame raises VigilError at the end of ``frames()``; one that ends before its announced frame count
    ends with a warning (a count can be an estimate).
    """

    def __init__(self, path: Path | str, camera: str | None = None, clock_offset_s: float = 0.0) -> None:
        import cv2

        self.path = Path(path)
        self.camera = camera or self.path.stem
        self.clock_offset_s = clock_offset_s
        if not self.path.is_file():
            raise VigilError(f"{self.path}: video file not found")
        self._capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not self._capture.isOpened():
            self._capture.release()
            raise VigilError(f"{self.path}: cannot open video")
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if np.isfinite(fps) and fps > 0 else 0.0
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count: int | None = count if count > 0 else None  # as announced by the container, if known
        self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frames_read = 0
        self.skipped: list[SkippedFrames] = []
        self.end_ts_s = 0.0  # video time just after the last frame read (the next file's clock offset)

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._capture.release()

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        """Yield every frame that decodes, from the current position; ends at the end of the file or when ``stop``
        is set."""
        import cv2

        next_index, failures, pts_offset, checking = 0, 0, 0, 0
        while stop is None or not stop.is_set():
            ok, image = self._capture.read()
            if not ok or image is None:
                failures += 1
                if failures > read_failure_budget(self.frame_count, next_index):
                    break
                checking = _RECHECK_FRAMES
                continue
            failures = 0
            index, pts_index = next_index, self._pts_index(cv2)
            if checking and pts_index is not None:  # after a damaged section: where in the file are we?
                checking -= 1
                index = max(next_index, pts_index - pts_offset)
                if index > next_index:
                    self.skipped.append(SkippedFrames(next_index, index - 1))
            elif pts_index is not None:
                pts_offset = pts_index - index
            video_ts_s = self._video_ts_s(index, cv2)
            yield Frame(self.camera, index, self.clock_offset_s + video_ts_s, video_ts_s, image)
            self.frames_read += 1
            self.end_ts_s = video_ts_s + (1.0 / self.fps if self.fps else 0.0)
            next_index = index + 1
        self._check_complete(next_index, stopped=stop is not None and stop.is_set())  # may raise VigilError

    def _pts_index(self, cv2) -> int | None:
        """The frame number the last read frame's timestamp gives (None without a frame rate)."""
        if not self.fps:
            return None
        return int(round(float(self._capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0 * self.fps))

    def _video_ts_s(self, index: int, cv2) -> float:
        if self.fps > 0:
            return index / self.fps
        return float(self._capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0

    def damage(self) -> str | None:
        """One line saying which frames did not decode (None when none did), e.g. ``10 of 60 frames did not decode
        (frames 31-40)``."""
        if not self.skipped:
            return None
        missing = sum(gap.count for gap in self.skipped)
        total = self.frames_read + missing
        return f"{missing} of {total} frames did not decode ({', '.join(str(gap) for gap in self.skipped)})"

    def _check_complete(self, next_index: int, stopped: bool) -> None:
        """After the last frame: VigilError when none decoded, a warning when fewer than announced."""
        if stopped:
            return
        if self.frames_read == 0:
            raise VigilError(f"{self.path}: no frame could be decoded")
        if self.frame_count and next_index < self.frame_count:
            log.warning(
                "%s: ended after %d of %d announced frames (the end of the file did not decode, or the count was an "
                "estimate)",
                self.path,
                next_index,
                self.frame_count,
            )
