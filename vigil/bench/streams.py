"""`vigil bench streams --cameras N --json OUT`: how many live cameras one machine holds, at what delay.

N file cameras play a clip at its real frame rate (each paced by its own capture thread, as `vigil run` plays a
file camera; each from its own point in the clip, ``camera_phase_frames``), through the whole `vigil run` path:
capture threads and latest-frame queues, the serial loop or the overlapped stages (``--mode``), the live publisher
and watchlist reloader, and real sinks (SQLite, JSONL, snapshots; the console sink is off).
After ``--warmup-seconds`` it measures for ``--seconds``:

- per camera: frames read, dropped (latest-frame queue overflow), wanted (the frames its ``detect_fps`` asks to
  analyse: all of them without one), analysed, missed (wanted but not analysed: the pipeline fell behind), frames/s;
- overall: p50/p95/p99 latency from a frame's capture (decoded and stamped by its capture thread) to its decisions
  (events emitted to the sinks), and the same for the frames that raised an alert; the process's CPU (cores used)
  and memory (RSS); the machine's load average and overall CPU use (a shared machine's figures mean little).

Variants (``--variants``, default all three, measured one after the other at each N in the same run, so that a
drifting machine load falls on all): ``today`` is the serial loop as it was before the overlapped stages, with every
face through the whole ensemble and one stream per camera; ``serial`` and ``overlapped`` are the two loops with the
recognition cascade (when the recognizer has a calibrated reject cosine), ``--substream`` and ``--detect-fps``.

A variant *holds real time* when fewer than ``--max-drop-pct`` (1 %) of the frames to analyse were missed (without
``--detect-fps``: fewer than 1 % of the frames read were dropped) and the p95 frame-to-decision latency is at most
``--p95-ms`` (250 ms). ``--find-max`` searches the largest N that holds,
doubling then bisecting (:func:`next_candidate`), for each variant.

Inputs: ``--video`` (default: the shared Hamilton clip) re-encoded once with ffmpeg to ``--height`` at ``--fps``
(H.264, cached in ``--work-dir``); ``--substream H`` also makes an H-pixel copy and configures every camera with it
as ``detect_source`` (detection on the small stream, faces from the large one: vigil/substream.py). ``--detect-fps``
sets every camera's ``detect_fps``. Decode cost: each clip is decoded once alone before the trials (CPU ms per
frame, single-threaded decoder, and the cores that takes at ``--fps``); ``--decode-only`` measures only that.

GPU: ``--device auto`` (the default) leaves the config's choice: the detector on CUDA when torch sees a GPU
(vigil.detect.resolve_device), the recognizer on ``recognizer.providers`` (CUDA first; vigil.onnx_session drops it
without a driver), so the same command measures a GPU where there is one; ``--device cpu`` forces the CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vigil.bench.report import save_report
from vigil.config import CameraConfig, JsonlSinkConfig, VigilConfig
from vigil.errors import VigilError
from vigil.live import LiveHub
from vigil.live_publish import LivePublisher
from vigil.paths import data_path, repo_root
from vigil.pipeline import FrameResult
from vigil.runtime import Runtime, build_pipeline, build_rules, load_config_or_default, new_watch_pipeline
from vigil.substream import make_source
from vigil.types import Alert

log = logging.getLogger("vigil.bench.streams")
GOLDEN_STEP = 0.6180339887  # each camera starts this fraction of the clip after the one before (camera_phase_frames)


@dataclass(frozen=True)
class Variant:
    """One way to run the cameras: the loop, and whether this issue's cascade, sub-stream and detect_fps apply."""

    loop: str  # "serial" | "overlapped"
    new_features: bool  # the recognition cascade, --substream and --detect-fps


VARIANTS = {
    "today": Variant("serial", False),  # the serial loop, every face through the whole ensemble, one stream
    "serial": Variant("serial", True),
    "overlapped": Variant("overlapped", True),
}


