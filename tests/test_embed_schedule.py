"""The re-embedding policy as a pure function: which frames of a track are embedded."""

from __future__ import annotations

import pytest

from vigil.embed_schedule import EmbedSchedule, TrackEmbedState, record_embed, should_embed

SCHEDULE = EmbedSchedule(every_frame_hits=3, interval_frames=5, quality_gain=0.1)

CASES = [
    # (case, state before, frame, quality, expected)
    ("a new track is embedded", TrackEmbedState(), 0, 0.5, True),
    ("still within the first hits", TrackEmbedState(2, 1, 0.5), 2, 0.5, True),
    ("after the first hits, too soon and no better", TrackEmbedState(3, 10, 0.5), 11, 0.55, False),
    ("after the first hits, the interval has passed", TrackEmbedState(3, 10, 0.5), 15, 0.3, True),
    ("one frame short of the interval", TrackEmbedState(3, 10, 0.5), 14, 0.5, False),
    ("quality up by the gain", TrackEmbedState(3, 10, 0.5), 11, 0.6, True),
    ("quality up by less than the gain", TrackEmbedState(3, 10, 0.5), 11, 0.59, False),
]


@pytest.mark.parametrize("case, state, frame, quality, expected", CASES, ids=[c[0] for c in CASES])
def test_should_embed(case, state, frame, quality, expected):
    assert should_embed(SCHEDULE, state, frame, quality) is expected


def test_record_embed_keeps_count_last_frame_and_best_quality():
    state = TrackEmbedState()
    for frame, quality in [(0, 0.4), (1, 0.7), (2, 0.5)]:
        record_embed(state, frame, quality)
    assert (state.requested, state.last_frame_index, state.best_quality) == (3, 2, 0.7)


def test_interval_one_embeds_every_frame_whatever_the_quality():
    schedule, state = EmbedSchedule(every_frame_hits=0, interval_frames=1, quality_gain=1.0), TrackEmbedState()
    picked = []
    for frame in range(6):
        if should_embed(schedule, state, frame, 0.0):
            record_embed(state, frame, 0.0)
            picked.append(frame)
    assert picked == list(range(6))
