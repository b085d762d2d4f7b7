"""Two-source cameras: detect and track on the sub-stream, cut the faces from the main stream of the same moment.

IP cameras encode each picture twice: a main stream (1080p, 4K) and a sub-stream (640x360). A camera configured with
``detect_source`` (the sub-stream) and ``source`` (the main stream) is read by two :class:`vigil.capture.CameraSource`
instances, each with its own threads, reconnects and watchdog. :class:`PairedCameraSource` hands out the sub-stream's
frames with ``Frame.detail`` set to the main-stream frame read nearest to them in time; the pipeline detects and
tracks on the small frame and cuts each face for the landmark refiner, the aligner and the recognizer from the large
one (boxes and points scaled by :func:`scale_face`), so a face 12 px wide on the sub-stream is embedded from its
36 px in 1080p.

Timestamps: each frame carries ``mono_ts_s``, the monotonic time at which its reader decoded it. The two streams
carry their own RTP clocks with unrelated offsets and OpenCV exposes neither the RTCP sender reports that would tie
them to one clock nor the camera's capture time, so the frames are matched by *read time*: the main-stream frame
nearest to ``sub.mono_ts_s + detail_delay_s`` is taken when it is within ``detail_match_tolerance_s`` (0.1 s by
default; at 25 fps the nearest frame is normally within 20 ms). ``detail_delay_s`` corrects a constant lag of the
main stream (bigger frames arrive later); ``detail_stats()`` reports the mean offset of the matches to set it from.
A match is final only when it cannot change (:func:`match_detail`): so ``get()`` holds a sub-stream frame back for
at most the tolerance while its main-stream partner may still arrive.

A sub-stream frame with no main-stream frame within the tolerance (the main stream is down, or lags) goes on with
``detail`` None: its faces are cut from the sub-stream frame itself (recognition at the low resolution, counted as
``unmatched``), so the camera keeps working on one stream. Both streams must show the same field of view (the
same picture at two sizes); a camera that crops its sub-stream cannot be paired.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from vigil.capture import CameraSource, CameraStats, FileSource
from vigil.config import CameraConfig, ReconnectConfig
from vigil.errors import VigilError
from vigil.types import Face, Frame

MatchState = Literal["pending", "matched", "unmatched"]


@dataclass(frozen=True)
class DetailMatch:
    """The outcome of :func:`match_detail`: ``index`` into the candidates when matched, and its time offset."""

    state: MatchState
    index: int | None = None
    offset_s: float = 0.0  # candidate time minus target time


def match_detail(target_s: float, candidate_times_s: Sequence[float], tolerance_s: float, now_s: float) -> DetailMatch:
    """Which main-stream frame goes with a sub-stream frame read at ``target_s`` (plus the configured delay).

    ``candidate_times_s``: the read times of the main-stream frames waiting, oldest first. The nearest one within
    ``tolerance_s`` is the match. The answer is final once a candidate at or after ``target_s`` exists (frames read
    later are further away) or once ``now_s`` is past ``target_s + tolerance_s`` (frames read from now on are outside
    the tolerance); before that it is ``pending``.
    """
    later_exists = bool(candidate_times_s) and candidate_times_s[-1] >= target_s
    final = later_exists or now_s >= target_s + tolerance_s
    if candidate_times_s:
        offsets = np.asarray(candidate_times_s, dtype=np.float64) - target_s
        best = int(np.argmin(np.abs(offsets)))
        if abs(offsets[best]) <= tolerance_s and final:
            return DetailMatch("matched", best, float(offsets[best]))
    return DetailMatch("unmatched" if final else "pending")


def scale_face(face: Face, sx: float, sy: float) -> Face:
    """``face`` in another image's pixels: box and landmarks scaled by (sx, sy)."""
    if sx == 1.0 and sy == 1.0:
        return face
    box = face.box * np.array([sx, sy, sx, sy], dtype=np.float32)
    return Face(
        box.astype(np.float32), face.score, (face.landmarks * np.array([sx, sy], np.float32)).astype(np.float32)
    )


def detail_scale(frame: Frame) -> tuple[float, float]:
    """(x, y) factors from the frame's pixels to its ``face_image``'s pixels ((1, 1) without a detail frame)."""
    if frame.detail is None:
        return 1.0, 1.0
    height, width = frame.image.shape[:2]
    detail_height, detail_width = frame.detail.shape[:2]
    return detail_width / width, detail_height / height


def face_in_detail(frame: Frame, face: Face) -> Face:
    """A face detected on ``frame.image`` in the pixels of ``frame.face_image``."""
    return scale_face(face, *detail_scale(frame))


