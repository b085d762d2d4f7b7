"""Strict configuration: pydantic models with units in names, validated once at load.

``load_config(path)`` returns a :class:`VigilConfig` or raises :class:`vigil.errors.ConfigError` with one line naming
the file, the key path and what was expected. Unknown keys are rejected everywhere (``extra="forbid"``).
Relative paths in the file are resolved against the config file's folder.
"""

from __future__ import annotations

import os
import re
from datetime import time as clock_time
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from vigil.errors import ConfigError

CAMERA_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp")
_URL_LIKE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):/")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class StrictModel(BaseModel):
    """Unknown keys rejected, and no true/false where a number or text is expected (pydantic would read ``true``
    as 1: a ``conf_threshold: true`` or ``source: true`` is a mistake, not a value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if (
            isinstance(value, bool)
            and info.field_name
            and not _accepts_bool(cls.model_fields[info.field_name].annotation)
        ):
            raise ValueError(f"expected a number or text, got {str(value).lower()}")
        return value


def _accepts_bool(annotation: Any) -> bool:
    """Whether a field's type includes ``bool`` itself (``bool``, ``bool | None``, ``Any``)."""
    if annotation is bool or annotation is Any:
        return True
    return any(_accepts_bool(arg) for arg in get_args(annotation) if arg is not type(None))


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveSeconds = Annotated[float, Field(gt=0.0, le=3600.0)]
# shared by the global settings and each camera's overrides, so both are validated alike
MinFacePx = Annotated[int, Field(ge=4, le=1024, description="faces narrower than this are not recognised")]


class ZoneConfig(StrictModel):
    """A polygon in normalised frame coordinates (x, y in [0, 1]); alerts fire only for faces inside a zone."""

    name: str = Field(min_length=1)
    points_norm: list[tuple[Fraction, Fraction]] = Field(min_length=3)


class ScheduleWindow(StrictModel):
    """Local-time window when a camera may alert. ``end`` before ``start`` spans midnight."""

    days: list[Weekday] = Field(default=list(WEEKDAYS), min_length=1)
    start: clock_time = clock_time(0, 0)
    end: clock_time = clock_time(23, 59, 59)


class CameraOverrides(StrictModel):
    """One camera's own recognition settings (a doorway sees 80 px faces, a car park 20 px); each key left unset
    takes the global one. Effective values: :mod:`vigil.camera_settings`, printed by ``vigil doctor``."""

    match_threshold: Fraction | None = Field(default=None, description="rules.match_threshold for this camera")
    margin: Fraction | None = Field(default=None, description="rules.margin for this camera")
    min_face_px: MinFacePx | None = Field(default=None, description="detector.min_face_px for this camera")
    unknown_events: bool | None = Field(default=None, description="rules.unknown_events for this camera")