# ---- pure policy -------------------------------------------------------------------------------------------------
def next_candidate(verdicts: dict[int, bool], max_cameras: int) -> int | None:
    """The next camera count to try when searching the largest N that holds real time; None when the search is
    done. Doubling from 1 until a count fails (or ``max_cameras``), then bisecting between the largest count that
    held and the smallest that failed."""
    good = max((n for n, ok in verdicts.items() if ok), default=0)
    bad = min((n for n, ok in verdicts.items() if not ok and n > good), default=None)
    if bad is None:
        if good >= max_cameras:
            return None
        return min(max(good * 2, 1), max_cameras)
    if bad - good <= 1:
        return None
    return (good + bad) // 2


def wanted_frames(read: int, fps: float, detect_fps: float | None) -> int:
    """How many of ``read`` frames the camera's ``detect_fps`` asks to analyse (all of them without one)."""
    if detect_fps is None or detect_fps >= fps:
        return read
    return round(read * detect_fps / fps)


def holds_real_time(missed: int, wanted: int, p95_s: float | None, max_drop_pct: float, p95_bound_s: float) -> bool:
    """Fewer than ``max_drop_pct`` % of the frames to analyse missed (dropped before analysis: the pipeline fell
    behind), and the p95 latency within the bound. Without ``detect_fps`` every frame read is to be analysed, and
    a missed frame is a dropped one; with it, a frame dropped between two the cadence picks costs nothing."""
    if wanted == 0 or p95_s is None:
        return False
    return 100.0 * missed / wanted < max_drop_pct and p95_s <= p95_bound_s


def latency_summary(samples_s: list[float]) -> dict:
    """p50/p95/p99/max in milliseconds (None for no samples) and the count."""
    if not samples_s:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    values = np.asarray(samples_s) * 1000.0
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "count": len(values),
        "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1),
        "p99_ms": round(float(p99), 1),
        "max_ms": round(float(values.max()), 1),
    }


# ---- inputs ------------------------------------------------------------------------------------------------------
def run_ffmpeg(arguments: list[str], failure: str) -> None:
    """``ffmpeg -y ARGUMENTS`` (the output file last; its folder is made); a VigilError when ffmpeg is missing, or
    ``failure`` with ffmpeg's last words when it fails."""
    if shutil.which("ffmpeg") is None:
        raise VigilError("bench streams: ffmpeg is needed to prepare the clips (apt-get install ffmpeg)")
    Path(arguments[-1]).parent.mkdir(parents=True, exist_ok=True)
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise VigilError(f"{failure} ({done.stderr.strip()[-300:]})")


def camera_encoding(fps: float) -> list[str]:
    """ffmpeg output options for a clip as cameras send it: H.264, a 2 s GOP."""
    return ["-an", "-c:v", "libx264", "-preset", "veryfast", "-g", str(int(2 * fps)), "-pix_fmt", "yuv420p"]


def prepared_clip(video: Path, height: int, fps: float, work_dir: Path) -> Path:
    """``video`` re-encoded to ``height`` pixels at ``fps`` (:func:`camera_encoding`), made once."""
    out = work_dir / f"{video.stem}_{height}p{fps:g}.mp4"
    if not out.is_file():
        scale = ["-vf", f"scale=-2:{height}", "-r", f"{fps:g}"]
        run_ffmpeg(
            ["-i", str(video), *scale, *camera_encoding(fps), str(out)], f"{video}: ffmpeg could not re-encode it"
        )
    return out


def camera_phase_frames(camera: int, frames: int) -> int:
    """Where camera number ``camera`` starts in a clip of ``frames`` frames: camera 0 at the start, each next one a
    golden-ratio step further round the loop, so any number of cameras are spread out (and a camera keeps its phase
    whatever the count): cameras playing one clip in step would all see faces at the same moment, a worst case that
    real cameras do not share."""
    return round(frames * ((camera * GOLDEN_STEP) % 1.0)) % max(frames, 1)


