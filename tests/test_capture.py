"""Capture: latest-frame queue, fps cap, file source, camera reconnect against real local RTSP servers.

The RTSP tests use tests/rtsp_server.py (Debian's ffmpeg + a small relay) and skip when ffmpeg is absent, and
GStreamer's RTSP server (tests/gst_rtsp_server.py: a process the tests freeze with SIGSTOP, and one with a password),
skipped when it is not installed. Timeouts are shortened so the file runs in about a minute.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.fault_harness import wait_until
from vigil.capture import (
    AUTH_FAILED,
    FFMPEG_OPTIONS_ENV,
    STALLED,
    UP,
    CameraSource,
    FilePacer,
    FileSource,
    LatestFrameQueue,
    RateLimiter,
    ensure_rtsp_over_tcp,
    file_fps,
    open_capture,
    tcp_endpoint,
)
from vigil.config import CameraConfig, ReconnectConfig
from vigil.errors import VigilError
from vigil.types import Frame

CLIP = ("video", "short_hamilton_clip.mp4")
CLIP_FRAMES = 275
FAST_RETRY = ReconnectConfig(initial_backoff_s=0.05, max_backoff_s=0.2)
needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None, reason="ffmpeg not installed (apt-get install ffmpeg): no local RTSP server"
)


def camera(name: str, source: str | int, **overrides) -> CameraConfig:
    settings = {"open_timeout_s": 2.0, "read_timeout_s": 1.0, "stall_timeout_s": 3.0, "queue_size": 2}
    return CameraConfig(name=name, source=source, **(settings | overrides))


@pytest.fixture
def clip(shared_data) -> Path:
    return shared_data(*CLIP)


@pytest.fixture
def started() -> Iterator[Callable[..., CameraSource]]:
    """Factory for started CameraSources; every one is stopped at teardown."""
    sources: list[CameraSource] = []

    def make(cfg: CameraConfig, reconnect: ReconnectConfig = FAST_RETRY) -> CameraSource:
        source = CameraSource(cfg, reconnect, seed=0)
        source.start()
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.stop(timeout_s=2.0)


# ---- small parts ---------------------------------------------------------------------------------------------
def _frame(index: int) -> Frame:
    return Frame("cam", index, float(index), float(index), np.zeros((2, 2, 3), np.uint8))


@pytest.mark.parametrize(
    ("maxsize", "puts", "dropped", "kept"), [(1, 3, 2, [2]), (2, 5, 3, [3, 4]), (4, 3, 0, [0, 1, 2])]
)
def test_latest_frame_queue_drops_oldest(maxsize: int, puts: int, dropped: int, kept: list[int]) -> None:
    queue = LatestFrameQueue(maxsize)
    assert sum(queue.put(_frame(i)) for i in range(puts)) == dropped
    assert [queue.get(0.0).index for _ in kept] == kept
    started = time.monotonic()
    assert queue.get(0.1) is None
    assert 0.05 <= time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("fps", "camera_fps", "seconds", "expected"),
    [(None, 30, 2, 60), (10, 30, 2, 20), (15, 30, 2, 30), (30, 25, 2, 50), (1, 30, 3, 3), (12.5, 25, 4, 50)],
)
def test_rate_limiter_caps_average_rate(fps: float | None, camera_fps: float, seconds: float, expected: int) -> None:
    limiter = RateLimiter(fps)
    jitter = [0.0, 0.004, -0.003, 0.002]  # a real camera's frame times wobble
    times = [i / camera_fps + jitter[i % 4] for i in range(int(seconds * camera_fps))]
    assert abs(sum(limiter.allow(t) for t in times) - expected) <= 1


def test_rate_limiter_does_not_burst_after_a_gap() -> None:
    limiter = RateLimiter(10)
    assert [limiter.allow(t) for t in (0.0, 0.1, 0.2)] == [True, True, True]
    # after a minute without frames: one extra frame at most, then the steady 10 fps again
    assert [limiter.allow(t) for t in (60.0, 60.033, 60.066, 60.1, 60.133)] == [True, False, True, False, False]


@pytest.mark.parametrize(
    ("fps", "read_times", "waits"),
    [
        (
            10.0,
            [0.0, 0.0, 0.05, 0.2],
            [0.0, 0.1, 0.15, 0.1],
        ),  # due every 0.1 s from the first read (0.0, 0.1, 0.2, 0.3)
        (25.0, [0.0, 0.04, 0.08], [0.0, 0.0, 0.0]),  # a reader exactly on time never waits
        (10.0, [0.0, 0.5, 0.5], [0.0, 0.0, 0.0]),  # 0.4 s late: the backlog is read at once (within MAX_LAG_S)
        (10.0, [0.0, 5.0, 5.0], [0.0, 0.0, 0.1]),  # 4.9 s late (a suspended process): the clock restarts, no burst
    ],
)
def test_file_pacer_plays_at_the_file_rate_with_a_fake_clock(fps, read_times, waits) -> None:
    pacer = FilePacer(fps)
    assert [round(pacer.wait_s(t), 6) for t in read_times] == waits


@pytest.mark.parametrize(
    ("reported", "played"), [(29.97, 29.97), (0.0, 25.0), (float("nan"), 25.0), (1000.0, 25.0), (1.0, 1.0)]
)
def test_file_fps_falls_back_when_the_container_has_no_rate(reported: float, played: float) -> None:
    assert file_fps(reported) == played


@pytest.mark.parametrize(
    ("source", "is_file"),
    [
        ("clips/a.mp4", True),
        ("/videos/a.mp4", True),
        ("rtsp://h/s", False),
        ("http://h/v.mjpg", False),
        ("/dev/video0", False),
        (0, False),
    ],
)
def test_camera_source_kinds(source, is_file: bool) -> None:
    assert camera("c", source).is_file is is_file


@pytest.mark.parametrize(
    ("source", "endpoint"),
    [
        ("rtsp://user:pw@10.0.0.5/stream", ("10.0.0.5", 554)),
        ("rtsp://10.0.0.5:8554/a", ("10.0.0.5", 8554)),
        ("http://cam.local/video.mjpg", ("cam.local", 80)),
        ("/videos/a.mp4", None),
        (0, None),
    ],
)
def test_tcp_endpoint(source: str | int, endpoint: tuple[str, int] | None) -> None:
    assert tcp_endpoint(source) == endpoint


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, "rtsp_transport;tcp"),
        ("", "rtsp_transport;tcp"),
        ("stimeout;5000000", "stimeout;5000000|rtsp_transport;tcp"),
        ("rtsp_transport;udp", "rtsp_transport;udp"),  # the user's choice is kept
    ],
)
def test_ensure_rtsp_over_tcp(monkeypatch, before: str | None, after: str) -> None:
    monkeypatch.setenv(FFMPEG_OPTIONS_ENV, before or "")  # recorded, so teardown restores the real value
    if before is None:
        monkeypatch.delenv(FFMPEG_OPTIONS_ENV)
    ensure_rtsp_over_tcp()
    ensure_rtsp_over_tcp()  # idempotent
    assert os.environ[FFMPEG_OPTIONS_ENV] == after


# ---- files ---------------------------------------------------------------------------------------------------
def test_file_source_reads_every_frame_in_order(clip: Path) -> None:
    with FileSource(clip) as video:
        assert video.frame_count == CLIP_FRAMES
        frames = [(f.index, f.video_ts_s, f.image.shape, f.camera) for f in video.frames()]
    assert [index for index, *_ in frames] == list(range(CLIP_FRAMES))
    timestamps = np.array([ts for _, ts, *_ in frames])
    assert timestamps[0] == 0.0 and np.all(np.diff(timestamps) > 0)
    assert timestamps[-1] == pytest.approx((CLIP_FRAMES - 1) / video.fps)
    assert {shape for _, _, shape, _ in frames} == {(360, 640, 3)}
    assert {name for *_, name in frames} == {"short_hamilton_clip"}


def test_file_source_stops_on_request(clip: Path) -> None:
    import threading

    stop = threading.Event()
    with FileSource(clip, camera="door") as video:
        indices = []
        for frame in video.frames(stop):
            indices.append(frame.index)
            if frame.index == 9:
                stop.set()
    assert indices == list(range(10))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.mp4", "video file not found"),
        (lambda tmp: tmp, "video file not found"),  # a folder
        (lambda tmp: _write(tmp / "notes.mp4", b"this is not a video\n" * 50), "cannot open video"),
        (lambda tmp: _write(tmp / "empty.avi", b""), "cannot open video"),
    ],
)
def test_file_source_bad_input_is_one_line(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(VigilError) as info:
        FileSource(path)
    text = str(info.value)
    assert text == f"{path}: {message}"
    assert "\n" not in text


@needs_ffmpeg
@pytest.mark.parametrize("keep_fraction", [0.5, 0.0])
def test_file_source_truncated_file_stops_with_a_warning(clip: Path, tmp_path: Path, caplog, keep_fraction) -> None:
    """A file cut short (moov atom first, so it still opens): frames up to the cut, then a warning; nothing
    decodable at all: one-line VigilError."""
    import subprocess

    faststart = tmp_path / "faststart.mp4"
    command = ["ffmpeg", "-loglevel", "error", "-i", str(clip), "-an", "-c", "copy", "-movflags", "+faststart"]
    subprocess.run([*command, str(faststart)], check=True, timeout=60)
    data = faststart.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: max(int(len(data) * keep_fraction), data.find(b"mdat") + 64)])
    with FileSource(cut) as video:
        if keep_fraction == 0.0:
            with pytest.raises(VigilError, match=r"cut\.mp4: no frame could be decoded$"):
                list(video.frames())
            return
        indices = [frame.index for frame in video.frames()]
    assert 0 < len(indices) < CLIP_FRAMES and indices == list(range(len(indices)))
    assert any(
        f"ended after {len(indices)} of {CLIP_FRAMES} announced frames" in r.getMessage() for r in caplog.records
    )


def corrupt_clip(clip: Path, folder: Path, start: float = 0.4, end: float = 0.55) -> Path:
    """60 frames of the clip (GOP 10), with the bytes from ``start`` to ``end`` of the file overwritten by noise."""
    import subprocess

    whole = folder / "s60.mp4"
    command = ["ffmpeg", "-loglevel", "error", "-y", "-i", str(clip), "-frames:v", "60", "-an", "-c:v", "libx264",
               "-g", "10", "-pix_fmt", "yuv420p", str(whole)]  # fmt: skip
    subprocess.run(command, check=True, timeout=120)
    data = bytearray(whole.read_bytes())
    a, b = int(len(data) * start), int(len(data) * end)
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    damaged = folder / "c60.mp4"
    damaged.write_bytes(bytes(data))
    return damaged


def ffprobe_frames(path: Path) -> int:
    import subprocess

    command = ["ffprobe", "-v", "quiet", "-count_frames", "-select_streams", "v:0", "-show_entries",
               "stream=nb_read_frames", "-of", "csv=p=0", str(path)]  # fmt: skip
    return int(subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout.strip())


@needs_ffmpeg
def test_file_source_reads_past_a_corrupt_section_and_says_what_it_skipped(clip: Path, tmp_path: Path) -> None:
    """Issue 26, defect 5: OpenCV's read fails on the first corrupt packet and went on failing for 10 reads; the file
    used to end there (29 of 60 frames, exit 0) although FFmpeg decodes 49-50."""
    damaged = corrupt_clip(clip, tmp_path)
    with FileSource(damaged) as video:
        frames = [(frame.index, frame.video_ts_s) for frame in video.frames()]
        damage = video.damage()
    indices = [index for index, _ in frames]
    assert len(frames) >= ffprobe_frames(damaged) - 1, (len(frames), ffprobe_frames(damaged))
    assert indices == sorted(set(indices)) and indices[-1] == 59  # in order, numbered by their place in the file
    gaps = [(a + 1, b - 1) for a, b in zip(indices, indices[1:]) if b > a + 1]
    assert (
        gaps
        and damage
        == f"{60 - len(frames)} of 60 frames did not decode ("
        + ", ".join(f"frames {first}-{last}" if last > first else f"frame {first}" for first, last in gaps)
        + ")"
    )
    assert all(ts == pytest.approx(index / video.fps) for index, ts in frames)


@pytest.mark.parametrize("offset_s", [0.0, 12.5])
def test_file_frames_carry_the_videos_own_time(clip: Path, offset_s: float) -> None:
    """`vigil process` clocks (track age, cooldown) run on video time: mono_ts_s = offset + position in the file,
    whatever the machine's speed; end_ts_s is where the next file's clock starts."""
    with FileSource(clip, clock_offset_s=offset_s) as video:
        frames = [(frame.index, frame.mono_ts_s, frame.video_ts_s) for frame in video.frames()]
    assert all(mono == pytest.approx(offset_s + index / video.fps) for index, mono, _ in frames)
    assert all(mono - offset_s == pytest.approx(ts) for _, mono, ts in frames)
    assert video.end_ts_s == pytest.approx(CLIP_FRAMES / video.fps) and video.damage() is None


@pytest.mark.parametrize(("count", "next_index", "budget"), [(60, 29, 47), (60, 60, 16), (60, 70, 16), (None, 5, 300)])
def test_read_failure_budget(count: int | None, next_index: int, budget: int) -> None:
    from vigil.capture import read_failure_budget

    assert read_failure_budget(count, next_index) == budget


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---- cameras that do not open ----------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["{tmp}/no-such-camera.mp4", 99], ids=["missing-file", "missing-device"])
def test_camera_that_never_opens_retries_and_stops_fast(tmp_path: Path, started, source: str | int) -> None:
    if isinstance(source, str):
        source = source.format(tmp=tmp_path)
    cam = started(camera("dead", source))
    assert wait_until(lambda: cam.stats().reconnect_attempts >= 2, timeout_s=5.0)
    t0 = time.monotonic()
    assert cam.get(timeout_s=0.3) is None
    assert time.monotonic() - t0 < 1.0
    stats = cam.stats()
    assert not stats.connected and stats.frames_read == 0 and stats.last_error == "cannot open"
    t0 = time.monotonic()
    assert cam.stop(timeout_s=1.0)
    assert time.monotonic() - t0 < 1.2


def test_open_capture_returns_none_and_warns_once(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="vigil")
    assert open_capture(str(tmp_path / "none.mp4"), open_timeout_s=1.0, read_timeout_s=1.0) is None
    records = [r for r in caplog.records if r.name.startswith("vigil")]
    assert len(records) == 1 and "cannot open" in records[0].getMessage()


def test_camera_password_never_logged(started, caplog, capfd) -> None:
    from rtsp_server import free_tcp_port

    caplog.set_level(logging.DEBUG, logger="vigil")
    url = f"rtsp://admin:secret@127.0.0.1:{free_tcp_port()}/x"
    cam = started(camera("lobby", url))
    assert wait_until(lambda: cam.stats().reconnect_attempts >= 2, timeout_s=5.0)
    cam.stop(timeout_s=1.0)
    messages = [record.getMessage() for record in caplog.records]
    assert any("lobby" in m for m in messages) and any("admin:***@127.0.0.1" in m for m in messages)
    assert not [m for m in messages if "secret" in m]
    assert "secret" not in cam.stats().last_error
    assert "secret" not in capfd.readouterr().err  # OpenCV / FFmpeg's own stderr lines


# ---- a file played as a camera ----------------------------------------------------------------------------------
def test_camera_latest_frame_queue_counts_drops_and_fps_cap(clip: Path, started) -> None:
    cam = started(camera("loop", str(clip), queue_size=2, fps_cap=20.0))
    assert cam.get(timeout_s=5.0) is not None
    time.sleep(1.0)  # nobody consumes: the queue keeps the newest 2, drops the rest
    stats = cam.stats()
    assert stats.frames_dropped > 0 and stats.frames_skipped > 0  # the clip plays at 29.97 fps, capped to 20
    delivered = stats.frames_read - stats.frames_skipped
    assert delivered <= 20 * 1.0 + 20 * 1.0  # capped at ~20 fps (generous: decoding started before the sleep)
    first, second = cam.get(0.5), cam.get(0.5)
    assert first is not None and second is not None and second.index == first.index + 1


def test_file_camera_plays_at_its_frame_rate_and_loops_without_reconnecting(tmp_path: Path, started, caplog) -> None:
    import cv2

    path = tmp_path / "ten_frames.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
    for i in range(10):  # half a second at 20 fps
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    caplog.set_level(logging.DEBUG, logger="vigil.camera.file")
    cam = started(camera("file", str(path), queue_size=64))
    time.sleep(1.6)
    stats = cam.stats()
    assert 24 <= stats.frames_read <= 40  # ~32 at 20 fps (read as fast as decoding allows: thousands)
    assert stats.file_loops >= 2 and stats.reconnect_attempts == 0 and stats.connected
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("playing it again" in r.message and r.levelno == logging.INFO for r in caplog.records) == 1
    indices = [frame.index for frame in iter(lambda: cam.get(0.0), None)]
    assert indices == list(range(indices[0], indices[0] + len(indices)))  # no gaps across the loop


# ---- real RTSP -------------------------------------------------------------------------------------------------
@pytest.fixture
def rtsp_server(clip: Path):
    from rtsp_server import RtspTestServer

    server = RtspTestServer(clip)
    server.start()
    yield server
    server.stop()


def _drain(cam: CameraSource) -> int:
    """Empty the queue; the last index seen (-1 if none)."""
    last = -1
    while (frame := cam.get(0.0)) is not None:
        last = frame.index
    return last


@needs_ffmpeg
def test_rtsp_camera_reconnects_within_5_s_after_server_restart(rtsp_server, started) -> None:
    cam = started(camera("rtsp", rtsp_server.url), ReconnectConfig())  # the default policy: 0.5 s .. 4 s
    assert cam.get(timeout_s=10.0) is not None, "no frame from the RTSP server"
    assert all("TCP" in t for t in rtsp_server.transports_requested)  # OPENCV_FFMPEG_CAPTURE_OPTIONS took effect

    rtsp_server.stop()
    assert wait_until(lambda: not cam.stats().connected, timeout_s=5.0), "the drop was not noticed"
    assert wait_until(lambda: cam.stats().reconnect_attempts >= 3, timeout_s=8.0)  # backoff is growing
    last_index = _drain(cam)

    rtsp_server.start()
    restarted = time.monotonic()
    frame = cam.get(timeout_s=10.0)
    reconnect_s = time.monotonic() - restarted
    print(f"\nRTSP reconnect: first frame {reconnect_s:.2f} s after the server came back")
    assert frame is not None and frame.index > last_index
    assert reconnect_s < 5.0
    stats = cam.stats()
    assert stats.connected and stats.reconnects == 1 and stats.reconnect_attempts >= 3


@needs_ffmpeg
def test_rtsp_stalled_stream_is_abandoned_by_the_watchdog(rtsp_server, started) -> None:
    """The server keeps the connection but stops sending: read() blocks (OpenCV's read timeout, 5 s here, would
    take ~15 s); the watchdog gives up after stall_timeout_s and opens a fresh capture."""
    cam = started(camera("stall", rtsp_server.url, read_timeout_s=5.0, stall_timeout_s=1.5))
    assert cam.get(timeout_s=10.0) is not None
    rtsp_server.freeze()
    assert wait_until(lambda: cam.stats().stalls >= 1, timeout_s=5.0), cam.stats()
    assert cam.stats().last_error == "stalled: no good frame for 1.5 s"
    assert cam.stats().state == STALLED
    rtsp_server.freeze(False)
    _drain(cam)
    assert cam.get(timeout_s=8.0) is not None, "frames did not resume after the stall"
    assert cam.stats().connected
    t0 = time.monotonic()
    cam.stop(timeout_s=1.0)
    assert time.monotonic() - t0 < 1.5


@needs_ffmpeg
def test_rtsp_dead_camera_does_not_block_live_one(rtsp_server, started) -> None:
    from rtsp_server import free_tcp_port

    dead = started(camera("dead", f"rtsp://127.0.0.1:{free_tcp_port()}/cam"))
    live = started(camera("live", rtsp_server.url, queue_size=64))
    assert live.get(timeout_s=10.0) is not None
    received, deadline = 0, time.monotonic() + 2.0
    while time.monotonic() < deadline:
        received += live.get(timeout_s=0.2) is not None
    live_stats, dead_stats = live.stats(), dead.stats()
    assert live_stats.connected and received >= 30, (received, live_stats)  # a ~30 fps stream for 2 s
    assert not dead_stats.connected and dead_stats.reconnect_attempts >= 2 and dead_stats.frames_read == 0
    t0 = time.monotonic()
    assert dead.stop(1.0) and live.stop(1.0)
    assert time.monotonic() - t0 < 2.0


# ---- GStreamer's RTSP server: a frozen process, a password ------------------------------------------------------
def test_a_frozen_server_is_a_stall_within_the_stall_timeout_despite_stray_frames(gst_servers, started) -> None:
    """SIGSTOP: OpenCV returns one stale frame after each read timeout (2 s here). Those used to reset the watchdog,
    so the freeze was noticed only when a read failed (about 3 read timeouts); now only good frames count."""
    server = gst_servers()
    cam = started(camera("frozen", server.url, read_timeout_s=2.0, stall_timeout_s=3.0), ReconnectConfig())
    assert cam.get(timeout_s=15.0) is not None
    assert wait_until(lambda: cam.stats().state == UP, timeout_s=5.0)
    _drain(cam)
    server.freeze()
    frozen = time.monotonic()
    assert wait_until(lambda: cam.stats().stalls >= 1, timeout_s=3.0 + 1.0 + 0.5), cam.stats()
    detected_s = time.monotonic() - frozen
    print(f"\nstall detected {detected_s:.2f} s after the freeze (stall timeout 3 s, read timeout 2 s)")
    assert detected_s <= 3.0 + 1.0
    assert cam.stats().state == STALLED
    time.sleep(2.0)
    assert cam.stats().state == STALLED, "the status must stay STALLED while the outage lasts"
    server.thaw()
    thawed = time.monotonic()
    assert wait_until(lambda: cam.stats().state == UP, timeout_s=8.0), cam.stats()
    print(f"frames flowing {time.monotonic() - thawed:.2f} s after the server resumed")


def test_frames_held_back_by_a_short_freeze_are_dropped_as_late(gst_servers, started) -> None:
    """A 3 s freeze (shorter than the stall timeout): the server then sends the 3 s it held back in a burst. Frames
    more than max_frame_age_s (1 s) behind the stream's clock are counted as late and never queued."""
    server = gst_servers()
    cam = started(camera("burst", server.url, read_timeout_s=5.0, stall_timeout_s=10.0, max_frame_age_s=1.0,
                         queue_size=64), ReconnectConfig())  # fmt: skip
    assert cam.get(timeout_s=15.0) is not None
    time.sleep(1.0)
    _drain(cam)
    server.freeze()
    time.sleep(3.0)
    server.thaw()
    assert wait_until(lambda: cam.stats().frames_late >= 30, timeout_s=5.0), cam.stats()
    time.sleep(1.0)
    stats = cam.stats()
    delivered = [frame.mono_ts_s for frame in iter(lambda: cam.get(0.0), None)]
    print(f"\nafter a 3 s freeze: {stats.frames_late} late frames dropped, {len(delivered)} queued")
    assert stats.stalls == 0 and stats.state == UP
    assert 30 <= stats.frames_late <= 3 * 30  # about 2 s of a ~25-30 fps stream (3 s minus the 1 s allowed)


