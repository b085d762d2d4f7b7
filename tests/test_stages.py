"""Overlapped stages (vigil/stages.py): deadline batching on a fake clock, fair gathering, merged batches, the
two-thread runner keeps each camera's order of decisions and gives the serial loop's alerts, a failing stage stops
the run."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.test_pipeline import PEOPLE, ScriptedAnalyzer, frames_showing
from vigil.alerts import AlertDispatcher, JsonlSink
from vigil.config import RulesConfig, TrackerConfig
from vigil.pipeline import TrackedBatch, WatchPipeline
from vigil.rules import Gallery, RulesEngine
from vigil.stages import DeadlineBatcher, OverlappedRunner, StageQueue, gather_round, merge_batches, overlap_wanted

# (what happens, expected: was a batch due after each step)
BATCHING_CASES = [
    ("closes when full", [("add", 0.00), ("add", 0.01), ("add", 0.02)], [False, False, True]),
    (
        "closes when the oldest waited the deadline",
        [("add", 0.00), ("tick", 0.04), ("tick", 0.05)],
        [False, False, True],
    ),
    (
        "the deadline runs from the oldest, not the newest",
        [("add", 0.0), ("add", 0.049), ("tick", 0.05)],
        [False, False, True],
    ),
    ("an empty batcher is never due", [("tick", 10.0)], [False]),
]


@pytest.mark.parametrize("case, steps, due", BATCHING_CASES, ids=[c[0] for c in BATCHING_CASES])
def test_deadline_batcher_closes_on_size_or_deadline(case, steps, due):
    batcher: DeadlineBatcher[int] = DeadlineBatcher(max_size=3, deadline_s=0.05)
    seen = []
    for number, (kind, now) in enumerate(steps):
        if kind == "add":
            batcher.add(number, now)
        seen.append(batcher.due(now))
    assert seen == due


def test_deadline_batcher_keeps_arrival_order_and_reports_the_wait():
    batcher: DeadlineBatcher[str] = DeadlineBatcher(max_size=4, deadline_s=0.1)
    assert batcher.wait_s(0.0) is None
    batcher.add("a", 1.00)
    batcher.add("b", 1.03)
    assert batcher.wait_s(1.05) == pytest.approx(0.05)
    assert batcher.take() == ["a", "b"]
    assert len(batcher) == 0 and batcher.wait_s(2.0) is None
    batcher.add("c", 5.0)  # a new batch's deadline runs from its own oldest item
    assert not batcher.due(5.09) and batcher.due(5.11)
    for item in "def":
        batcher.add(item, 5.0)
    with pytest.raises(OverflowError):
        batcher.add("g", 5.0)


class ListSource:
    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.frames = frames_showing([1] * count, camera=name)

    def get(self, timeout_s: float):
        return self.frames.pop(0) if self.frames else None


def test_gathering_takes_one_frame_per_camera_per_batch_and_rotates():
    sources = [ListSource("a", 5), ListSource("b", 5), ListSource("c", 0)]
    frames, start = gather_round(sources, 0, room=8, skip=set())
    assert [(p, f.camera) for p, f in frames] == [(0, "a"), (1, "b")] and start == 1
    frames, start = gather_round(sources, start, room=1, skip=set())  # room for one: this round starts at b
    assert [f.camera for _, f in frames] == ["b"] and start == 2
    frames, _ = gather_round(sources, 0, room=8, skip={0})  # a already has a frame in the open batch
    assert [f.camera for _, f in frames] == ["b"]


def test_merged_batches_shift_the_embedding_positions():
    first = TrackedBatch(["f0", "f1"], [True, True], [[], []], [[], []], [(1, 0)], [(), ("p1",)])  # type: ignore[list-item]
    second = TrackedBatch(["f2"], [True], [[]], [[]], [(0, 2)], [("p2",)])  # type: ignore[list-item]
    merged = merge_batches([first, second])
    assert merged.frames == ["f0", "f1", "f2"] and merged.wanted == [(1, 0), (2, 2)]
    assert merged.predicted == [(), ("p1",), ("p2",)]  # each frame keeps its own predicted boxes


def test_stage_queue_makes_the_producer_wait_and_never_drops():
    queue: StageQueue[int] = StageQueue(maxsize=1)
    stop = threading.Event()
    assert queue.put(1, stop)
    threading.Timer(0.2, lambda: queue.take_all(0.0)).start()
    started = time.monotonic()
    assert queue.put(2, stop)  # waits until the consumer took the first
    assert time.monotonic() - started >= 0.15 and queue.put_waited_s >= 0.15
    assert queue.take_all(0.1) == [2]
    stop.set()
    assert queue.put(3, stop) and not queue.put(4, stop)  # full and stopped: not added


def make_pipeline(tmp_path, name: str) -> tuple[WatchPipeline, object]:
    rules = RulesConfig(match_threshold=0.5, margin=0.05, min_hits=2, confirm_hits=4, cooldown_s=60)
    events = tmp_path / f"{name}.jsonl"
    pipeline = WatchPipeline(
        ScriptedAnalyzer(),
        Gallery.from_people(PEOPLE),
        RulesEngine(rules, PEOPLE),
        AlertDispatcher([JsonlSink(events)]),
        {},
        TrackerConfig(),
        None,
    )
    return pipeline, events


def test_overlapped_runner_gives_the_serial_alerts_in_each_cameras_frame_order(tmp_path):
    codes = {"a": [1] * 12, "b": [2] * 12, "c": [9] * 6 + [1] * 6}
    serial, serial_events = make_pipeline(tmp_path, "serial")
    for camera, shown in codes.items():
        frames = frames_showing(shown, camera=camera)
        for start in range(0, len(frames), 3):
            serial.process(frames[start : start + 3])
    serial.close()

    class Scripted:
        def __init__(self, camera: str) -> None:
            self.frames = frames_showing(codes[camera], camera=camera)

        def get(self, timeout_s: float):
            return self.frames.pop(0) if self.frames else None

    overlapped, overlapped_events = make_pipeline(tmp_path, "overlapped")
    stop = threading.Event()
    runner = OverlappedRunner(overlapped, [Scripted(c) for c in codes], 4, 0.01, 1, stop)
    decided: list[tuple[str, int]] = []
    runner.on_results = lambda results, _: decided.extend((r.frame.camera, r.frame.index) for r in results)
    threading.Timer(1.5, stop.set).start()
    runner.run()
    overlapped.close()

    for camera in codes:
        order = [index for cam, index in decided if cam == camera]
        assert order == list(range(12)), camera  # every frame decided, in order
    key = lambda e: (e["camera"], e["frame_index"], e["person_id"], e["stage"])  # noqa: E731
    read = lambda path: sorted(map(key, map(json.loads, path.read_text().splitlines())))  # noqa: E731
    assert read(overlapped_events) == read(serial_events) != []
    assert runner.stats().detect_frames == 36 and runner.stats().discarded_at_stop == 0


def test_a_failing_recognition_stage_stops_the_run_and_is_raised(tmp_path):
    pipeline, _ = make_pipeline(tmp_path, "failing")

    def broken(batch):
        raise RuntimeError("embedder exploded")

    pipeline.recognise = broken  # type: ignore[method-assign]
    stop = threading.Event()
    runner = OverlappedRunner(pipeline, [ListSource("a", 3)], 2, 0.01, 1, stop)
    threading.Timer(5.0, stop.set).start()  # safety net: the failure must stop it long before
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="embedder exploded"):
        runner.run()
    assert time.monotonic() - started < 4.0


@pytest.mark.parametrize(
    "setting, device, provider, expected",
    [
        ("auto", "cpu", "CPUExecutionProvider", False),
        ("auto", "cuda:0", "CPUExecutionProvider", True),
        ("auto", "cpu", "CUDAExecutionProvider", True),
        (True, "cpu", "CPUExecutionProvider", True),
        (False, "cuda:0", "CUDAExecutionProvider", False),
    ],
)
def test_stages_overlap_by_default_where_a_model_runs_on_a_gpu(setting, device, provider, expected):
    assert overlap_wanted(setting, device, provider) is expected