class CameraConfig(StrictModel):
    name: str = Field(pattern=CAMERA_NAME_PATTERN, description="unique; used in logs, events and file names")
    source: str | int = Field(description="rtsp://..., http(s)://..., a video file path, or a device index")
    fps_cap: float | None = Field(default=None, gt=0.0, le=240.0)
    open_timeout_s: PositiveSeconds = 5.0
    read_timeout_s: PositiveSeconds = 5.0
    stall_timeout_s: PositiveSeconds = Field(default=10.0, description="no good frame for this long: reconnect")
    max_frame_age_s: PositiveSeconds | None = Field(
        default=2.0,
        description="network cameras: a frame that arrives later than this behind the stream's own clock (a burst "
        "after a freeze) is dropped and counted (frames_late), and does not count as a good frame; null keeps all",
    )
    queue_size: int = Field(default=2, ge=1, le=64)
    zones: list[ZoneConfig] = Field(default_factory=list)
    schedule: list[ScheduleWindow] = Field(default_factory=list, description="empty: always active")
    # Two sources, as IP cameras provide (vigil/substream.py): detect and track on the small `detect_source`,
    # cut the faces for the landmark refiner and the recognizer from `source` (the main stream) at the same moment.
    detect_source: str | int | None = Field(
        default=None, description="the camera's low-resolution sub-stream: detection and tracking run on it"
    )
    detail_match_tolerance_s: float = Field(
        default=0.1,
        gt=0.0,
        le=2.0,
        description="a sub-stream frame takes the main-stream frame read nearest to it in time, if within this",
    )
    detail_delay_s: float = Field(
        default=0.0, ge=-2.0, le=2.0, description="how much later the main stream's frames arrive than the sub-stream's"
    )
    detail_queue_size: int = Field(default=8, ge=2, le=64, description="main-stream frames kept for matching")
    detect_fps: float | None = Field(
        default=None, gt=0.0, le=240.0, description="detect and recognise on at most this many frames/s (None: all)"
    )
    hw_acceleration: Literal["off", "any", "vaapi", "mfx", "d3d11", "drm"] = Field(
        default="off",
        description="ask OpenCV's FFmpeg backend for hardware decoding; falls back to software when it fails",
    )
    decode_threads: int | None = Field(default=None, ge=1, le=64, description="FFmpeg decoder threads (None: OpenCV's)")
    overrides: CameraOverrides = CameraOverrides()

    @field_validator("hw_acceleration", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML reads a bare ``off`` as false (and ``on`` as true)."""
        return {False: "off", True: "any"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("source", "detect_source")
    @classmethod
    def _source_not_empty(cls, value: str | int | None) -> str | int | None:
        if value is None:
            return None
        if isinstance(value, int):
            if not 0 <= value <= 255:
                raise ValueError(f"device index must be 0-255, got {value}")
            return value
        if not value.strip():
            raise ValueError("must not be empty")
        problem = source_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @property
    def is_network(self) -> bool:
        return isinstance(self.source, str) and bool(_URL_LIKE.match(self.source))

    @property
    def is_file(self) -> bool:
        """A recorded video file (not a URL, not a /dev/ device): played at its own frame rate and looped
        (vigil.capture.FilePacer)."""
        return is_file_source(self.source)


def is_file_source(source: str | int | None) -> bool:
    """Whether a camera source (``source`` or ``detect_source``) names a video file: not a URL, not a /dev/ device,
    not a device index."""
    return isinstance(source, str) and not _URL_LIKE.match(source) and not source.startswith("/dev/")


def source_problem(source: str) -> str | None:
    """Why a camera source string can never work (None when it may): a URL with an unknown scheme (``rtps://``),
    no host, or a port outside 1-65535. A file path is checked for existence after paths are resolved
    (:func:`check_camera_files`)."""
    match = _URL_LIKE.match(source)
    if match is None:
        return None
    scheme = match.group("scheme").lower()
    if scheme not in NETWORK_SCHEMES:
        return f"unknown URL scheme {scheme!r} (expected {', '.join(NETWORK_SCHEMES)})"
    if not source[match.end() :].startswith("/"):
        return f"malformed URL: expected {scheme}://host/..."
    try:
        parts = urlsplit(source)
    except ValueError as exc:
        return f"malformed URL ({exc})"
    port = re.fullmatch(r"(?:.*@)?(?:\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[^:]*))?", parts.netloc)
    port_text = port.group("port") if port else None
    if port_text and not port_text.isdigit():
        return f"port {port_text!r} is not a number"
    if port_text and not 1 <= int(port_text) <= 65535:
        return f"port {port_text} is out of range (1-65535)"
    if not parts.hostname:
        return "the URL has no host"
    return None


class ReconnectConfig(StrictModel):
    initial_backoff_s: PositiveSeconds = 0.5
    max_backoff_s: PositiveSeconds = 4.0
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    jitter_fraction: Fraction = 0.1
    # A camera that refuses the password (RTSP 401/403) is retried slowly: cameras lock an account after a few
    # failed logins (commonly 5, then 30 minutes), so the default makes about 5 attempts in the first 2.5 hours.
    auth_initial_backoff_s: PositiveSeconds = 300.0
    auth_max_backoff_s: Annotated[float, Field(gt=0.0, le=86_400.0)] = 3600.0

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> ReconnectConfig:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be >= initial_backoff_s")
        if self.auth_max_backoff_s < self.auth_initial_backoff_s:
            raise ValueError("auth_max_backoff_s must be >= auth_initial_backoff_s")
        return self


class TilingConfig(StrictModel):
    """Detect on the whole frame plus overlapping square tiles (vigil/tiling.py): for cameras whose frames are much
    larger than the detector's input, where letterboxing would shrink small faces below what it finds. Costs one
    more forward pass per tile (1920x1080 with 640 px tiles overlapping by 128: 8 tiles)."""

    tile_px: int = Field(ge=64, le=4096, description="side of each square tile, in frame pixels")
    overlap_px: int = Field(
        default=128,
        ge=0,
        le=2048,
        description="overlap of neighbouring tiles; faces up to this size lie whole in a tile",
    )

    @model_validator(mode="after")
    def _overlap_below_half_tile(self) -> TilingConfig:
        from vigil.tiling import tiling_problem

        problem = tiling_problem(self.tile_px, self.overlap_px)
        if problem:
            raise ValueError(problem)
        return self


class DetectorConfig(StrictModel):
    model: Path | None = Field(
        default=None, description="YOLOv5-face ONNX or Ultralytics pose face model; default: ours from models/"
    )
    imgsz: int | None = Field(
        default=None, ge=128, le=1920, multiple_of=32, description="None: the model's input size from the manifest"
    )
    conf_threshold: Fraction = 0.35
    nms_iou: Fraction = 0.5
    min_face_px: MinFacePx = 20
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?|\d+)$")
    batch_size: int = Field(default=8, ge=1, le=256)
    tiling: TilingConfig | None = Field(default=None, description="None: detect on the whole frame only")
    # Landmark refinement (vigil/refine.py): each face about to be embedded gets its five points from our small
    # crop model (models/landmarks/) instead of the detector's head; the box and score stay the detector's.
    refine_landmarks: bool = True
    landmark_model: Path | None = Field(default=None, description="landmark refiner ONNX; default: ours from models/")


class RecognizerConfig(StrictModel):
    model: Path | None = Field(default=None, description="ONNX recognizer; default: ours from models/")
    providers: list[Literal["CUDAExecutionProvider", "CPUExecutionProvider"]] = Field(
        default=["CUDAExecutionProvider", "CPUExecutionProvider"], min_length=1
    )
    batch_size: int = Field(default=64, ge=1, le=1024)
    # Embed each chip and its mirror image and average them (vigil/embed.py), for twice the recognizer's work per
    # embedded face; what it buys is measured in the recognizer cards (single chip vs flip-averaged rows, e.g.
    # models/recognizer/dlib-resnet-v1-scene.md). The rules' calibrated threshold follows the mode
    # (models/manifest.yaml: match_threshold_flip_average).
    flip_average: bool = True
    # When a tracked face is (re-)embedded (vigil/embed_schedule.py): every frame for a track's first
    # `embed_every_frame_hits` embeddings, then every `reembed_interval_frames` frames or when the face's quality
    # beats the track's best by `reembed_quality_gain`. reembed_interval_frames: 1 embeds every face of every frame.
    embed_every_frame_hits: int = Field(default=30, ge=0, le=100_000)
    reembed_interval_frames: int = Field(default=10, ge=1, le=100_000)
    reembed_quality_gain: Fraction = 0.1
    # The recognition cascade (vigil/cascade.py), for an ensemble: its first, fast member scores each face against
    # the watchlist first; the whole ensemble runs only for faces that score at least `cascade_reject_cosine` on it
    # (the rest are clearly nobody on the list). Person votes always come from the whole ensemble.
    cascade: bool = True
    cascade_reject_cosine: Annotated[float, Field(ge=-1.0, le=1.0)] | None = Field(
        default=None, description="the fast member's cosine below which a face is nobody; None: the manifest's"
    )


class TrackerConfig(StrictModel):
    """ByteTrack settings (Ultralytics' implementation) plus how long a lost track is remembered."""

    track_high_thresh: Fraction = 0.5
    track_low_thresh: Fraction = 0.1
    new_track_thresh: Fraction = 0.5
    match_thresh: Fraction = 0.8
    track_buffer_frames: int = Field(default=30, ge=1, le=10_000)
    max_track_age_s: PositiveSeconds = 5.0
    identity_switch_hits: int = Field(
        default=3,
        ge=0,
        le=100,
        description="split a track after this many consecutive embeddings that do not match its own face (0: never)",
    )
    identity_min_cosine: Fraction | None = Field(
        default=None,
        description="cosine to the track's own face below which an embedding does not match it; None: "
        "the rules' match threshold (the recognizer's calibrated one), so the scale follows the recognizer",
    )


class RulesConfig(StrictModel):
    match_threshold: Fraction | None = Field(
        default=None, description="cosine; None: the recognizer's calibrated match_threshold from models/manifest.yaml"
    )
    margin: Fraction = 0.05
    min_hits: int = Field(default=2, ge=1, le=1000, description="qualifying frames for a provisional alert")
    confirm_hits: int = Field(default=5, ge=1, le=10_000, description="qualifying frames for a confirmed alert")
    confirm_vote_fraction: Fraction = Field(default=0.6, description="share of the track's votes for the person")
    vote_window_hits: int | None = Field(
        default=None, ge=1, le=100_000, description="count the vote share over the last N hits only (None: whole track)"
    )
    cooldown_s: float = Field(default=60.0, ge=0.0, le=86_400.0)
    min_quality: Fraction = 0.0
    unknown_events: bool = False

    @model_validator(mode="after")
    def _confirm_after_provisional(self) -> RulesConfig:
        if self.confirm_hits < self.min_hits:
            raise ValueError("confirm_hits must be >= min_hits")
        return self


class JsonlSinkConfig(StrictModel):
    path: Path


HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"  # an HTTP token (RFC 9110)
RESERVED_WEBHOOK_HEADERS = {"content-type", "content-length", "host", "idempotency-key", "x-vigil-signature"}


class WebhookSinkConfig(StrictModel):
    """Where alerts are POSTed; see :mod:`vigil.alerts.webhook` for the request (signature, idempotency key)."""

    url: str = Field(pattern=r"^https?://", description="user:password@ in it is sent as HTTP Basic auth")
    timeout_s: PositiveSeconds = 5.0
    max_attempts: int = Field(default=20, ge=1, le=10_000)
    initial_backoff_s: PositiveSeconds = 1.0
    max_backoff_s: PositiveSeconds = 300.0
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers, e.g. Authorization")
    secret: str | None = Field(default=None, min_length=16, description="HMAC-SHA256 key: X-Vigil-Signature header")
    secret_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="environment variable holding the secret"
    )
    ca_file: Path | None = Field(default=None, description="PEM CA bundle to verify an https receiver (private CA)")

    @field_validator("url")
    @classmethod
    def _url_has_a_host(cls, value: str) -> str:
        problem = source_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("headers")
    @classmethod
    def _headers_are_valid(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.match(HEADER_NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in RESERVED_WEBHOOK_HEADERS:
                raise ValueError(f"{name} is set by vigil and cannot be configured")
            if any(ch in text for ch in "\r\n\0"):
                raise ValueError(f"the value of {name} contains a line break")
        return value

    @model_validator(mode="after")
    def _one_secret_source(self) -> WebhookSinkConfig:
        if self.secret is not None and self.secret_env is not None:
            raise ValueError("give either secret or secret_env, not both")
        if "@" in (urlsplit(self.url).netloc) and any(k.lower() == "authorization" for k in self.headers):
            raise ValueError("credentials both in the URL and in an Authorization header")
        return self

    def signing_secret(self) -> bytes | None:
        """The HMAC key (from ``secret`` or the ``secret_env`` variable), None when signing is off."""
        if self.secret_env is not None:
            value = os.environ.get(self.secret_env, "")
            return value.encode("utf-8") if value else None
        return self.secret.encode("utf-8") if self.secret else None


MQTT_TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"  # no wildcards, no empty or leading "$" level


class MqttClientCertConfig(StrictModel):
    """A client certificate for brokers that authenticate clients by TLS: PEM certificate (chain) and its key."""

    cert_file: Path
    key_file: Path


class MqttTlsConfig(StrictModel):
    """TLS to the broker. ``tls: {}`` verifies the broker against the system's trusted CAs."""

    ca_file: Path | None = Field(default=None, description="PEM CA bundle to trust instead of the system's")
    client_cert: MqttClientCertConfig | None = None
    check_hostname: bool = Field(default=True, description="the certificate must name `host`")


class MqttSinkConfig(StrictModel):
    """Events to an MQTT broker from the durable outbox (vigil/alerts/mqtt.py: topics, delivery, failures)."""

    host: str = Field(pattern=r"^[A-Za-z0-9._:-]+$", max_length=253, description="broker host name or address")
    port: int | None = Field(default=None, ge=1, le=65535, description="None: 1883, or 8883 with tls")
    client_id: str = Field(default="vigil", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="unique per broker")
    topic_prefix: str = Field(default="vigil", pattern=MQTT_TOPIC_PREFIX_PATTERN, max_length=128)
    qos: Literal[0, 1, 2] = 1
    retain: bool = Field(default=True, description="retain the state topics (<prefix>/available, <camera>/status)")
    username: str | None = Field(default=None, min_length=1, max_length=256)
    password: SecretStr | None = Field(default=None, description="prefer password_env: the config is not a vault")
    password_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="environment variable holding the password"
    )
    tls: MqttTlsConfig | None = None
    keepalive_s: int = Field(default=60, ge=5, le=3600)
    connect_timeout_s: PositiveSeconds = 5.0
    publish_timeout_s: PositiveSeconds = Field(default=5.0, description="wait this long for the broker's ack")
    reconnect_initial_backoff_s: int = Field(default=1, ge=1, le=3600)
    reconnect_max_backoff_s: int = Field(default=30, ge=1, le=3600)
    max_attempts: int = Field(default=20, ge=1, le=10_000, description="publishes per event while connected")
    initial_backoff_s: PositiveSeconds = 1.0
    max_backoff_s: PositiveSeconds = 60.0

    @model_validator(mode="after")
    def _consistent(self) -> MqttSinkConfig:
        if self.password is not None and self.password_env is not None:
            raise ValueError("give password or password_env, not both")
        if (self.password is not None or self.password_env is not None) and self.username is None:
            raise ValueError("a password needs a username")
        if self.reconnect_max_backoff_s < self.reconnect_initial_backoff_s:
            raise ValueError("reconnect_max_backoff_s must be >= reconnect_initial_backoff_s")
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be >= initial_backoff_s")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (8883 if self.tls is not None else 1883)


class AlertsConfig(StrictModel):
    console: bool = True
    sqlite: bool = True
    jsonl: JsonlSinkConfig | None = None
    webhook: WebhookSinkConfig | None = None
    mqtt: MqttSinkConfig | None = None
    snapshots: bool = True  # the best face of the event's track, as <data_dir>/snapshots/<date>/<id>.jpg
    update_snapshot: bool = Field(
        default=False, description="overwrite an event's snapshot when its track later shows a better face"
    )


class TlsConfig(StrictModel):
    """HTTPS for the API: a PEM certificate (chain) and its private key."""

    cert: Path
    key: Path


class ServerConfig(StrictModel):
    """The HTTP API inside `vigil run` (vigil/server/): where it listens, TLS, who may do what, upload limits."""

    enabled: bool = True
    listen: str = Field(default="127.0.0.1:8080", description="host:port ([v6]:port); port 0 picks a free one")
    tls: TlsConfig | None = Field(default=None, description="set: HTTPS, and the session cookie is Secure")
    metrics_public: bool = Field(default=False, description="/metrics without a token (e.g. a local Prometheus)")
    operators_can_enroll: bool = Field(default=False, description="operators may add people and photos")
    session_idle_timeout_s: float = Field(default=3600.0, ge=60.0, le=7 * 86_400.0)
    session_max_age_s: float = Field(default=12 * 3600.0, ge=60.0, le=30 * 86_400.0)
    login_max_failures: int = Field(default=5, ge=1, le=1000, description="per user and per address, in the window")
    login_window_s: float = Field(default=900.0, ge=1.0, le=86_400.0)
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=200 * 1024 * 1024)
    max_image_pixels: int = Field(default=40_000_000, ge=10_000, le=500_000_000, description="decompression bomb guard")
    sse_queue_size: int = Field(default=256, ge=8, le=100_000, description="events buffered per stream client")

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ("127.0.0.1", 8080); ``"[::1]:8080"`` -> ("::1", 8080); ValueError otherwise."""
    match = re.fullmatch(
        r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<port>\d{1,5})|(?P<host>[A-Za-z0-9.-]+):(?P<port2>\d{1,5})", value
    )
    if match is None:
        raise ValueError(f"expected host:port or [ipv6]:port, got {value!r}")
    host = match.group("v6") or match.group("host")
    port = int(match.group("port") or match.group("port2"))
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return host, port


class RetentionConfig(StrictModel):
    """How long personal data is kept (vigil/store/retention.py); applied on start and every ``interval_s``."""

    alerts_days: float = Field(default=30.0, gt=0.0, le=3650.0, description="watchlist alerts")
    unknown_events_days: float = Field(default=7.0, gt=0.0, le=3650.0, description="faces that matched nobody")
    snapshots_days: float = Field(default=30.0, gt=0.0, le=3650.0, description="face crops (never beyond their event)")
    audit_days: float = Field(default=365.0, gt=0.0, le=3650.0, description="the audit log")
    interval_s: float = Field(default=3600.0, ge=10.0, le=86_400.0)


class StagesConfig(StrictModel):
    """How `vigil run` schedules the stages (vigil/stages.py)."""

    overlapped: bool | Literal["auto"] = Field(
        default="auto",
        description="detection (+ tracking) and recognition (+ decisions) in two threads joined by a bounded queue; "
        "false: one loop does one batch after the other; auto: overlapped when a model runs on a GPU",
    )
    batch_deadline_s: float = Field(
        default=0.04,
        ge=0.0,
        le=5.0,
        description="a detection batch closes with detector.batch_size frames or when its oldest waited this long",
    )
    embed_queue_batches: int = Field(
        default=1, ge=1, le=64, description="detected batches that may wait for recognition (each adds latency)"
    )


class VigilConfig(StrictModel):
    data_dir: Path = Path("vigil-data")
    data_access: Literal["private", "group"] = Field(
        default="private",
        description="who may read what vigil writes (events, snapshots, enrolment cache): private = files 0600 and "
        "folders 0700; group = 0640 and 0750",
    )
    watchlist: Path | None = None
    allow_empty_watchlist: bool = Field(
        default=False, description="start even when no one on the watchlist could be enrolled (nobody is watched)"
    )
    cameras: list[CameraConfig] = Field(default_factory=list)
    reconnect: ReconnectConfig = ReconnectConfig()
    detector: DetectorConfig = DetectorConfig()
    recognizer: RecognizerConfig = RecognizerConfig()
    tracker: TrackerConfig = TrackerConfig()
    rules: RulesConfig = RulesConfig()
    alerts: AlertsConfig = AlertsConfig()
    status_interval_s: PositiveSeconds = 10.0
    server: ServerConfig = ServerConfig()
    retention: RetentionConfig = RetentionConfig()
    stages: StagesConfig = StagesConfig()

    @model_validator(mode="after")
    def _unique_camera_names(self) -> VigilConfig:
        names = [camera.name for camera in self.cameras]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"camera names must be unique, repeated: {', '.join(duplicates)}")
        return self


def format_validation_error(source: str, error: ValidationError) -> str:
    """One line: ``file: key.path: message`` for the first error (and a count of the others).

    Unknown keys are reported first: a misspelt key usually also explains a "field required" error."""
    errors = sorted(error.errors(), key=lambda e: e.get("type") != "extra_forbidden")
    first = errors[0]
    location = _format_location(first.get("loc", ()))
    message = first.get("msg", "invalid")
    if first.get("type") == "extra_forbidden":
        message = "unknown key"
    more = len(errors) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    where = f"{location}: " if location else ""
    return f"{source}: {where}{message}{suffix}"


def _format_location(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


MAX_YAML_BYTES = 4 * 1024 * 1024  # a config or watchlist larger than this is not one (and would be slow to parse)


def read_yaml_mapping(path: Path, what: str) -> dict:
    """Read a YAML file that must hold a mapping; ConfigError with one line otherwise (missing, too large, not UTF-8,
    not YAML, nested too deeply for the parser, not a mapping)."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: {what} file too large ({path.stat().st_size} bytes, limit {MAX_YAML_BYTES})")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{path}: {where}not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what} file ({' '.join(str(exc).split())})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {what} must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(path: Path | str) -> VigilConfig:
    """Load, validate and resolve a config file; relative paths become relative to the file's folder. Then check
    what can only be checked on disk: camera files exist, ``data_dir`` is not a file, the webhook's secret and CA
    bundle are there."""
    path = Path(path)
    raw = read_yaml_mapping(path, "config")
    try:
        config = VigilConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None
    config = resolve_paths(config, path.parent)
    problem = disk_problem(config)
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return config


