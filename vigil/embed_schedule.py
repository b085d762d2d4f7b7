"""When does a tracked face get (re-)embedded? A small pure policy, so the watch pipeline does not embed every face
of every frame.

A new track is embedded on every frame until it has ``every_frame_hits`` embeddings: that is when the rules engine
votes, and a watchlisted person must be alerted within a second. After that the track's aggregate embedding changes
little from one frame to the next, so the face is embedded again only when it looks clearly better than any frame
so far (quality up by ``quality_gain``: the person came closer or turned to the camera) or when ``interval_frames``
frames have passed since its last embedding (a periodic refresh, which also lets a tracker identity switch show up
in the votes). ``interval_frames = 1`` embeds every face of every frame.

Counts are in frames, not seconds, so the policy is the same for a file processed faster than real time and a live
camera; at 30 frames/s the defaults (30, 10, 0.1) mean one second of every frame, then three embeddings a second.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmbedSchedule:
    every_frame_hits: int = 30
    interval_frames: int = 10
    quality_gain: float = 0.1


@dataclass
class TrackEmbedState:
    """What the schedule remembers about one track: embeddings asked for, the last frame, the best quality."""

    requested: int = 0
    last_frame_index: int | None = None
    best_quality: float = -1.0


def should_embed(schedule: EmbedSchedule, state: TrackEmbedState, frame_index: int, quality: float) -> bool:
    """Whether the track's face in ``frame_index`` (with face ``quality`` in [0, 1]) should be embedded."""
    if state.requested < schedule.every_frame_hits or state.last_frame_index is None:
        return True
    if frame_index - state.last_frame_index >= schedule.interval_frames:
        return True
    return quality >= state.best_quality + schedule.quality_gain


def record_embed(state: TrackEmbedState, frame_index: int, quality: float) -> None:
    """Note that the track's face in ``frame_index`` is being embedded."""
    state.requested += 1
    state.last_frame_index = frame_index
    state.best_quality = max(state.best_quality, quality)
