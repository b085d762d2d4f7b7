"""Value objects that cross stage boundaries.

Every stage takes and returns these; no stage passes loose dicts. In the data's order: ``Frame`` (capture) ->
``Face`` (detect) -> ``TrackUpdate`` (track; ``PredictedBox`` on a frame not analysed) -> ``AlignedFace`` (align)
-> ``Embedding`` (embed) -> ``Match`` and ``Decision`` (rules) -> ``Alert`` / ``UnknownEvent`` (the events the
sinks take). Images are numpy arrays in OpenCV's layout (H x W x 3, uint8, BGR) unless a field says otherwise.
Coordinates are pixels of the original frame. Landmark order (the "vigil 5-point order", also the detector's
keypoint order):

    0 eye on the image's left     (the subject's right eye)
    1 eye on the image's right    (the subject's left eye)
    2 nose tip
    3 mouth corner on the image's left
    4 mouth corner on the image's right

This is the InsightFace / SCRFD order. A horizontal flip swaps 0<->1 and 3<->4 (``LANDMARK_FLIP_INDEX``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

LANDMARK_NAMES = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
LANDMARK_FLIP_INDEX = (1, 0, 2, 4, 3)


@dataclass(frozen=True)
class Frame:
    """One decoded frame from a camera or a file."""

    camera: str
    index: int  # 0-based frame number since the source was opened (files: from the start)
    mono_ts_s: float  # time.monotonic() when the frame was read
    video_ts_s: float  # seconds from the start of the source (files: frame time; cameras: since open)
    image: np.ndarray  # H x W x 3 uint8 BGR
    # a two-source camera's main-stream frame of the same moment (vigil/substream.py): detection runs on ``image``,
    # faces are cut from this one (boxes scaled by the two frames' size ratio); None: faces come from ``image``
    detail: np.ndarray | None = None

    @property
    def face_image(self) -> np.ndarray:
        """The image faces are cut from: the main-stream frame when there is one, else the frame itself."""
        return self.image if self.detail is None else self.detail


@dataclass(frozen=True)
class Face:
    """A detected face in frame pixels."""

    box: np.ndarray  # (4,) float32 x1, y1, x2, y2
    score: float  # detector confidence in [0, 1]
    landmarks: np.ndarray  # (5, 2) float32 in the vigil 5-point order

    @property
    def width_px(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height_px(self) -> float:
        return float(self.box[3] - self.box[1])


@dataclass(frozen=True)
class AlignedFace:
    """A face warped to the recognizer's template."""

    face: Face
    chip: np.ndarray  # S x S x 3 uint8 BGR, S = the recognizer's input size
    quality: float  # in [0, 1]: size, detector score and frontality combined


@dataclass(frozen=True)
class Embedding:
    """An L2-normalised face embedding with the face it came from."""

    aligned: AlignedFace
    vector: np.ndarray  # (D,) float32, unit norm


@dataclass(frozen=True)
class Observation:
    """One detected face in one frame; ``embedding`` is None when the face was too small to recognise."""

    face: Face
    embedding: Embedding | None


class ListKind(str, Enum):
    DENY = "deny"
    VIP = "vip"
    ALLOW = "allow"


@dataclass(frozen=True)
class Person:
    """A watchlist entry with its enrolled prototype."""

    id: str
    name: str
    list: ListKind
    threshold: float | None  # overrides the global match threshold when set
    prototype: np.ndarray  # (D,) float32 unit norm: mean of the enrolled photos' embeddings
    photo_embeddings: np.ndarray  # (K, D) float32, one row per enrolled photo


@dataclass(frozen=True)
class Match:
    """Best gallery match for one embedding (or one track's aggregate)."""

    person_id: str | None  # None when the gallery is empty
    score: float  # cosine similarity to the best person
    margin: float  # best score minus the second-best person's score (score itself when only one)


@dataclass(frozen=True)
class FaceCrop:
    """A face cut from one frame, with a margin around its box: the image an event's snapshot is saved from.

    A track keeps its best one (:attr:`Track.best_face`, the highest ``quality`` so far), so an event stores the
    clearest face its track has seen, and records the frame it came from."""

    frame_index: int
    video_ts_s: float
    quality: float  # the embedded face's quality (AlignedFace.quality) in [0, 1]
    box: np.ndarray  # (4,) float32, the face box in frame pixels
    image: np.ndarray  # the crop (H x W x 3 uint8 BGR); its own copy, not a view of the frame


