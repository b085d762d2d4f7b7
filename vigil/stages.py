"""Overlapped stages for `vigil run`: detection and recognition in their own threads, joined by a bounded queue.

::

    cameras (a thread each, latest-frame queues) ─▶ detection thread ─▶ [bounded queue] ─▶ recognition thread
                                                    deadline batches:            refine, align, embed,
                                                    detect, track, schedule      fold, match, decide, sinks

The detection thread gathers frames into a :class:`DeadlineBatcher`: at most one frame per camera per batch (a busy
camera cannot crowd out the others, and a batch is one moment of every camera, as in the serial loop), and a batch
closes when it is full (``detector.batch_size`` frames, or one from every camera) or when its oldest frame has
waited ``stages.batch_deadline_s``, so a silent or slow camera never holds the others back and a GPU gets full
batches when frames come fast. It runs :meth:`WatchPipeline.detect_and_track` and hands the batch to the
recognition thread through a :class:`StageQueue` of ``stages.embed_queue_batches`` batches (default 1). The
recognition thread takes every batch waiting (merged into one embedding batch, :func:`merge_batches`) and runs
:meth:`WatchPipeline.recognise`. Both threads take batches in order, so each camera's decisions keep their frame
order; the pipeline's own lock keeps the trackers and rules consistent between them.

Back-pressure, not silent loss: when recognition falls behind, the queue fills and the detection thread waits
before it gathers the next batch (the time is counted, ``detect_waited_s``), so the frames it then takes are fresh;
meanwhile the cameras' latest-frame queues drop their oldest frames and count them (``frames_dropped`` per camera),
which is where a live system should lose frames: before any work was spent on them. A frame waits behind at most the
batch being recognised and the ``embed_queue_batches`` queued ones, so an overloaded machine drops frames instead of
falling ever further behind. The counts go to the live hub (status, /metrics) with the cameras' own.

When it pays: the two threads overlap where the models release the GIL (onnxruntime, the GPU). With the models on a
GPU the CPU prepares the next batch while the GPU computes; on a CPU whose cores each stage's onnxruntime sessions
already use, the two stages mostly take turns and the queue adds latency. ``stages.overlapped: auto`` (the default)
therefore overlaps when a model runs on a GPU and runs the serial loop otherwise
(:func:`overlap_wanted`); `vigil bench streams` measures both side by side.

Between batches the detection thread (which owns the detector) answers the server's photo checks and applies
watchlist reloads (:class:`vigil.live_publish.LivePublisher`); the recognition thread publishes results.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from vigil.pipeline import FrameResult, TrackedBatch, WatchPipeline
from vigil.types import Face, Frame, PredictedBox, TrackUpdate

log = logging.getLogger("vigil.stages")
T = TypeVar("T")
POLL_S = 0.005  # how often the detection thread looks at the camera queues while its batch is open
QUEUE_POLL_S = 0.1  # blocking queue operations wake this often to check the stop event


class FrameSource(Protocol):
    def get(self, timeout_s: float) -> Frame | None: ...


class DeadlineBatcher(Generic[T]):
    """Collects items into a batch that closes when ``max_size`` items wait or the oldest has waited
    ``deadline_s`` (times are passed in: a fake clock in tests). Items leave in arrival order."""

    def __init__(self, max_size: int, deadline_s: float) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self.deadline_s = deadline_s
        self._items: list[T] = []
        self._oldest_s: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def room(self) -> int:
        return self.max_size - len(self._items)

    def add(self, item: T, now_s: float) -> None:
        if not self.room():
            raise OverflowError("batch is full: take() it first")
        if not self._items:
            self._oldest_s = now_s
        self._items.append(item)

    def due(self, now_s: float) -> bool:
        """Full, or its oldest item has waited ``deadline_s``."""
        if not self._items or self._oldest_s is None:
            return False
        return len(self._items) >= self.max_size or now_s - self._oldest_s >= self.deadline_s

    def wait_s(self, now_s: float) -> float | None:
        """How long until the open batch is due (None: nothing waits)."""
        if not self._items or self._oldest_s is None:
            return None
        return max(self._oldest_s + self.deadline_s - now_s, 0.0)

    def take(self) -> list[T]:
        items, self._items, self._oldest_s = self._items, [], None
        return items


def gather_round(
    sources: Sequence[FrameSource], start: int, room: int, skip: set[int]
) -> tuple[list[tuple[int, Frame]], int]:
    """At most one frame from each camera not in ``skip`` (positions of cameras already in the open batch), starting
    at ``start`` (rotated each round so no camera always comes first), until ``room`` frames; returns (camera
    position, frame) pairs and the next round's start."""
    frames: list[tuple[int, Frame]] = []
    count = len(sources)
    for step in range(count):
        if len(frames) >= room:
            break
        position = (start + step) % count
        if position in skip:
            continue
        frame = sources[position].get(0.0)
        if frame is not None:
            frames.append((position, frame))
    return frames, (start + 1) % max(count, 1)


