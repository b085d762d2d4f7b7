"""`vigil process VIDEO [VIDEO...] --watchlist W [--config C] [--events OUT.jsonl] [--out-video A.mp4]`.

Reads every frame of every file (none dropped), runs the whole pipeline as fast as the hardware allows, writes
alerts to ``--events`` (one JSON object per line) and prints a summary table at the end.

The pipeline's clock is the video's own time (:class:`vigil.capture.FileSource`), so the alerts do not depend on
how fast the machine is. Every input is checked (it opens and a first frame decodes) before the models load; a file
with frames that do not decode is read past them, and the run then ends with exit code 1 and one line per file
saying which frames were skipped.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from vigil.capture import FileSource
from vigil.config import JsonlSinkConfig, VigilConfig, data_dir_problem
from vigil.errors import VigilError
from vigil.filemode import file_creation_mode
from vigil.pipeline import WatchPipeline
from vigil.runtime import build_pipeline, load_config_or_default
from vigil.substream import paired_file_frames

log = logging.getLogger("vigil.process")


@dataclass
class VideoSummary:
    video: Path
    frames: int
    seconds: float
    faces: int
    embedded: int
    alerts: dict[str, int]
    damage: str | None = None  # which frames did not decode (FileSource.damage)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def process_config(config: VigilConfig, events: Path | None, data_dir: Path | None) -> VigilConfig:
    """The config as `vigil process` runs it; only what differs from the file is changed, so every other sink and
    setting is kept: no SQLite store (a batch job reports to ``events``; the camera service keeps the store), the
    JSONL sink writes ``events`` (none without it), ``data_dir`` overrides the config's, and the config's cameras
    are ignored (the inputs are files)."""
    alerts = config.alerts.model_copy(
        update={"sqlite": False, "jsonl": JsonlSinkConfig(path=events) if events else None}
    )
    return config.model_copy(update={"alerts": alerts, "data_dir": data_dir or config.data_dir, "cameras": []})


def run_cli(args: argparse.Namespace) -> int:
    if args.out_video and len(args.videos) > 1:
        raise VigilError("--out-video: takes one input video, got several")
    if args.detect_video is not None and (len(args.videos) > 1 or not args.detect_video.is_file()):
        raise VigilError(f"--detect-video: {args.detect_video}: one file, for one input video")
    for video in args.videos:
        check_video(video)
    config = process_config(load_config_or_default(args.config), args.events, args.data_dir)
    problem = data_dir_problem(config.data_dir)
    if problem:
        raise VigilError(f"--data-dir: {problem}" if args.data_dir else f"data_dir: {problem}")
    check_output(args.events, "--events")
    check_output(args.out_video, "--out-video")
    with file_creation_mode(config.data_access):
        summaries, stage_seconds = _process_all(config, args)
    print(format_summary(summaries, stage_seconds))
    damaged = [s for s in summaries if s.damage]
    for summary in damaged:
        print(f"vigil: error: {summary.video}: {summary.damage}; the other frames were processed", file=sys.stderr)
    return 1 if damaged else 0


def _process_all(config: VigilConfig, args: argparse.Namespace) -> tuple[list[VideoSummary], dict[str, float]]:
    runtime = build_pipeline(config, args.watchlist)  # refuses a watchlist that enrols nobody
    if args.events:
        args.events.parent.mkdir(parents=True, exist_ok=True)
        args.events.write_text("", encoding="utf-8")  # one run, one events file
    summaries: list[VideoSummary] = []
    clock_s = 0.0  # each video's clock starts where the previous one ended: cooldowns hold across videos
    try:
        for index, video in enumerate(args.videos):
            pipeline = runtime.pipeline if index == 0 else runtime.new_pipeline()  # fresh trackers per video
            summary, clock_s = process_video(pipeline, video, config.detector.batch_size, args, clock_s)
            summaries.append(summary)
    finally:
        runtime.close()
    return summaries, runtime.analyzer.times.seconds


def check_video(video: Path) -> None:
    """VigilError (one line) unless ``video`` opens and its first frame decodes: before any model is loaded."""
    with FileSource(video) as source:
        if next(iter(source.frames()), None) is None:
            raise VigilError(f"{video}: no frame could be decoded")


def check_output(path: Path | None, option: str) -> None:
    """VigilError when an output path cannot be a file: it is a folder, or its folder is a file."""
    if path is None:
        return
    if path.is_dir():
        raise VigilError(f"{option}: {path} is a folder")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise VigilError(f"{option}: {parent} is a file, not a folder")


def process_video(
    pipeline: WatchPipeline, video: Path, batch_size: int, args: argparse.Namespace, clock_offset_s: float = 0.0
) -> tuple[VideoSummary, float]:
    """Run every frame of ``video`` through ``pipeline``; the summary, and where the video's clock ended."""
    from tqdm import tqdm

    from vigil.annotate import AnnotatedVideoWriter

    pipeline.default_detect_fps = args.detect_fps
    with FileSource(video, clock_offset_s=clock_offset_s) as whole, ExitStack() as stack:
        source, frames = whole, whole.frames()
        if args.detect_video is not None:  # a recorded two-stream camera: detect on the small file
            small = stack.enter_context(
                FileSource(args.detect_video, camera=whole.camera, clock_offset_s=clock_offset_s)
            )
            frames = paired_file_frames(small, whole)
            source = small  # the annotated video shows what was detected on
        writer = None
        if args.out_video:
            writer = AnnotatedVideoWriter(args.out_video, source.fps, (source.width, source.height))
        bar = tqdm(total=source.frame_count, unit="frame", desc=video.name, disable=args.no_progress)
        start = time.perf_counter()
        try:
            for batch in _batches(frames, batch_size):
                for result in pipeline.process(batch):
                    if writer is not None:
                        writer.write(result)
                bar.update(len(batch))
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        seconds = time.perf_counter() - start
        damage = whole.damage() or source.damage()
        if damage:
            log.warning("%s: %s; the other frames were processed", video, damage)
    counters = pipeline.counters
    log.info(
        "%s: %d tracks split on an identity switch, %d embeddings held out (did not match their track)",
        video.name,
        counters.identity_switches,
        counters.embeddings_held_out,
    )
    summary = VideoSummary(
        video,
        counters.frames,
        seconds,
        counters.faces,
        counters.embeddings,
        dict(counters.alerts_by_person),
        damage,
    )
    return summary, clock_offset_s + whole.end_ts_s + 1.0


def _batches(frames, size: int):
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def format_summary(summaries: list[VideoSummary], stage_seconds: dict[str, float]) -> str:
    lines = [f"{'video':<32} {'frames':>7} {'seconds':>8} {'fps':>7} {'faces':>7} {'embedded':>8}  alerts"]
    for s in summaries:
        alerts = ", ".join(f"{k}={v}" for k, v in sorted(s.alerts.items())) or "none"
        lines.append(
            f"{s.video.name[:32]:<32} {s.frames:>7} {s.seconds:>8.1f} {s.fps:>7.1f} {s.faces:>7} {s.embedded:>8}  "
            f"{alerts}"
        )
    total_frames = sum(s.frames for s in summaries)
    if total_frames:
        per_stage = ", ".join(f"{k} {1000 * v / total_frames:.1f} ms/frame" for k, v in stage_seconds.items())
        lines.append(f"stages: {per_stage}")
    return "\n".join(lines)
