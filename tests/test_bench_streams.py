"""`vigil bench streams`' policy: the capacity search, the real-time verdict, latency percentiles, each camera's
starting point in the clip."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from vigil.bench.streams import (
    camera_phase_frames,
    clip_frames,
    holds_real_time,
    latency_summary,
    next_candidate,
    phase_shifted_clip,
    wanted_frames,
)

# (verdicts so far, max cameras, next count to try)
SEARCH_CASES = [
    ({}, 32, 1),
    ({1: True}, 32, 2),
    ({1: True, 2: True, 4: True}, 32, 8),
    ({1: True, 2: True, 4: True, 8: False}, 32, 6),
    ({1: True, 2: True, 4: True, 8: False, 6: True}, 32, 7),
    ({1: True, 2: True, 4: True, 8: False, 6: True, 7: False}, 32, None),
    ({1: False}, 32, None),
    ({1: True, 2: True, 4: True}, 5, 5),
    ({1: True, 2: True, 4: True, 5: True}, 5, None),
]


@pytest.mark.parametrize("verdicts, max_cameras, expected", SEARCH_CASES)
def test_capacity_search_doubles_then_bisects(verdicts, max_cameras, expected):
    assert next_candidate(verdicts, max_cameras) == expected


@pytest.mark.parametrize(
    "dropped, read, p95_s, expected",
    [(0, 500, 0.2, True), (4, 500, 0.2, True), (5, 500, 0.2, False), (0, 500, 0.3, False), (0, 0, 0.1, False),
     (0, 500, None, False)],
)  # fmt: skip
def test_real_time_needs_few_missed_frames_and_a_p95_within_the_bound(dropped, read, p95_s, expected):
    assert holds_real_time(dropped, read, p95_s, max_drop_pct=1.0, p95_bound_s=0.25) is expected


@pytest.mark.parametrize(
    "read, fps, detect_fps, expected",
    [(500, 25.0, None, 500), (500, 25.0, 5.0, 100), (500, 25.0, 25.0, 500), (500, 25.0, 50.0, 500), (0, 25.0, 5.0, 0),
     (499, 25.0, 10.0, 200)],
)  # fmt: skip
def test_detect_fps_asks_for_its_share_of_the_frames_read(read, fps, detect_fps, expected):
    assert wanted_frames(read, fps, detect_fps) == expected


def test_latency_summary_in_milliseconds():
    summary = latency_summary([i / 1000 for i in range(1, 101)])
    assert summary["count"] == 100 and summary["p50_ms"] == pytest.approx(50.5) and summary["max_ms"] == 100.0
    assert latency_summary([])["p95_ms"] is None


@pytest.mark.parametrize(("cameras", "frames"), [(1, 252), (2, 252), (4, 252), (8, 252), (8, 300), (3, 25)])
def test_cameras_start_at_distinct_points_of_the_clip_whatever_their_number(cameras, frames):
    phases = [camera_phase_frames(i, frames) for i in range(cameras)]
    assert phases[0] == 0 and all(0 <= p < frames for p in phases)
    assert len(set(phases)) == cameras  # no two cameras in step
    gaps = sorted(phases) + [frames]
    assert min(b - a for a, b in zip(gaps, gaps[1:])) >= frames // (3 * cameras)  # spread round the loop
    assert phases == [camera_phase_frames(i, frames) for i in range(cameras + 3)][:cameras]  # fixed per camera


def _grey_clip(path, levels: list[int]) -> None:
    """A tiny clip whose frame k is a flat grey of ``levels[k]`` (intra-only, so every level survives encoding)."""
    raw = b"".join(bytes([level]) * (32 * 32 * 3) for level in levels)
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
               "32x32", "-r", "25", "-i", "-", "-c:v", "libx264", "-qp", "0", "-g", "1", "-pix_fmt", "yuv444p",
               str(path)]  # fmt: skip
    subprocess.run(command, input=raw, check=True, timeout=60, capture_output=True)


def _levels(path) -> list[int]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    levels = []
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                return levels
            levels.append(int(round(float(image.mean()))))
    finally:
        capture.release()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")
@pytest.mark.parametrize("shift", [0, 1, 4, 9])
def test_a_shifted_clip_is_the_same_loop_started_later(tmp_path, shift):
    levels = [20 * k + 10 for k in range(10)]
    clip = tmp_path / "grey.mp4"
    _grey_clip(clip, levels)
    shifted = phase_shifted_clip(clip, shift, 25.0, tmp_path)
    assert (shifted == clip) == (shift == 0)
    got = _levels(shifted)
    assert clip_frames(shifted) == len(levels) == len(got)
    expected = levels[shift:] + levels[:shift]
    assert all(abs(a - b) <= 3 for a, b in zip(got, expected)), (got, expected)