def merge_batches(batches: Sequence[TrackedBatch]) -> TrackedBatch:
    """Several tracked batches as one (in order), so the recognizer embeds all their faces in one call."""
    if len(batches) == 1:
        return batches[0]
    frames: list[Frame] = []
    analysed: list[bool] = []
    faces: list[list[Face]] = []
    updates: list[list[TrackUpdate]] = []
    wanted: list[tuple[int, int]] = []
    predicted: list[tuple[PredictedBox, ...]] = []
    for batch in batches:
        offset = len(frames)
        frames += batch.frames
        analysed += batch.analysed
        faces += batch.faces
        updates += batch.updates
        wanted += [(offset + i, j) for i, j in batch.wanted]
        predicted += batch.predicted
    return TrackedBatch(frames, analysed, faces, updates, wanted, predicted)


class StageQueue(Generic[T]):
    """A bounded FIFO between two threads: ``put`` waits (with the stop event) while it is full, counting the
    time; ``take_all`` returns everything waiting. Nothing is dropped here (see the module docstring)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self.put_waited_s = 0.0  # time producers spent waiting for room
        self.max_depth = 0

    def put(self, item: T, stop: threading.Event) -> bool:
        """Append ``item`` once there is room; False (not added) when ``stop`` is set first."""
        with self._cond:
            if not self._room(stop):
                return False
            self._items.append(item)
            self.max_depth = max(self.max_depth, len(self._items))
            self._cond.notify_all()
        return True

    def wait_for_room(self, stop: threading.Event) -> bool:
        """Wait until a ``put`` would not wait (counted like one); False when ``stop`` is set first."""
        with self._cond:
            return self._room(stop)

    def _room(self, stop: threading.Event) -> bool:
        """With the lock held: wait for room (the time counted in ``put_waited_s``); False when stopped first."""
        started = time.monotonic()
        while len(self._items) >= self.maxsize:
            if stop.is_set():
                return False
            self._cond.wait(QUEUE_POLL_S)
        self.put_waited_s += time.monotonic() - started
        return True

    def take_all(self, timeout_s: float) -> list[T]:
        """Every waiting item, oldest first; [] when none arrives within ``timeout_s``."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items), timeout=timeout_s):
                return []
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return items

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclass(frozen=True)
class StageStats:
    """The overlapped stages' counters, for status lines, the live hub and benchmarks."""

    detect_batches: int = 0
    detect_frames: int = 0
    detect_waited_s: float = 0.0  # detection thread blocked on a full queue: recognition is the bottleneck
    recognise_batches: int = 0  # recognition calls (each on one or more merged detection batches)
    queue_depth: int = 0
    queue_max_depth: int = 0
    queue_size: int = 0
    discarded_at_stop: int = 0  # frames detected but not recognised when the run stopped

    def to_json(self) -> dict:
        return {key: round(value, 3) if isinstance(value, float) else value for key, value in self.__dict__.items()}


BatchHook = Callable[[list[FrameResult], float], None]


