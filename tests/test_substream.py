"""Two-source cameras (vigil/substream.py): read-time matching of sub- and main-stream frames on scripted sources and
a fake clock, face scaling, and the pipeline cutting faces from the main-stream frame."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_pipeline import PEOPLE, ScriptedAnalyzer
from vigil.alerts import AlertDispatcher
from vigil.camera_settings import CameraSettings, CameraSettingsTable
from vigil.capture import CameraStats, LatestFrameQueue
from vigil.config import CameraConfig, RulesConfig, TrackerConfig, VigilConfig
from vigil.pipeline import WatchPipeline
from vigil.rules import Gallery, RulesEngine
from vigil.substream import PairedCameraSource, detail_scale, make_source, match_detail, scale_face
from vigil.types import Face, Frame

# (case, target time, candidate read times, now, expected state, expected index)
MATCH_CASES = [
    ("nearest within tolerance, a later frame exists", 1.00, [0.90, 0.98, 1.03], 1.03, "matched", 1),
    ("the later one is nearer", 1.00, [0.95, 1.01], 1.01, "matched", 1),
    ("only earlier frames yet: wait", 1.00, [0.97], 1.02, "pending", None),
    ("only earlier frames, tolerance over: take the nearest", 1.00, [0.97], 1.10, "matched", 0),
    ("nothing near, a later frame exists: final no", 1.00, [0.70, 1.20], 1.20, "unmatched", None),
    ("no main-stream frame at all, tolerance over", 1.00, [], 1.10, "unmatched", None),
    ("no main-stream frame yet", 1.00, [], 1.05, "pending", None),
]


@pytest.mark.parametrize("case, target, times, now, state, index", MATCH_CASES, ids=[c[0] for c in MATCH_CASES])
def test_match_detail(case, target, times, now, state, index):
    match = match_detail(target, times, 0.1, now)
    assert (match.state, match.index) == (state, index)
    if index is not None:
        assert match.offset_s == pytest.approx(times[index] - target)


def test_scale_face_moves_box_and_points_to_the_main_stream():
    face = Face(np.array([10, 20, 30, 50], np.float32), 0.9, np.array([[12, 30]] * 5, np.float32))
    big = scale_face(face, 3.0, 2.0)
    assert big.box.tolist() == [30, 40, 90, 100] and big.landmarks[0].tolist() == [36, 60]
    assert scale_face(face, 1.0, 1.0) is face
    frame = Frame("c", 0, 0.0, 0.0, np.zeros((360, 640, 3), np.uint8), detail=np.zeros((1080, 1920, 3), np.uint8))
    assert detail_scale(frame) == (3.0, 3.0) and frame.face_image is frame.detail


class ScriptedStream:
    """A camera stream with a real latest-frame queue, fed by the test."""

    def __init__(self, name: str, size: int, shape: tuple[int, int]) -> None:
        self.queue = LatestFrameQueue(size)
        self.name, self.shape, self.index, self.connected = name, shape, 0, True

    def push(self, read_at: float) -> None:
        self.queue.put(Frame(self.name, self.index, read_at, read_at, np.full((*self.shape, 3), self.index, np.uint8)))
        self.index += 1

    def get(self, timeout_s: float):
        return self.queue.get(0.0)

    def waiting_frames(self):
        return self.queue.waiting()

    def take_frame(self, index: int):
        return self.queue.take(index)

    def stats(self) -> CameraStats:
        return CameraStats(self.name, connected=self.connected, last_error="" if self.connected else "cannot open")


def paired_camera(now: list[float]) -> tuple[PairedCameraSource, ScriptedStream, ScriptedStream]:
    camera = CameraConfig(name="door", source="rtsp://cam/main", detect_source="rtsp://cam/sub")
    paired = PairedCameraSource(camera, clock=lambda: now[0])
    sub, main = ScriptedStream("door", 4, (36, 64)), ScriptedStream("door", 8, (108, 192))
    paired.detect, paired.main = sub, main  # type: ignore[assignment]
    return paired, sub, main


def test_paired_source_waits_for_the_main_frame_then_hands_both_out():
    now = [1.000]
    paired, sub, main = paired_camera(now)
    main.push(0.960)
    sub.push(1.000)
    assert paired.get(0.0) is None  # the main frame of this moment may still come
    now[0] = 1.030
    main.push(1.002)  # read 2 ms after the sub-stream frame
    frame = paired.get(0.0)
    assert frame is not None and frame.index == 0 and frame.detail is not None
    assert frame.detail.shape == (108, 192, 3) and int(frame.detail[0, 0, 0]) == 1  # main frame #1, not #0
    assert main.waiting_frames() == []  # it and the older one are gone
    stats = paired.detail_stats()
    assert (stats.matched, stats.unmatched) == (1, 0) and stats.mean_offset_ms == pytest.approx(2.0)


def test_paired_source_goes_on_without_the_main_stream_and_says_so():
    now = [2.000]
    paired, sub, main = paired_camera(now)
    main.connected = False
    sub.push(2.000)
    assert paired.get(0.0) is None
    now[0] = 2.150  # past the 0.1 s tolerance: faces come from the sub-stream frame
    frame = paired.get(0.0)
    assert frame is not None and frame.detail is None
    assert paired.detail_stats().unmatched == 1
    assert paired.stats().last_error == "main stream: cannot open"


def test_a_camera_with_a_detect_source_gets_a_paired_source_and_relative_files_resolve(tmp_path):
    assert isinstance(make_source(CameraConfig(name="c", source="a.mp4", detect_source="b.mp4")), PairedCameraSource)
    config_file = tmp_path / "config.yaml"
    config_file.write_text("cameras:\n  - {name: c, source: main.mp4, detect_source: sub.mp4}\n")
    (tmp_path / "main.mp4").write_bytes(b"")  # a camera file must exist when the config loads (issue 26, defect 8)
    (tmp_path / "sub.mp4").write_bytes(b"")
    from vigil.config import load_config

    camera = load_config(config_file).cameras[0]
    assert (camera.source, camera.detect_source) == (str(tmp_path / "main.mp4"), str(tmp_path / "sub.mp4"))
    assert VigilConfig().stages.overlapped == "auto"


class RecordingAnalyzer(ScriptedAnalyzer):
    def __init__(self) -> None:
        super().__init__(width_px=12.0)  # 12 px on the sub-stream: below min_face_px 20 unless cut from the main
        self.cut_from: list[tuple[tuple[int, ...], list[float]]] = []

    def embed_faces(self, items):
        self.cut_from += [(image.shape, face.box.tolist()) for image, face in items]
        return super().embed_faces(items)


def recording_pipeline(analyzer: RecordingAnalyzer, settings: CameraSettingsTable | None = None) -> WatchPipeline:
    rules = RulesConfig(match_threshold=0.5, margin=0.05, min_hits=2, confirm_hits=4)
    return WatchPipeline(
        analyzer,
        Gallery.from_people(PEOPLE),
        RulesEngine(rules, PEOPLE),
        AlertDispatcher([]),
        {},
        TrackerConfig(),
        None,
        camera_settings=settings,
    )


def test_the_pipeline_detects_on_the_sub_stream_and_cuts_faces_from_the_main_stream():
    analyzer = RecordingAnalyzer()
    pipeline = recording_pipeline(analyzer)
    frames = []
    for index in range(4):
        image = np.zeros((240, 320, 3), np.uint8)
        image[0, 0, 0] = 1  # ann
        detail = np.zeros((720, 960, 3), np.uint8)
        detail[0, 0, 0] = 1
        frames.append(Frame("cam", index, index / 25, index / 25, image, detail=detail))
    results = pipeline.process(frames)
    assert analyzer.cut_from and all(shape == (720, 960, 3) for shape, _ in analyzer.cut_from)
    assert analyzer.cut_from[0][1] == pytest.approx([300.0, 150.0, 336.0, 193.2])  # 12 px x3: 36 px, recognisable
    assert results[0].updates[0].face.box.tolist()[:2] == [100.0, 50.0]  # tracking stays in sub-stream pixels
    assert [e.stage.value for r in results for e in r.events] == ["provisional", "confirmed"]


@pytest.mark.parametrize("own_min_face_px, embedded", [(30, True), (40, False)])
def test_a_cameras_own_min_face_px_counts_main_stream_pixels(own_min_face_px, embedded):
    """The 12 px sub-stream face is 36 px on the main stream, where it is cut: the camera's own minimum (overrides)
    is checked there."""
    analyzer = RecordingAnalyzer()
    own = CameraSettings(0.5, 0.05, own_min_face_px, False)
    pipeline = recording_pipeline(analyzer, CameraSettingsTable(CameraSettings(0.5, 0.05, 20, False), {"cam": own}))
    image, detail = np.zeros((240, 320, 3), np.uint8), np.zeros((720, 960, 3), np.uint8)
    image[0, 0, 0] = detail[0, 0, 0] = 1
    pipeline.process([Frame("cam", 0, 0.0, 0.0, image, detail=detail)])
    assert bool(analyzer.cut_from) is embedded


@pytest.mark.parametrize("yaml_value, expected", [("off", "off"), ("any", "any"), ("vaapi", "vaapi"), ("on", "any")])
def test_hw_acceleration_reads_yaml_on_and_off(tmp_path, yaml_value, expected):
    from vigil.config import load_config

    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"cameras:\n  - {{name: c, source: a.mp4, hw_acceleration: {yaml_value}}}\n")
    (tmp_path / "a.mp4").write_bytes(b"")  # a camera file must exist when the config loads (issue 26, defect 8)
    assert load_config(config_file).cameras[0].hw_acceleration == expected


def test_an_unknown_hw_acceleration_is_one_clear_line(tmp_path):
    from vigil.config import load_config
    from vigil.errors import ConfigError

    config_file = tmp_path / "config.yaml"
    config_file.write_text("cameras:\n  - {name: c, source: a.mp4, hw_acceleration: cuda}\n")
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.hw_acceleration"):
        load_config(config_file)


def write_clip(path, size: tuple[int, int], fps: float, frames: int = 6) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), 40 * index, np.uint8))
    writer.release()


def test_a_recorded_two_stream_camera_pairs_frames_by_number(tmp_path):
    from vigil.capture import FileSource
    from vigil.errors import VigilError
    from vigil.substream import paired_file_frames

    write_clip(tmp_path / "sub.avi", (64, 36), 25.0)
    write_clip(tmp_path / "main.avi", (192, 108), 25.0)
    write_clip(tmp_path / "other.avi", (192, 108), 30.0)
    with FileSource(tmp_path / "sub.avi") as sub, FileSource(tmp_path / "main.avi") as main:
        frames = list(paired_file_frames(sub, main))
    assert [f.index for f in frames] == list(range(6)) and {f.camera for f in frames} == {"main"}
    assert all(f.detail is not None and f.detail.shape == (108, 192, 3) for f in frames)
    assert [int(f.face_image[0, 0, 0]) // 40 for f in frames] == [int(f.image[0, 0, 0]) // 40 for f in frames]
    with (
        FileSource(tmp_path / "sub.avi") as sub,
        FileSource(tmp_path / "other.avi") as other,
        pytest.raises(VigilError, match="cannot pair"),
    ):
        list(paired_file_frames(sub, other))


@pytest.mark.parametrize("detect_fps, analysed", [(None, 12), (10.0, 4), (15.0, 6)])
def test_detect_fps_analyses_frames_by_video_time(detect_fps, analysed):
    pipeline = WatchPipeline(
        ScriptedAnalyzer(),
        Gallery.from_people(PEOPLE),
        RulesEngine(RulesConfig(match_threshold=0.5), PEOPLE),
        AlertDispatcher([]),
        {"cam": CameraConfig(name="cam", source="a.mp4", detect_fps=detect_fps)},
        TrackerConfig(),
        None,
    )
    frames = [
        Frame("cam", i, 100.0, i / 30.0, np.full((240, 320, 3), 1 if i == 0 else 0, np.uint8)) for i in range(12)
    ]  # 30 fps video time, all read at the same moment (a file read as fast as it decodes)
    results = pipeline.process(frames)
    assert sum(r.analysed for r in results) == analysed
    assert pipeline.counters.frames_not_analysed == 12 - analysed