def data_dir_problem(data_dir: Path) -> str | None:
    """Why ``data_dir`` cannot hold vigil's data (None when it can, or does not exist yet)."""
    if data_dir.exists() and not data_dir.is_dir():
        return f"{data_dir} exists and is not a folder"
    return None


def disk_problem(config: VigilConfig) -> str | None:
    """``key.path: message`` for the first setting that the file system contradicts, else None."""
    problem = data_dir_problem(config.data_dir)
    if problem:
        return f"data_dir: {problem}"
    for i, camera in enumerate(config.cameras):
        for key in ("source", "detect_source"):
            source = getattr(camera, key)
            if not is_file_source(source):
                continue
            if not Path(str(source)).is_file():
                what = "is a folder, not a video file" if Path(str(source)).is_dir() else "video file not found"
                return f"cameras[{i}].{key}: {what}: {source}"
    webhook = config.alerts.webhook
    if webhook is not None:
        if webhook.secret_env is not None and not os.environ.get(webhook.secret_env):
            return f"alerts.webhook.secret_env: the environment variable {webhook.secret_env} is not set or empty"
        if webhook.ca_file is not None and not webhook.ca_file.is_file():
            return f"alerts.webhook.ca_file: file not found: {webhook.ca_file}"
    return None


def resolve_paths(config: VigilConfig, base: Path) -> VigilConfig:
    """Make every relative path in the config relative to ``base`` (the config file's folder): every ``Path`` field
    of every section, found by walking the models (a new path field needs no change here), and the source of every
    camera that is a video file."""
    resolved = _resolve_path_fields(config, base)
    cameras = [
        camera.model_copy(
            update={
                "source": _file_source(camera.source, base),
                "detect_source": _file_source(camera.detect_source, base),
            }
        )
        for camera in resolved.cameras
    ]
    return resolved.model_copy(update={"cameras": cameras})


def _file_source(source: str | int | None, base: Path) -> str | int | None:
    """A camera source that is a relative file path, joined onto ``base``; anything else as it is."""
    if not is_file_source(source) or Path(str(source)).is_absolute():
        return source
    return str(base / str(source))


def _resolve_path_fields(value: object, base: Path) -> Any:
    """``value`` with every relative ``Path`` in it (a model's fields, list items) joined onto ``base``."""
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if isinstance(value, BaseModel):
        updates = {}
        for name in type(value).model_fields:
            old = getattr(value, name)
            new = _resolve_path_fields(old, base)
            if new is not old:
                updates[name] = new
        return value.model_copy(update=updates) if updates else value
    if isinstance(value, list):
        items = [_resolve_path_fields(item, base) for item in value]
        return items if any(new is not old for new, old in zip(items, value)) else value
    return value
