"""Drawing for `vigil process --out-video`: face boxes, track ids and the names of alerted people."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vigil.errors import VigilError
from vigil.pipeline import FrameResult
from vigil.types import Alert

COLOUR_TRACK = (200, 200, 200)
COLOUR_ALERT = (0, 0, 255)
COLOUR_VIP = (0, 200, 255)


class AnnotatedVideoWriter:
    """Writes each processed frame with its tracks drawn; a track keeps its alert label once alerted."""

    def __init__(self, path: Path, fps: float, frame_size: tuple[int, int]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps or 25.0, frame_size)
        if not self._writer.isOpened():
            raise VigilError(f"{path}: cannot open for writing an annotated video")
        self._labels: dict[tuple[str, int], tuple[str, tuple[int, int, int]]] = {}

    def write(self, result: FrameResult) -> None:
        image = result.frame.image.copy()
        for event in result.events:
            if isinstance(event, Alert) and event.person_name:  # unknown-face events name no one
                colour = COLOUR_VIP if event.label == "vip" else COLOUR_ALERT
                self._labels[(event.camera, event.track_id)] = (f"{event.person_name} ({event.stage.value})", colour)
        for update in result.updates:
            label, colour = self._labels.get((result.frame.camera, update.track.track_id), ("", COLOUR_TRACK))
            draw_face(image, update.face.box, update.face.landmarks, update.track.track_id, label, colour)
        for predicted in result.predicted:  # a frame not analysed (detect_fps): where the tracker puts each track
            label, colour = self._labels.get((result.frame.camera, predicted.track.track_id), ("", COLOUR_TRACK))
            draw_face(image, predicted.box, np.zeros((0, 2), np.float32), predicted.track.track_id, label, colour, 1)
        self._writer.write(image)

    def close(self) -> None:
        self._writer.release()


def draw_face(
    image: np.ndarray, box: np.ndarray, landmarks: np.ndarray, track_id: int, label: str, colour, thickness: int = 2
) -> None:
    """One face: its box (thin for a predicted one), landmarks, track id and label."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness)
    for x, y in landmarks:
        cv2.circle(image, (int(x), int(y)), 2, (0, 255, 0), -1)
    text = f"#{track_id} {label}".strip()
    cv2.putText(image, text, (x1, max(y1 - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