@pytest.mark.parametrize("auth", ["basic", "digest"])
def test_a_wrong_password_is_recognised_and_retried_slowly(gst_servers, started, auth: str) -> None:
    """Cameras lock an account after a few failed logins: one refusal is reported as an authentication failure and
    not retried for auth_initial_backoff_s (300 s by default), instead of every few seconds ("cannot open")."""
    server = gst_servers(user="admin", password="right-one", auth=auth)
    cam = started(camera("locked", server.url_with("admin", "wrong")), ReconnectConfig())
    assert wait_until(lambda: cam.stats().auth_failures >= 1, timeout_s=15.0), cam.stats()
    time.sleep(6.0)  # the old policy retried 9 times in 23 s
    stats = cam.stats()
    assert stats.state == AUTH_FAILED and stats.auth_failures == 1, stats
    assert stats.last_error == "authentication failed (RTSP 401 Unauthorized)"
    assert server.count(401) <= 4  # one DESCRIBE without credentials and one with, by the check and by FFmpeg once
    assert "wrong" not in stats.last_error
    good = started(camera("unlocked", server.url_with("admin", "right-one")), ReconnectConfig())
    assert good.get(timeout_s=15.0) is not None, "the right password must still open the stream"


# ---- decoding options ----------------------------------------------------------------------------------------
def test_decode_params_ask_opencv_for_hardware_decoding_and_threads() -> None:
    import cv2

    from vigil.capture import DecodeOptions, decode_params

    assert decode_params(DecodeOptions()) == []
    assert decode_params(DecodeOptions("vaapi", 1)) == [
        cv2.CAP_PROP_HW_ACCELERATION,
        cv2.VIDEO_ACCELERATION_VAAPI,
        cv2.CAP_PROP_N_THREADS,
        1,
    ]


def test_hardware_decoding_that_fails_falls_back_to_software(clip: Path, caplog) -> None:
    """A named device that is absent (VAAPI on this machine) fails OpenCV's open: the file opens in software."""
    from vigil.capture import DecodeOptions

    caplog.set_level(logging.INFO, logger="vigil.capture")
    capture = open_capture(str(clip), 2.0, 2.0, decode=DecodeOptions("vaapi", 1))
    assert capture is not None and capture.read()[0]
    capture.release()


def test_the_latest_frame_queue_shows_and_takes_frames_by_index() -> None:
    queue = LatestFrameQueue(4)
    for index in range(3):
        queue.put(_frame(index))
    assert queue.waiting() == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert queue.take(1).index == 1  # the older frame 0 is discarded with it
    assert queue.waiting() == [(2, 2.0)] and queue.take(1) is None