def phase_shifted_clip(clip: Path, shift_frames: int, fps: float, work_dir: Path) -> Path:
    """``clip`` rotated to start ``shift_frames`` frames in (its tail, then its head; it loops seamlessly), encoded
    as :func:`prepared_clip` does at ``fps``, made once; ``clip`` itself for a shift of 0. The same shift keeps a main
    stream and its sub-stream paired."""
    if shift_frames == 0:
        return clip
    out = work_dir / f"{clip.stem}_from{shift_frames}.mp4"
    if not out.is_file():
        graph = (
            f"[0:v]trim=start_frame={shift_frames},setpts=PTS-STARTPTS[tail];"
            f"[0:v]trim=end_frame={shift_frames},setpts=PTS-STARTPTS[head];[tail][head]concat=n=2:v=1[out]"
        )
        rotate = ["-filter_complex", graph, "-map", "[out]"]
        failure = f"{clip}: ffmpeg could not shift it by {shift_frames} frames"
        run_ffmpeg(["-i", str(clip), *rotate, *camera_encoding(fps), str(out)], failure)
    return out


def clip_frames(path: Path) -> int:
    """The number of frames in ``path`` (as its container states it)."""
    import cv2

    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def camera_clips(
    count: int, main: Path, sub: Path | None, fps: float, work_dir: Path
) -> list[tuple[Path, Path | None]]:
    """Each camera's (main, sub-stream) clips, phase-shifted by :func:`camera_phase_frames`; both streams of a
    camera by the same number of frames (the clips have the same frame rate)."""
    frames = clip_frames(main)
    shifts = [camera_phase_frames(i, frames) for i in range(count)]
    return [
        (phase_shifted_clip(main, s, fps, work_dir), None if sub is None else phase_shifted_clip(sub, s, fps, work_dir))
        for s in shifts
    ]


def decode_cost(path: Path, frames: int = 100) -> dict:
    """CPU milliseconds per frame to decode (grab) and convert to BGR (retrieve) ``path``, single-threaded."""
    import cv2

    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    grab_s = retrieve_s = 0.0
    count = 0
    try:
        while count < frames:
            started = time.process_time()
            if not capture.grab():
                break
            grabbed = time.process_time()
            capture.retrieve()
            grab_s, retrieve_s = grab_s + grabbed - started, retrieve_s + time.process_time() - grabbed
            count += 1
    finally:
        capture.release()
    count = max(count, 1)
    return {
        "file": str(path),
        "grab_cpu_ms": round(1000 * grab_s / count, 2),
        "retrieve_cpu_ms": round(1000 * retrieve_s / count, 2),
        "cpu_ms_per_frame": round(1000 * (grab_s + retrieve_s) / count, 2),
    }


def camera_configs(
    clips: list[tuple[Path, Path | None]], detect_fps: float | None, variant: Variant
) -> list[CameraConfig]:
    """One file camera per (main, sub-stream) clip pair; the sub-stream and detect_fps only for a variant with this
    issue's features."""
    return [
        CameraConfig(
            name=f"cam{i:02d}",
            source=str(main),
            detect_source=None if sub is None or not variant.new_features else str(sub),
            detect_fps=detect_fps if variant.new_features else None,
        )
        for i, (main, sub) in enumerate(clips)
    ]


def bench_config(base: VigilConfig, args: argparse.Namespace, data_dir: Path) -> VigilConfig:
    """The config the benchmark runs: real sinks in a fresh data folder (no console), no HTTP server (no clients),
    the device asked for."""
    alerts = base.alerts.model_copy(
        update={
            "console": False,
            "sqlite": True,
            "snapshots": True,
            "jsonl": JsonlSinkConfig(path=data_dir / "a.jsonl"),
        }
    )
    updates: dict = {
        "data_dir": data_dir,
        "alerts": alerts,
        "server": base.server.model_copy(update={"enabled": False}),
        "status_interval_s": 3600.0,
    }
    if args.device != "auto":
        updates["detector"] = base.detector.model_copy(update={"device": args.device})
        if args.device == "cpu":
            updates["recognizer"] = base.recognizer.model_copy(update={"providers": ["CPUExecutionProvider"]})
    return base.model_copy(update=updates)