@dataclass(frozen=True)
class DetailStats:
    """How a two-source camera's frames were paired (``PairedCameraSource.detail_stats()``)."""

    matched: int = 0  # sub-stream frames handed out with their main-stream frame
    unmatched: int = 0  # handed out without one (main stream down or too far off in time)
    mean_offset_ms: float = 0.0  # mean (main - sub - detail_delay_s) read-time offset of the matches
    main_connected: bool = False
    main_frames_read: int = 0

    def to_json(self) -> dict:
        return {
            "matched": self.matched,
            "unmatched": self.unmatched,
            "mean_offset_ms": round(self.mean_offset_ms, 1),
            "main_connected": self.main_connected,
            "main_frames_read": self.main_frames_read,
        }


def detect_stream(camera: CameraConfig) -> CameraConfig:
    """The settings the sub-stream's reader runs with: the camera's own, on ``detect_source``."""
    return camera.model_copy(update={"source": camera.detect_source, "detect_source": None})


def main_stream(camera: CameraConfig) -> CameraConfig:
    """The main stream's reader: every frame (no ``fps_cap``), ``detail_queue_size`` of them kept for matching."""
    return camera.model_copy(update={"detect_source": None, "fps_cap": None, "queue_size": camera.detail_queue_size})


class PairedCameraSource:
    """A camera with a detection sub-stream and a main stream for faces; the same interface as ``CameraSource``.

    ``get()`` is called from one consumer thread (the service loop's, or the detection stage's).
    """

    def __init__(
        self,
        camera: CameraConfig,
        reconnect: ReconnectConfig | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if camera.detect_source is None:
            raise ValueError(f"camera {camera.name}: no detect_source")
        self.camera = camera
        self.detect = CameraSource(detect_stream(camera), reconnect, seed)
        self.main = CameraSource(main_stream(camera), reconnect, None if seed is None else seed + 1)
        self._clock = clock
        self._pending: Frame | None = None
        self._lock = threading.Lock()
        self._matched = self._unmatched = 0
        self._offset_sum_s = 0.0

    @property
    def name(self) -> str:
        return self.camera.name

    def start(self) -> None:
        self.main.start()
        self.detect.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout_s
        detect_done = self.detect.stop(timeout_s)
        return self.main.stop(max(deadline - time.monotonic(), 0.0)) and detect_done

    def get(self, timeout_s: float) -> Frame | None:
        """The next sub-stream frame with its main-stream frame, once their match is final (held back at most
        ``detail_match_tolerance_s``); None when none is ready within ``timeout_s``."""
        frame = self._pending or self.detect.get(timeout_s)
        if frame is None:
            return None
        target_s = frame.mono_ts_s + self.camera.detail_delay_s
        waiting = self.main.waiting_frames()
        match = match_detail(target_s, [ts for _, ts in waiting], self.camera.detail_match_tolerance_s, self._clock())
        if match.state == "pending":
            self._pending = frame
            return None
        self._pending = None
        detail = self.main.take_frame(waiting[match.index][0]) if match.index is not None else None
        with self._lock:
            if detail is None:
                self._unmatched += 1
                return frame
            self._matched += 1
            self._offset_sum_s += match.offset_s
        return replace(frame, detail=detail.image)

    def stats(self) -> CameraStats:
        """The sub-stream's counters (the frames the pipeline gets); a main stream that is down shows in
        ``last_error`` (the camera still works, on the sub-stream alone)."""
        stats, main = self.detect.stats(), self.main.stats()
        if stats.connected and not main.connected and main.last_error:
            return replace(stats, last_error=f"main stream: {main.last_error}")
        return stats

    def detail_stats(self) -> DetailStats:
        main = self.main.stats()
        with self._lock:
            mean_ms = 1000.0 * self._offset_sum_s / self._matched if self._matched else 0.0
            return DetailStats(self._matched, self._unmatched, mean_ms, main.connected, main.frames_read)


def make_source(
    camera: CameraConfig, reconnect: ReconnectConfig | None = None, seed: int | None = None
) -> CameraSource | PairedCameraSource:
    """The frame source for one configured camera: paired when it has a ``detect_source``."""
    if camera.detect_source is not None:
        return PairedCameraSource(camera, reconnect, seed)
    return CameraSource(camera, reconnect, seed)


def paired_file_frames(detect: FileSource, main: FileSource, stop: threading.Event | None = None) -> Iterator[Frame]:
    """A recorded two-stream camera (``vigil process MAIN --detect-video SUB``): the sub-stream file's frames, each
    with the main file's frame of the same number as ``detail`` (files carry their own clock, so frames pair by
    number; both must have the same frame rate). The frames are named after the main file's camera."""
    if detect.fps and main.fps and abs(detect.fps - main.fps) > 0.01:
        raise VigilError(f"{detect.path}: {detect.fps:g} fps, but {main.path} has {main.fps:g}: cannot pair frames")
    for sub, large in zip(detect.frames(stop), main.frames(stop)):
        yield replace(sub, camera=main.camera, detail=large.image)
