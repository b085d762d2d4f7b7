"""`vigil run --config C`: watch every camera until Ctrl-C or SIGTERM, then shut down cleanly (sinks flushed).

One capture thread per camera (two for a camera with a detection sub-stream: vigil/substream.py) feeds a bounded
latest-frame queue. By default (``stages.overlapped``) detection and recognition run in two threads joined by a
bounded queue, with deadline batching (:class:`vigil.stages.OverlappedRunner`); otherwise :func:`serve` takes at most
one frame per camera per round and runs the batch through the whole pipeline, one batch after the other. Either way
a status line per camera is printed every ``status_interval_s``; sinks that take camera state (MQTT's retained
``<camera>/status``) get it at the same interval and within a second of a camera going up or down
(:class:`StatusReporter`). A dead camera never blocks anything: ``get`` has a timeout and capture threads reconnect
on their own.

The service (``server:`` in the config, on by default on 127.0.0.1:8080): the HTTP API runs in its own thread
(vigil/server/runner.py) and reads what this loop publishes after each batch (vigil/live_publish.py); between
batches this loop also applies watchlist changes and answers the API's photo checks (vigil/watchlist_reload.py).
The retention job runs in its own thread. All of them stop with the run's stop event.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from vigil.alerts import AlertDispatcher, CameraStatusSink
from vigil.alerts.outbox import OutboxStatus
from vigil.analyzer import FaceAnalyzer
from vigil.capture import UP, CameraStats
from vigil.config import VigilConfig, load_config
from vigil.errors import ConfigError
from vigil.filemode import file_creation_mode, readable_by_others
from vigil.live import CameraStatus, LiveHub
from vigil.live_publish import LivePublisher, camera_status, detail_counters
from vigil.pipeline import FrameResult, WatchPipeline
from vigil.redact import mask_url
from vigil.runtime import LoadedModels, build_pipeline, check_inputs, enroll
from vigil.server.context import ServiceInfo
from vigil.server.runner import ServerThread, is_loopback, refuse_open_without_users
from vigil.stages import BatchHook, OverlappedRunner, StageStats, overlap_wanted
from vigil.store.audit import AuditLog
from vigil.store.db import Database
from vigil.store.retention import RetentionJob
from vigil.store.users import UserStore
from vigil.substream import make_source
from vigil.types import Frame
from vigil.watchlist import EnrollmentResult
from vigil.watchlist_reload import WatchlistReloader, photo_checker

log = logging.getLogger("vigil.run")


class CameraFeed(Protocol):
    """What the loops take from a camera (vigil.capture.CameraSource, vigil.substream.PairedCameraSource)."""

    def get(self, timeout_s: float) -> Frame | None: ...

    def stats(self) -> CameraStats: ...


IDLE_WAIT_S = 0.01  # wait when no camera had a frame, so the loop never spins
PUBLISH_INTERVAL_S = 1.0  # camera status and counters for the API at least this often


def run_cli(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    watchlist = args.watchlist or config.watchlist
    if watchlist is None:
        raise ConfigError(f"{args.config}: watchlist: no watchlist given (set it in the config or pass --watchlist)")
    if not config.cameras:
        raise ConfigError(f"{args.config}: cameras: no camera configured")
    check_inputs(config, watchlist)  # data_dir, the watchlist and its photos: a refusal writes nothing
    if config.data_access == "private" and readable_by_others(config.data_dir):
        log.warning("data_dir %s is readable by other users: chmod 700 it (vigil creates it 0700)", config.data_dir)
    with file_creation_mode(config.data_access):
        return _run(config, watchlist, str(args.config))


def _run(config: VigilConfig, watchlist: Path, config_path: str) -> int:
    db = Database.in_data_dir(config.data_dir)
    if config.server.enabled:  # before the models load: a refusal should cost no time
        refuse_open_without_users(config.server, UserStore(db).count(), config_path)
    runtime = build_pipeline(config, watchlist)  # refuses a watchlist that enrols nobody
    pipeline, analyzer, models = runtime.pipeline, runtime.analyzer, runtime.models
    hub = LiveHub()

    def reenroll(path: Path) -> EnrollmentResult:
        return enroll(config, path, analyzer, models, prune_cache=True)

    reloader = WatchlistReloader(
        watchlist, reenroll, photo_checker(analyzer, config.detector.min_face_px), hub, runtime.enrollment
    )
    stop = threading.Event()
    _install_signal_handlers(stop)
    sources = [make_source(camera, config.reconnect) for camera in config.cameras]
    service = Service(config, db, hub, watchlist, models)
    try:
        service.start()
        for source in sources:
            source.start()
        publisher = LivePublisher(hub, pipeline, reloader)
        if runs_overlapped(config, runtime.analyzer):
            serve_overlapped(pipeline, sources, config, stop, publisher)
        else:
            serve(pipeline, sources, config, stop, publisher)
    finally:
        service.stop()
        for source in sources:
            source.stop(timeout_s=2.0)
        pipeline.close()
        db.close()
        log.info("stopped: %d frames, %d alerts", pipeline.counters.frames, pipeline.counters.alerts)
    return 0


class Service:
    """The API server thread and the retention job of one `vigil run`."""

    def __init__(self, config: VigilConfig, db: Database, hub: LiveHub, watchlist: Path, models: LoadedModels) -> None:
        self.config, self.db, self.hub = config, db, hub
        self.retention = RetentionJob(db, config.data_dir, config.retention, AuditLog(db))
        self.server: ServerThread | None = None
        if config.server.enabled:
            from vigil.server.app import create_app
            from vigil.server.context import ServiceContext

            ctx = ServiceContext.build(config, hub, db, service_info(config, models), watchlist=watchlist)
            ctx.retention_job = self.retention
            self.server = ServerThread(create_app(ctx), config.server)

    def start(self) -> None:
        self.retention.start()
        if self.server is not None:
            self.server.start()
            if not is_loopback(self.config.server.host) and self.config.server.tls is None:
                log.warning(
                    "server: %s is reachable from other machines over plain HTTP: passwords, cookies "
                    "and tokens travel in clear (set server.tls: {cert, key})",
                    self.config.server.listen,
                )

    def stop(self) -> None:
        self.hub.closed.set()
        if self.server is not None:
            self.server.stop()
        self.retention.stop()


def service_info(config: VigilConfig, models: LoadedModels) -> ServiceInfo:
    specs = [models.detector, models.recognizer, *models.recognizer_members]
    if models.landmarks is not None:
        specs.append(models.landmarks)
    alerts = config.alerts
    sinks = [
        name
        for name, on in (
            ("sqlite", alerts.sqlite),
            ("webhook", alerts.webhook is not None),
            ("mqtt", alerts.mqtt is not None),
            ("jsonl", alerts.jsonl is not None),
            ("console", alerts.console),
        )
        if on
    ]
    return ServiceInfo(
        models=tuple({"kind": spec.kind, "name": spec.name, "sha256": spec.sha256} for spec in specs),
        sinks=tuple(sinks),
        cameras=tuple({"name": c.name, "source": mask_url(c.source)} for c in config.cameras),
    )


def _install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum, _frame) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def runs_overlapped(config: VigilConfig, analyzer: FaceAnalyzer) -> bool:
    """Whether this run overlaps the stages (``stages.overlapped``; auto: a model on a GPU), said in one line."""
    device = str(getattr(analyzer.detector, "device", "cpu"))
    provider = str(getattr(analyzer.embedder, "provider", "CPUExecutionProvider"))
    overlapped = overlap_wanted(config.stages.overlapped, device, provider)
    log.info(
        "stages: %s (detector on %s, recognizer on %s)", "overlapped" if overlapped else "serial", device, provider
    )
    return overlapped


def serve(
    pipeline: WatchPipeline,
    sources: Sequence[CameraFeed],
    config: VigilConfig,
    stop: threading.Event,
    publisher: LivePublisher | None = None,
    on_results: BatchHook | None = None,
) -> None:
    """The serial service loop: gather, process, publish, report; returns when ``stop`` is set."""
    reporter = StatusReporter(sources, pipeline.sink, publisher, config.status_interval_s, time.monotonic())
    while not stop.is_set():
        frames = [frame for source in sources if (frame := source.get(timeout_s=0.0)) is not None]
        if frames:
            started = time.perf_counter()
            results = pipeline.process(frames)
            seconds = time.perf_counter() - started
            if publisher is not None:
                publisher.after_batch(results, seconds)
            if on_results is not None:
                on_results(results, seconds)
        else:
            stop.wait(IDLE_WAIT_S)
        if publisher is not None:
            publisher.between_batches()
        reporter.step(time.monotonic())


def serve_overlapped(
    pipeline: WatchPipeline,
    sources: Sequence[CameraFeed],
    config: VigilConfig,
    stop: threading.Event,
    publisher: LivePublisher | None = None,
    on_results: BatchHook | None = None,
) -> StageStats:
    """The overlapped service loop (:class:`vigil.stages.OverlappedRunner`); returns its counters when ``stop``
    is set."""
    runner = OverlappedRunner(
        pipeline,
        sources,
        config.detector.batch_size,
        config.stages.batch_deadline_s,
        config.stages.embed_queue_batches,
        stop,
    )
    reporter = StatusReporter(sources, pipeline.sink, publisher, config.status_interval_s, time.monotonic())
    reporter.stage_stats = runner.stats

    def after(results: list[FrameResult], seconds: float) -> None:
        if publisher is not None:
            publisher.after_batch(results, seconds)
        if on_results is not None:
            on_results(results, seconds)

    runner.on_results = after
    runner.between_batches = publisher.between_batches if publisher is not None else None
    runner.periodic = reporter.step
    runner.run()
    return runner.stats()


def log_stages(stats: StageStats) -> None:
    log.info(
        "stages: %d detection batches (%d frames), %d recognition batches, queue %d/%d (max %d), "
        "detection waited %.1f s for recognition",
        stats.detect_batches,
        stats.detect_frames,
        stats.recognise_batches,
        stats.queue_depth,
        stats.queue_size,
        stats.queue_max_depth,
        stats.detect_waited_s,
    )


class StatusReporter:
    """Every camera's state, read as :class:`~vigil.live.CameraStatus` once per ``PUBLISH_INTERVAL_S`` (at most
    ``interval_s``), goes to the API's hub (``publisher``), to the sink when it takes camera state (MQTT's retained
    ``<camera>/status``) at each status interval and as soon as a camera's state changed (up, STALLED, AUTH-FAILED,
    DOWN), and as one log line per camera every ``interval_s``, followed by one line per outbox-delivered sink
    (webhook, MQTT: rows waiting, given up, how long its receiver has been down). With the overlapped stages
    (``stage_stats``) their queue counters go to the hub and the log too, and two-source cameras' pairing counters
    to the hub."""

    def __init__(
        self,
        sources: Sequence[CameraFeed],
        sink: object,
        publisher: LivePublisher | None,
        interval_s: float,
        now_s: float,
    ) -> None:
        self.sources = sources
        self.sink = sink if isinstance(sink, CameraStatusSink) else None
        self.dispatcher = sink if isinstance(sink, AlertDispatcher) else None
        self.publisher = publisher
        self.interval_s = interval_s
        self.check_interval_s = min(PUBLISH_INTERVAL_S, interval_s)
        self._next_line_s = now_s + interval_s
        self._next_check_s = now_s
        self._states: dict[str, str] = {}  # camera -> state (up, STALLED, AUTH-FAILED, DOWN), as last read
        self.stage_stats: Callable[[], StageStats] | None = None

    def step(self, now_s: float) -> None:
        line_due = now_s >= self._next_line_s
        polling = self.sink is not None or self.publisher is not None
        if not line_due and (not polling or now_s < self._next_check_s):
            return
        statuses = [camera_status(source.stats()) for source in self.sources]
        stages = self.stage_stats() if self.stage_stats is not None else None
        if self.publisher is not None:  # as the hub keeps them: with `since`
            statuses = self.publisher.publish_status(statuses, stages, detail_counters(self.sources))
        states = {status.name: status.condition for status in statuses}
        changed, self._states = states != self._states, states
        self._next_check_s = now_s + self.check_interval_s
        if line_due:
            for status in statuses:
                log_status(status)
            for outbox in self.dispatcher.outbox_statuses() if self.dispatcher is not None else []:
                log_outbox(outbox)
            if stages is not None:
                log_stages(stages)
            self._next_line_s = now_s + self.interval_s
        if self.sink is not None and (line_due or changed):
            self.sink.publish_camera_status(statuses)


def log_status(status: CameraStatus) -> None:
    """One line per camera: its state (up, STALLED, AUTH-FAILED, DOWN) and counters; a warning unless up."""
    up = status.condition == UP
    logging.getLogger(f"vigil.camera.{status.name}").log(
        logging.INFO if up else logging.WARNING,
        "%s fps=%.1f read=%d dropped=%d late=%d reconnects=%d%s",
        status.condition,
        status.fps,
        status.frames_read,
        status.frames_dropped,
        status.frames_late,
        status.reconnects,
        f" last_error={status.last_error}" if status.last_error and not up else "",
    )


def log_outbox(status: OutboxStatus) -> None:
    """One line per outbox-delivered sink: rows waiting and given up, and whether its receiver is down."""
    down = status.receiver_down_s is not None
    trouble = down or status.dead > 0
    log.log(
        logging.WARNING if trouble else logging.INFO,
        "alerts %s: %s pending=%d dead=%d delivered=%d%s",
        status.channel,
        f"receiver DOWN for {status.receiver_down_s:.0f} s" if status.receiver_down_s is not None else "up",
        status.pending,
        status.dead,
        status.delivered,
        " (re-send the dead ones: vigil outbox retry)" if status.dead else "",
    )