# ---- one trial ---------------------------------------------------------------------------------------------------
@dataclass
class TrialRecorder:
    """Collects the latencies of the frames captured inside the measuring window (thread-safe)."""

    start_s: float = float("inf")
    end_s: float = float("inf")
    latencies_s: list[float] = field(default_factory=list)
    alert_latencies_s: list[float] = field(default_factory=list)
    analysed: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, results: list[FrameResult], _seconds: float) -> None:
        with self.lock:
            for result in results:
                captured, decided = result.frame.mono_ts_s, result.decided_mono_s
                if not result.analysed or not self.start_s <= captured < self.end_s:
                    continue
                self.latencies_s.append(decided - captured)
                self.analysed[result.frame.camera] = self.analysed.get(result.frame.camera, 0) + 1
                if any(isinstance(event, Alert) for event in result.events):
                    self.alert_latencies_s.append(decided - captured)


def machine_snapshot() -> dict:
    """Load, the machine's CPU counters (/proc/stat), this process's RSS and CPU time, now."""
    return {
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "machine_cpu_ticks": machine_cpu_ticks(),
        "rss_mib": round(rss_bytes() / 2**20, 1),
        "process_cpu_s": time.process_time(),
        "mono_s": time.monotonic(),
    }


def machine_cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine since boot (Linux /proc/stat; None elsewhere)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_percent(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """The machine's CPU use between two :func:`machine_cpu_ticks` readings, in % of all cores."""
    if start is None or end is None or end[1] <= start[1]:
        return None
    return round(100.0 * (end[0] - start[0]) / (end[1] - start[1]), 1)


def rss_bytes() -> int:
    """This process's resident memory (Linux /proc/self/statm; the peak from getrusage elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_trial(runtime: Runtime, config: VigilConfig, count: int, name: str, inputs: tuple, args) -> dict:
    """``count`` cameras run as variant ``name`` for warm-up + measurement; the measured figures. ``inputs``: (main
    clip, sub-stream clip or None)."""
    from vigil.commands.run import serve, serve_overlapped

    variant = VARIANTS[name]
    cameras = camera_configs(
        camera_clips(count, inputs[0], inputs[1], args.fps, Path(args.work_dir)), args.detect_fps, variant
    )
    config = config.model_copy(update={"cameras": cameras})
    _, rules, settings = build_rules(config, runtime.enrollment, runtime.models)
    cascade = runtime.cascade if variant.new_features else None
    pipeline = new_watch_pipeline(config, runtime.analyzer, runtime.gallery, rules, runtime.sink, settings, cascade)
    publisher = LivePublisher(LiveHub(), pipeline)
    sources = [make_source(camera, config.reconnect) for camera in cameras]
    recorder, stop, marks = TrialRecorder(), threading.Event(), {}

    def mark(name: str) -> None:
        marks[name] = (machine_snapshot(), {s.stats().name: s.stats() for s in sources})
        if name == "start":
            recorder.start_s = marks[name][0]["mono_s"]
        else:
            recorder.end_s = marks[name][0]["mono_s"]
            stop.set()

    timers = [threading.Timer(args.warmup_seconds, mark, ("start",)),
              threading.Timer(args.warmup_seconds + args.seconds, mark, ("end",))]  # fmt: skip
    for source in sources:
        source.start()
    for timer in timers:
        timer.start()
    try:
        loop = serve_overlapped if variant.loop == "overlapped" else serve
        loop(pipeline, sources, config, stop, publisher, recorder.observe)
    finally:
        for timer in timers:
            timer.cancel()
        for source in sources:
            source.stop(timeout_s=2.0)
    report = trial_report(name, cameras, marks, recorder, args)
    report.update(cascade=cascade is not None, embeddings=pipeline.counters.embeddings,
                  cascade_fast_only=pipeline.counters.cascade_fast_only)  # fmt: skip
    return report


def trial_report(mode: str, cameras: list[CameraConfig], marks: dict, recorder: TrialRecorder, args) -> dict:
    (start, start_stats), (end, end_stats) = marks["start"], marks["end"]
    wall_s = end["mono_s"] - start["mono_s"]
    rows = []
    for camera in cameras:
        first, last = start_stats[camera.name], end_stats[camera.name]
        read, dropped = last.frames_read - first.frames_read, last.frames_dropped - first.frames_dropped
        analysed = recorder.analysed.get(camera.name, 0)
        wanted = wanted_frames(read, args.fps, camera.detect_fps)
        rows.append({"camera": camera.name, "frames_read": read, "frames_dropped": dropped,
                     "frames_wanted": wanted, "frames_analysed": analysed,
                     "frames_missed": max(wanted - analysed, 0), "analysed_fps": round(analysed / wall_s, 2),
                     "read_fps": round(read / wall_s, 2)})  # fmt: skip
    read, dropped = sum(r["frames_read"] for r in rows), sum(r["frames_dropped"] for r in rows)
    wanted, missed = sum(r["frames_wanted"] for r in rows), sum(r["frames_missed"] for r in rows)
    latency = latency_summary(recorder.latencies_s)
    cpu_s = end["process_cpu_s"] - start["process_cpu_s"]
    p95 = None if latency["p95_ms"] is None else latency["p95_ms"] / 1000.0
    return {
        "mode": mode,
        "cameras": len(cameras),
        "seconds": round(wall_s, 1),
        "frames_read": read,
        "frames_dropped": dropped,
        "dropped_pct": round(100.0 * dropped / max(read, 1), 2),
        "frames_wanted": wanted,
        "frames_missed": missed,
        "missed_pct": round(100.0 * missed / max(wanted, 1), 2),
        "frame_to_decision": latency,
        "frame_to_alert": latency_summary(recorder.alert_latencies_s),
        "process_cpu_cores": round(cpu_s / wall_s, 2),
        "cpu_ms_per_analysed_frame": round(1000.0 * cpu_s / max(sum(r["frames_analysed"] for r in rows), 1), 1),
        "rss_mib": end["rss_mib"],
        "machine_cpu_percent": busy_percent(start["machine_cpu_ticks"], end["machine_cpu_ticks"]),
        "loadavg_start": start["loadavg"],
        "loadavg_end": end["loadavg"],
        "holds_real_time": holds_real_time(missed, wanted, p95, args.max_drop_pct, args.p95_ms / 1000.0),
        "per_camera": rows,
    }


# ---- the command -------------------------------------------------------------------------------------------------
def run_cli(args: argparse.Namespace) -> int:
    modes = tuple(name.strip() for name in args.variants.split(","))
    unknown = [name for name in modes if name not in VARIANTS]
    if unknown:
        raise VigilError(f"--variants: unknown {', '.join(unknown)} (expected some of {', '.join(VARIANTS)})")
    work_dir = Path(args.work_dir)
    video = Path(args.video or data_path("video", "short_hamilton_clip.mp4"))
    main = prepared_clip(video, args.height, args.fps, work_dir) if args.height else video
    sub = prepared_clip(video, args.substream, args.fps, work_dir) if args.substream else None
    decode = [decode_cost(path) for path in (main, sub) if path is not None]
    for cost in decode:  # cores one camera's decoding takes at --fps
        cost["cores_at_fps"] = round(cost["cpu_ms_per_frame"] * args.fps / 1000.0, 3)
    if args.decode_only:
        report = {"command": command_line(args), "fps": args.fps, "decode": decode, "load": os.getloadavg()}
        print_decode(decode, args.fps)
        save_report(report, args.json)
        return 0
    data_dir = work_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    config = bench_config(load_config_or_default(args.config), args, data_dir)
    watchlist = args.watchlist or repo_root() / "examples/hamilton/watchlist.yaml"
    runtime = build_pipeline(config, watchlist)
    trials: list[dict] = []
    try:
        if args.find_max:
            best = find_max(runtime, config, modes, (main, sub), args, trials)
        else:
            for mode in modes:
                trials.append(run_trial(runtime, config, args.cameras, mode, (main, sub), args))
                print_trial(trials[-1])
            best = {}
    finally:
        runtime.close()
    report = {
        "command": command_line(args),
        "video": str(video), "main_stream": str(main), "detect_stream": None if sub is None else str(sub),
        "fps": args.fps, "detect_fps": args.detect_fps, "p95_bound_ms": args.p95_ms, "max_drop_pct": args.max_drop_pct,
        "variants": {name: VARIANTS[name].__dict__ for name in modes},
        "cascade_reject_cosine": None if runtime.cascade is None else runtime.cascade.reject_cosine,
        "detector_device": getattr(runtime.analyzer.detector, "device", "?"),
        "embed_provider": getattr(runtime.analyzer.embedder, "provider", "?"),
        "host": platform.node(), "cpu_count": os.cpu_count(),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "decode": decode, "trials": trials, "max_cameras_holding_real_time": best,
    }  # fmt: skip
    print_table(report)
    save_report(report, args.json)
    return 0


def command_line(args: argparse.Namespace) -> str:
    words = list(args.argv or [])
    return "vigil " + " ".join(words if words[:2] == ["bench", "streams"] else ["bench", "streams", *words])


def print_decode(decode: list[dict], fps: float) -> None:
    for cost in decode:
        print(f"  decode {Path(cost['file']).name}: {cost['cpu_ms_per_frame']} CPU ms/frame (single-threaded), "
              f"{cost['cores_at_fps']} cores at {fps:g} fps")  # fmt: skip


def find_max(runtime: Runtime, config: VigilConfig, modes, inputs: tuple, args, trials: list) -> dict:
    """The largest camera count that holds real time, per mode; the modes are tried at the same counts in turn."""
    verdicts: dict[str, dict[int, bool]] = {mode: {} for mode in modes}
    while True:
        pending = {mode: next_candidate(verdicts[mode], args.max_cameras) for mode in modes}
        counts = sorted({n for n in pending.values() if n is not None})
        if not counts:
            break
        count = counts[0]
        for mode in modes:
            if pending[mode] == count:
                trial = run_trial(runtime, config, count, mode, inputs, args)
                trials.append(trial)
                verdicts[mode][count] = trial["holds_real_time"]
                print_trial(trial)
    return {mode: max((n for n, ok in verdicts[mode].items() if ok), default=0) for mode in modes}


def print_trial(trial: dict) -> None:
    latency = trial["frame_to_decision"]
    print(
        f"{trial['mode']:>10} {trial['cameras']:>3} cams  dropped {trial['dropped_pct']:>5.1f} %  "
        f"missed {trial['missed_pct']:>5.1f} %  "
        f"p50 {latency['p50_ms']} p95 {latency['p95_ms']} p99 {latency['p99_ms']} ms  "
        f"cpu {trial['process_cpu_cores']} cores  rss {trial['rss_mib']} MiB  load {trial['loadavg_end'][0]}  "
        f"{'REAL TIME' if trial['holds_real_time'] else 'behind'}",
        flush=True,
    )


def print_table(report: dict) -> None:
    print(f"\nstreams: {report['main_stream']} at {report['fps']:g} fps"
          f"{', detection on ' + report['detect_stream'] if report['detect_stream'] else ''}; "
          f"p95 bound {report['p95_bound_ms']} ms, < {report['max_drop_pct']} % dropped")  # fmt: skip
    print_decode(report["decode"], report["fps"])
    print(f"{'mode':>10} {'cams':>4} {'drop%':>6} {'miss%':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'alert p95':>9} "
          f"{'fps/cam':>7} {'cores':>5} {'RSS MiB':>7} {'load':>5}  verdict")  # fmt: skip
    for trial in report["trials"]:
        latency, alert = trial["frame_to_decision"], trial["frame_to_alert"]
        fps = np.mean([row["analysed_fps"] for row in trial["per_camera"]])
        print(f"{trial['mode']:>10} {trial['cameras']:>4} {trial['dropped_pct']:>6.1f} {trial['missed_pct']:>6.1f} "
              f"{latency['p50_ms']!s:>7} "
              f"{latency['p95_ms']!s:>7} {latency['p99_ms']!s:>7} {alert['p95_ms']!s:>9} {fps:>7.1f} "
              f"{trial['process_cpu_cores']:>5} {trial['rss_mib']:>7} {trial['loadavg_end'][0]:>5}  "
              f"{'real time' if trial['holds_real_time'] else 'behind'}")  # fmt: skip
    if report["max_cameras_holding_real_time"]:
        print("largest camera count holding real time:", json.dumps(report["max_cameras_holding_real_time"]))