@dataclass
class Track:
    """A face track on one camera with its aggregated embedding.

    Mutable, and mutated only by its owner, :class:`vigil.track.FaceTracker` (box, last frame, the embedding sum,
    held-out embeddings); every other stage only reads it.
    """

    camera: str
    track_id: int
    box: np.ndarray  # (4,) float32, last box
    first_frame_index: int
    last_frame_index: int
    last_mono_ts_s: float
    hits: int = 0  # frames with an embedding
    embedding_sum: np.ndarray | None = None  # quality-weighted sum of unit embeddings
    weight_sum: float = 0.0
    best_face: FaceCrop | None = None  # the highest-quality face folded in so far (when crops are taken)
    match_history: list[str | None] = field(default_factory=list)  # best person per hit
    # consecutive embeddings that did not match this track, each with its face crop (None when none was taken)
    held_out: list[tuple[Embedding, FaceCrop | None]] = field(default_factory=list)

    @property
    def embedding(self) -> np.ndarray | None:
        if self.embedding_sum is None:
            return None
        norm = float(np.linalg.norm(self.embedding_sum))
        return self.embedding_sum / norm if norm > 0 else None


@dataclass(frozen=True)
class TrackUpdate:
    """A track matched to a face in this frame, with the face's embedding when it was embedded."""

    track: Track
    face: Face
    embedding: Embedding | None = None


@dataclass(frozen=True)
class PredictedBox:
    """A confirmed track's box on a frame its camera's ``detect_fps`` did not analyse: where the tracker's motion
    model (ByteTrack's Kalman filter) puts the track on that frame. For drawing only: no face was detected there, so
    nothing is embedded or decided on it."""

    track: Track
    box: np.ndarray  # (4,) float32 x1, y1, x2, y2 in frame pixels


class AlertStage(str, Enum):
    PROVISIONAL = "provisional"
    CONFIRMED = "confirmed"


@dataclass(frozen=True)
class Alert:
    """One alert event as it goes to the sinks (see ``to_json``)."""

    id: str  # unique, stable across retries (uuid4 hex)
    stage: AlertStage
    person_id: str
    person_name: str
    list: ListKind
    camera: str
    track_id: int
    score: float
    margin: float
    ts: str  # ISO-8601 UTC wall-clock time of the decision
    video_ts_s: float
    frame_index: int
    bbox: tuple[float, float, float, float]
    snapshot: str | None  # path of the saved face crop: the best face of the track up to this alert
    label: str = ""  # "vip" for vip entries, "watchlist" for deny entries
    snapshot_frame_index: int | None = None  # the frame the snapshot was cut from (None: no snapshot)

    def to_json(self) -> dict:
        return {
            "type": "alert",
            "id": self.id,
            "stage": self.stage.value,
            "person_id": self.person_id,
            "person_name": self.person_name,
            "list": self.list.value,
            "label": self.label,
            "camera": self.camera,
            "track_id": self.track_id,
            "score": round(float(self.score), 4),
            "margin": round(float(self.margin), 4),
            "ts": self.ts,
            "video_ts_s": round(float(self.video_ts_s), 3),
            "frame_index": self.frame_index,
            "bbox": [round(float(v), 1) for v in self.bbox],
            "snapshot": self.snapshot,
            "snapshot_frame_index": self.snapshot_frame_index,
        }


class DecisionKind(str, Enum):
    ALERT = "alert"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Decision:
    """What the rules decided for one track on one frame; the pipeline turns it into an event with id, ts, snapshot."""

    kind: DecisionKind
    camera: str
    track_id: int
    stage: AlertStage | None  # None for unknown-face events
    person: Person | None  # None for unknown-face events
    label: str  # "watchlist" | "vip" | "unknown"
    score: float  # cosine: the person's latest qualifying score (unknown: this frame's best score)
    margin: float


@dataclass(frozen=True)
class UnknownEvent:
    """A face tracked long enough that matched nobody on the watchlist (``rules.unknown_events``)."""

    id: str
    camera: str
    track_id: int
    score: float  # cosine to the closest watchlist person on the deciding frame (0 with an empty watchlist)
    ts: str  # ISO-8601 UTC
    video_ts_s: float
    frame_index: int
    bbox: tuple[float, float, float, float]
    snapshot: str | None  # path of the saved face crop: the best face of the track up to this event
    snapshot_frame_index: int | None = None  # the frame the snapshot was cut from (None: no snapshot)

    def to_json(self) -> dict:
        return {
            "type": "unknown",
            "id": self.id,
            "camera": self.camera,
            "track_id": self.track_id,
            "score": round(float(self.score), 4),
            "ts": self.ts,
            "video_ts_s": round(float(self.video_ts_s), 3),
            "frame_index": self.frame_index,
            "bbox": [round(float(v), 1) for v in self.bbox],
            "snapshot": self.snapshot,
            "snapshot_frame_index": self.snapshot_frame_index,
        }


Event = Alert | UnknownEvent  # what the sinks take: both carry a unique ``id`` and ``to_json()``
