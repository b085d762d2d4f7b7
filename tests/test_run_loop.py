"""`vigil run`'s service loop: batches one frame per camera, a silent camera never blocks, stop is prompt."""

from __future__ import annotations

import threading
import time

from vigil.capture import CameraStats
from vigil.commands.run import serve
from vigil.config import VigilConfig


class FakeSource:
    def __init__(self, name: str, frames: int) -> None:
        self.name, self.left = name, frames

    def get(self, timeout_s: float):
        if self.left <= 0:
            return None
        self.left -= 1
        return (self.name, self.left)

    def stats(self) -> CameraStats:
        return CameraStats(name=self.name, connected=self.left > 0)


class CountingPipeline:
    sink = None  # no sink that takes camera status

    def __init__(self) -> None:
        self.batches: list[list] = []

    def process(self, frames) -> list:
        self.batches.append(list(frames))
        return []


def test_live_camera_is_served_while_a_dead_one_gives_nothing_and_stop_is_prompt():
    live, dead = FakeSource("live", 5), FakeSource("dead", 0)
    pipeline, stop = CountingPipeline(), threading.Event()
    threading.Timer(0.3, stop.set).start()
    start = time.monotonic()
    serve(pipeline, [live, dead], VigilConfig(status_interval_s=0.1), stop)
    assert time.monotonic() - start < 1.0
    assert sum(len(b) for b in pipeline.batches) == 5
    assert all(len(batch) == 1 and batch[0][0] == "live" for batch in pipeline.batches)


def test_one_frame_per_camera_per_round():
    a, b = FakeSource("a", 3), FakeSource("b", 3)
    pipeline, stop = CountingPipeline(), threading.Event()
    threading.Timer(0.2, stop.set).start()
    serve(pipeline, [a, b], VigilConfig(), stop)
    assert [sorted(name for name, _ in batch) for batch in pipeline.batches] == [["a", "b"]] * 3
