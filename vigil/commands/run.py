"""`vigil run --config C`: watch every camera until Ctrl-C or SIGTERM, then shut down cleanly (sinks flushed).

One capture thread per camera feeds a bounded latest-frame queue; this loop takes at most one frame per camera per
round, runs the batch through the pipeline (detection batched across cameras) and prints a status line per camera
every ``status_interval_s``. A dead camera never blocks the loop: ``get`` has a timeout and capture threads
reconnect on their own.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

from vigil.capture import CameraSource, CameraStats
from vigil.config import VigilConfig, load_config
from vigil.errors import ConfigError
from vigil.pipeline import WatchPipeline
from vigil.runtime import build_pipeline

log = logging.getLogger("vigil.run")
IDLE_WAIT_S = 0.01  # wait when no camera had a frame, so the loop never spins


def run_cli(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    watchlist = args.watchlist or config.watchlist
    if watchlist is None:
        raise ConfigError(f"{args.config}: watchlist: no watchlist given (set it in the config or pass --watchlist)")
    if not config.cameras:
        raise ConfigError(f"{args.config}: cameras: no camera configured")
    pipeline = build_pipeline(config, watchlist).pipeline
    stop = threading.Event()
    _install_signal_handlers(stop)
    sources = [CameraSource(camera, config.reconnect) for camera in config.cameras]
    try:
        for source in sources:
            source.start()
        serve(pipeline, sources, config, stop)
    finally:
        for source in sources:
            source.stop(timeout_s=2.0)
        pipeline.close()
        log.info("stopped: %d frames, %d alerts", pipeline.counters.frames, pipeline.counters.alerts)
    return 0


def _install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum, _frame) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def serve(pipeline: WatchPipeline, sources: list[CameraSource], config: VigilConfig, stop: threading.Event) -> None:
    """The service loop: gather, process, report; returns when ``stop`` is set."""
    next_status = time.monotonic() + config.status_interval_s
    while not stop.is_set():
        frames = [frame for source in sources if (frame := source.get(timeout_s=0.0)) is not None]
        if frames:
            pipeline.process(frames)
        else:
            stop.wait(IDLE_WAIT_S)
        now = time.monotonic()
        if now >= next_status:
            for source in sources:
                log_status(source.stats())
            next_status = now + config.status_interval_s


def log_status(stats: CameraStats) -> None:
    state = "up" if stats.connected else "DOWN"
    logging.getLogger(f"vigil.camera.{stats.name}").info(
        "%s fps=%.1f read=%d dropped=%d reconnects=%d%s",
        state,
        stats.fps,
        stats.frames_read,
        stats.frames_dropped,
        stats.reconnects,
        f" last_error={stats.last_error}" if stats.last_error and not stats.connected else "",
    )
