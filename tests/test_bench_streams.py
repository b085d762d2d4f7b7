"""`vigil bench streams`' policy: the capacity search, the real-time verdict, latency percentiles."""

from __future__ import annotations

import pytest

from vigil.bench.streams import holds_real_time, latency_summary, next_candidate, wanted_frames

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
