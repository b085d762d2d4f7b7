"""`vigil bench pipeline --json OUT [--video V] [--height 720] [--config C]`: frames/s per stage and end to end.

Runs the real pipeline (detect every frame, align, embed, track, decide) on a video, frames resized to ``--height``
(720 by default: the issue's 720p target) before timing, and reports per-stage time per frame and end-to-end
frames/s. Decoding and resizing are timed separately and excluded from the stage figures but included in
``end_to_end_fps_with_decode``. Alerts go nowhere (a null sink) so disk speed does not count.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import cv2

from vigil.bench.report import save_report
from vigil.capture import FileSource
from vigil.config import VigilConfig
from vigil.paths import data_path, repo_root
from vigil.pipeline import FrameResult, WatchPipeline
from vigil.runtime import build_pipeline, load_config_or_default
from vigil.types import Frame


class NullSink:
    """Events go nowhere: the benchmark times the pipeline, not the disk."""

    name = "null"

    def emit(self, event) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _resized(frame: Frame, height: int) -> Frame:
    if height <= 0 or frame.image.shape[0] == height:
        return frame
    scale = height / frame.image.shape[0]
    width = int(round(frame.image.shape[1] * scale / 2) * 2)
    image = cv2.resize(frame.image, (width, height), interpolation=cv2.INTER_LINEAR)
    return Frame(frame.camera, frame.index, frame.mono_ts_s, frame.video_ts_s, image)


def bench_config(config: VigilConfig, detector_model: Path | None) -> VigilConfig:
    """The config as the benchmark runs it: no snapshots (disk speed must not count), no cameras (the input is a
    file), and ``--model`` as the detector when given."""
    updates: dict = {"alerts": config.alerts.model_copy(update={"snapshots": False}), "cameras": []}
    if detector_model is not None:
        updates["detector"] = config.detector.model_copy(update={"model": Path(detector_model).resolve()})
    return config.model_copy(update=updates)


def run_cli(args: argparse.Namespace) -> int:
    config = bench_config(load_config_or_default(args.config), args.model)
    video = args.video or data_path("video", "short_hamilton_clip.mp4")
    watchlist = args.watchlist or repo_root() / "examples/hamilton/watchlist.yaml"
    runtime = build_pipeline(config, watchlist, sink=NullSink())
    analyzer = runtime.analyzer
    analyzer.times = type(analyzer.times)()  # enrollment is not part of the benchmark
    try:
        report = measure(runtime.pipeline, Path(video), args.height, config.detector.batch_size, args.seconds)
    finally:
        runtime.close()
    report.update(
        model_detector=str(runtime.models.detector.path),
        model_recognizer=str(runtime.models.recognizer.path),
        embed_provider=getattr(analyzer.embedder, "provider", "?"),
        host=platform.node(),
        cpu=platform.processor() or platform.machine(),
        batch_size=config.detector.batch_size,
    )
    print(json.dumps(report, indent=2))
    save_report(report, args.json)
    return 0


def measure(
    pipeline: WatchPipeline,
    video: Path,
    height: int,
    batch_size: int,
    max_seconds: float,
    on_results: Callable[[list[FrameResult]], None] | None = None,
) -> dict:
    """Run ``video`` through ``pipeline`` in batches (up to ``max_seconds``; 0: the whole video) and time it;
    ``on_results`` sees each batch's results (`vigil bench mqtt`: the frame time of each event)."""
    decode_s, frames, batch = 0.0, 0, []
    start = time.perf_counter()
    with FileSource(video) as source:
        iterator = source.frames()
        while True:
            t0 = time.perf_counter()
            frame = next(iterator, None)
            frame = None if frame is None else _resized(frame, height)
            decode_s += time.perf_counter() - t0
            if frame is not None:
                batch.append(frame)
            if batch and (frame is None or len(batch) == batch_size):
                results = pipeline.process(batch)
                if on_results is not None:
                    on_results(results)
                frames += len(batch)
                batch = []
            if frame is None or (max_seconds > 0 and time.perf_counter() - start > max_seconds and frames > 0):
                break
    total_s = time.perf_counter() - start
    stages = dict(pipeline.analyzer.times.seconds)
    stages["track"] = pipeline.counters.track_seconds
    stages["decide"] = pipeline.counters.decide_seconds
    pipeline_s = sum(stages.values())
    return {
        "video": str(video),
        "frames": frames,
        "frame_height": height,
        "faces": pipeline.counters.faces,
        "faces_embedded": pipeline.counters.embeddings,
        "faces_not_reembedded": pipeline.counters.embeddings_skipped,
        "faces_settled_by_cascade_fast_member": pipeline.counters.cascade_fast_only,
        "faces_through_whole_ensemble": pipeline.counters.cascade_full
        if pipeline.cascade
        else pipeline.counters.embeddings,
        "identity_switches": pipeline.counters.identity_switches,
        "embeddings_held_out": pipeline.counters.embeddings_held_out,
        "ms_per_frame": {k: round(1000 * v / max(frames, 1), 2) for k, v in stages.items()},
        "fps_per_stage": {k: round(frames / v, 1) if v > 0 else None for k, v in stages.items()},
        "end_to_end_fps": round(frames / pipeline_s, 2) if pipeline_s else None,
        "end_to_end_fps_with_decode": round(frames / total_s, 2),
        "decode_ms_per_frame": round(1000 * decode_s / max(frames, 1), 2),
    }