def overlap_wanted(setting: bool | str, detector_device: str, embed_provider: str) -> bool:
    """``stages.overlapped``: True/False as set; ``auto``: when the detector or the recognizer runs on a GPU."""
    if setting != "auto":
        return bool(setting)
    return detector_device.startswith("cuda") or embed_provider in (
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
    )


class OverlappedRunner:
    """Runs the pipeline's two halves in two threads over ``sources`` until ``stop`` is set.

    ``on_results(results, seconds)`` is called in the recognition thread after each recognition batch;
    ``between_batches()`` and ``periodic(now)`` in the detection thread (photo checks, reloads, statuses).
    """

    def __init__(
        self,
        pipeline: WatchPipeline,
        sources: Sequence[FrameSource],
        batch_size: int,
        deadline_s: float,
        queue_batches: int,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.sources = list(sources)
        self.batcher: DeadlineBatcher[Frame] = DeadlineBatcher(max(min(batch_size, len(self.sources)), 1), deadline_s)
        self._in_batch: set[int] = set()  # positions of the cameras with a frame in the open batch
        self.queue: StageQueue[TrackedBatch] = StageQueue(queue_batches)
        self.stop = stop
        self.clock = clock
        self.on_results: BatchHook | None = None
        self.between_batches: Callable[[], None] | None = None
        self.periodic: Callable[[float], None] | None = None
        self._start = 0
        self._detect_batches = self._detect_frames = self._recognise_batches = self._discarded = 0
        self._failure: BaseException | None = None

    def run(self) -> None:
        """Detection in the calling thread, recognition in a new one; returns when ``stop`` is set (and re-raises
        an exception that ended the recognition thread)."""
        worker = threading.Thread(target=self._recognise_loop, name="vigil-recognise", daemon=True)
        worker.start()
        try:
            self._detect_loop()
        finally:
            self.stop.set()
            worker.join(timeout=30.0)
        if self._failure is not None:
            raise self._failure

    def stats(self) -> StageStats:
        return StageStats(
            detect_batches=self._detect_batches,
            detect_frames=self._detect_frames,
            detect_waited_s=self.queue.put_waited_s,
            recognise_batches=self._recognise_batches,
            queue_depth=len(self.queue),
            queue_max_depth=self.queue.max_depth,
            queue_size=self.queue.maxsize,
            discarded_at_stop=self._discarded,
        )

    def _detect_loop(self) -> None:
        while not self.stop.is_set():
            if not self.batcher and not self.queue.wait_for_room(self.stop):
                break  # gather fresh frames only once recognition can take the batch: none waits detected
            now = self.clock()
            frames, self._start = gather_round(self.sources, self._start, self.batcher.room(), self._in_batch)
            for position, frame in frames:
                self.batcher.add(frame, now)
                self._in_batch.add(position)
            if self.batcher.due(self.clock()):
                self._in_batch.clear()
                self._detect(self.batcher.take())
            elif not frames:
                wait = self.batcher.wait_s(self.clock())
                self.stop.wait(POLL_S if wait is None else min(wait, POLL_S))
            if self.between_batches is not None:
                self.between_batches()
            if self.periodic is not None:
                self.periodic(self.clock())

    def _detect(self, frames: list[Frame]) -> None:
        batch = self.pipeline.detect_and_track(frames)
        self._detect_batches += 1
        self._detect_frames += len(frames)
        self.queue.put(batch, self.stop)

    def _recognise_loop(self) -> None:
        try:
            while not self.stop.is_set():
                batches = self.queue.take_all(QUEUE_POLL_S)
                if not batches:
                    continue
                started = time.perf_counter()
                results = self.pipeline.recognise(merge_batches(batches))
                self._recognise_batches += 1
                if self.on_results is not None:
                    self.on_results(results, time.perf_counter() - started)
        except BaseException as exc:  # surfaced by run() in the main thread: a dead stage must stop the run
            self._failure = exc
            self.stop.set()
        finally:
            self._discarded = sum(len(batch.frames) for batch in self.queue.take_all(0.0))
