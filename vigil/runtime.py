"""The one factory: a validated config -> models, face analyzer, gallery, rules engine, sinks and the pipeline.

Every entry point (``vigil run``, ``vigil process``, ``vigil bench pipeline``, and later the HTTP service) builds its
pipeline with :func:`build_pipeline`, so a stage or sink added to the config reaches all of them. An entry point that
needs something else changes its config first (``config.model_copy(update=...)``: only what differs) or passes its
own sink. ``vigil enroll`` uses the first half (:func:`resolve_models`, :func:`build_analyzer`, :func:`enroll`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vigil.alerts import AlertDispatcher, Sink
from vigil.analyzer import FaceAnalyzer
from vigil.camera_settings import CameraSettingsTable, camera_settings_table
from vigil.cascade import RecognitionCascade
from vigil.config import RulesConfig, VigilConfig, data_dir_problem, load_config
from vigil.embed_schedule import EmbedSchedule
from vigil.errors import ConfigError
from vigil.models import (
    ModelRegistry,
    ModelSpec,
    calibrated_cascade_reject,
    calibrated_match_threshold,
    read_members,
)
from vigil.pipeline import WatchPipeline
from vigil.refine import LandmarkRefiner, build_landmark_refiner
from vigil.rules import Gallery, RulesEngine
from vigil.watchlist import (
    EmbeddingCache,
    Enroller,
    EnrollmentResult,
    Watchlist,
    file_problems,
    load_watchlist,
    unusable_people,
)

log = logging.getLogger("vigil.runtime")


@dataclass(frozen=True)
class LoadedModels:
    detector: ModelSpec
    recognizer: ModelSpec
    recognizer_members: tuple[ModelSpec, ...] = ()  # an ensemble's members: their templates shape its embedding too
    landmarks: ModelSpec | None = None  # the landmark refiner (None: detector.refine_landmarks is off)


def load_config_or_default(path: Path | None) -> VigilConfig:
    """The config at ``path``, or the built-in defaults when no file is given."""
    return VigilConfig() if path is None else load_config(path)


def resolve_models(config: VigilConfig, registry: ModelRegistry | None = None) -> LoadedModels:
    """Find (and checksum-verify) the detector and recognizer the config asks for."""
    registry = registry or ModelRegistry()
    recognizer = registry.resolve("recognizer", config.recognizer.model)
    members = (
        ()
        if recognizer.format != "ensemble"
        else tuple(
            registry.named(member.model, "recognizer", where=f"{recognizer.path}: members")
            for member in read_members(recognizer.path)
        )
    )
    landmarks = (
        registry.resolve("landmarks", config.detector.landmark_model) if config.detector.refine_landmarks else None
    )
    return LoadedModels(
        detector=registry.resolve("detector", config.detector.model),
        recognizer=recognizer,
        recognizer_members=members,
        landmarks=landmarks,
    )


def build_analyzer(config: VigilConfig, models: LoadedModels) -> FaceAnalyzer:
    """Detector + aligner + embedder as the config says (heavy imports happen here, not at import time)."""
    from vigil.align import Aligner
    from vigil.detect import FaceDetector, tile_spec
    from vigil.recognizer import build_embedder

    detector = FaceDetector(
        models.detector.path,
        imgsz=config.detector.imgsz or max(models.detector.input_size),
        conf_threshold=config.detector.conf_threshold,
        nms_iou=config.detector.nms_iou,
        device=config.detector.device,
        batch_size=config.detector.batch_size,
        tiling=tile_spec(config.detector.tiling),
        model_format=models.detector.format,
    )
    template = models.recognizer.alignment_template
    if template is None:
        raise ConfigError(f"{models.recognizer.path}: the manifest gives no alignment_template for this recognizer")
    aligner = Aligner(template, models.recognizer.input_size[0])
    embedder = build_embedder(
        models.recognizer,
        providers=tuple(config.recognizer.providers),
        batch_size=config.recognizer.batch_size,
        flip_average=config.recognizer.flip_average,
    )
    return FaceAnalyzer(detector, aligner, embedder, config.detector.min_face_px, build_refiner(models, config))


def build_refiner(models: LoadedModels, config: VigilConfig) -> LandmarkRefiner | None:
    """The landmark refiner for ``models.landmarks`` (None when refinement is off)."""
    if models.landmarks is None:
        return None
    return build_landmark_refiner(models.landmarks, providers=tuple(config.recognizer.providers))


def enrolment_cache_key(config: VigilConfig, models: LoadedModels) -> str:
    """Everything that changes a photo's embedding: both models' checksums, the alignment templates (an ensemble's
    and its members'), the flip mode."""
    import hashlib

    templates = [spec.alignment_template for spec in (models.recognizer, *models.recognizer_members)]
    template_text = ";".join(
        "none" if template is None else ",".join(f"{v:.3f}" for v in np.asarray(template, dtype=float).ravel())
        for template in templates
    )
    return (
        f"{models.recognizer.sha256 or models.recognizer.path}:{models.detector.sha256 or models.detector.path}"
        f":template-{hashlib.sha256(template_text.encode()).hexdigest()[:12]}"
        f"{':landmarks-' + (models.landmarks.sha256 or str(models.landmarks.path))[:12] if models.landmarks else ''}"
        f"{':flip' if config.recognizer.flip_average else ''}"
    )


def enroll(
    config: VigilConfig,
    watchlist_path: Path,
    analyzer: FaceAnalyzer,
    models: LoadedModels,
    strict: bool = False,
    prune_cache: bool = False,
) -> EnrollmentResult:
    """Embed the watchlist photos (cached in the data folder under the models' checksums); ``prune_cache`` drops
    the cached embeddings of photos the watchlist no longer lists."""
    watchlist = load_watchlist(watchlist_path)
    cache = EmbeddingCache(config.data_dir / "enroll_cache.json", enrolment_cache_key(config, models))
    enroller = Enroller(analyzer, cache, config.detector.min_face_px)
    result = enroller.enroll(watchlist, strict=strict, prune_cache=prune_cache)
    log.info(
        "%s: %d people enrolled (%d photos embedded, %d from cache, %d skipped)",
        watchlist_path,
        len(result.people),
        result.photos_embedded,
        result.photos_from_cache,
        len(result.problems),
    )
    return result


def effective_rules(config: VigilConfig, models: LoadedModels) -> RulesConfig:
    """The config's rules with the match threshold filled in from the recognizer's calibration when not set.

    Cosine scales differ between recognizers (dlib's same/different boundary on LFW is about 0.91), so a fixed
    global default would be wrong for every model but one.
    """
    if config.rules.match_threshold is not None:
        return config.rules
    flip = config.recognizer.flip_average
    calibrated = calibrated_match_threshold(models.recognizer, flip)
    if calibrated is None:
        mode = "flip-averaged (recognizer.flip_average: true)" if flip else "single-chip"
        raise ConfigError(
            f"rules.match_threshold: not set, and {models.recognizer.path} has no calibrated {mode} match threshold "
            "in the manifest"
        )
    return config.rules.model_copy(update={"match_threshold": float(calibrated)})


def build_embed_schedule(config: VigilConfig) -> EmbedSchedule:
    """The recognizer section's re-embedding policy as the pipeline's value object."""
    recognizer = config.recognizer
    return EmbedSchedule(
        every_frame_hits=recognizer.embed_every_frame_hits,
        interval_frames=recognizer.reembed_interval_frames,
        quality_gain=recognizer.reembed_quality_gain,
    )


def build_rules(
    config: VigilConfig, enrollment: EnrollmentResult, models: LoadedModels
) -> tuple[Gallery, RulesEngine, CameraSettingsTable]:
    """The gallery, the rules engine, and each camera's effective settings (its overrides over the resolved
    globals), which the engine and the pipeline share."""
    rules = effective_rules(config, models)
    settings = camera_settings_table(config.cameras, rules, config.detector.min_face_px)
    log.info("rules: match_threshold %.3f, margin %.3f", rules.match_threshold, rules.margin)
    for name, camera in settings.cameras.items():
        if camera.overridden:
            own = ", ".join(f"{key} {getattr(camera, key)}" for key in sorted(camera.overridden))
            log.info("camera %s: its own %s", name, own)
    engine = RulesEngine(rules, enrollment.people, rules.vote_window_hits, settings.rules_for(rules))
    return Gallery.from_people(enrollment.people), engine, settings


def build_cascade(config: VigilConfig, models: LoadedModels, analyzer: FaceAnalyzer) -> RecognitionCascade | None:
    """The recognition cascade (vigil/cascade.py) when it is on and the recognizer is an ensemble; None otherwise
    (one log line says why when it was asked for but cannot run)."""
    from vigil.ensemble import EnsembleEmbedder

    recognizer = config.recognizer
    embedder = analyzer.embedder
    if not recognizer.cascade or not isinstance(embedder, EnsembleEmbedder):
        return None
    reject = recognizer.cascade_reject_cosine
    if reject is None:
        reject = calibrated_cascade_reject(models.recognizer, recognizer.flip_average)
    if reject is None:
        log.info("recognizer: no calibrated cascade_reject_cosine for %s: every face gets the whole ensemble",
                 models.recognizer.name)  # fmt: skip
        return None
    log.info("recognizer: cascade on: %s first, the whole ensemble for faces scoring >= %.4f on it",
             embedder.fast_member, reject)  # fmt: skip
    return RecognitionCascade(embedder, reject)


@dataclass(frozen=True)
class Runtime:
    """Everything one config builds: the models, the face stages, the watchlist's gallery and rules, the sink, and a
    pipeline over them. Built by :func:`build_pipeline`; close it (or the sink) when done.

    ``new_pipeline()`` makes another :class:`WatchPipeline` over the same parts (fresh trackers and counters, the
    same rules engine, so cooldowns hold across pipelines): ``vigil process`` starts one per video.
    """

    config: VigilConfig
    models: LoadedModels
    analyzer: FaceAnalyzer
    enrollment: EnrollmentResult
    gallery: Gallery
    rules: RulesEngine
    sink: Sink
    pipeline: WatchPipeline
    camera_settings: CameraSettingsTable
    cascade: RecognitionCascade | None = None

    def new_pipeline(self) -> WatchPipeline:
        return new_watch_pipeline(
            self.config, self.analyzer, self.gallery, self.rules, self.sink, self.camera_settings, self.cascade
        )

    def close(self) -> None:
        """Flush and close the sinks."""
        self.sink.close()


def new_watch_pipeline(
    config: VigilConfig,
    analyzer: FaceAnalyzer,
    gallery: Gallery,
    rules: RulesEngine,
    sink: Sink,
    camera_settings: CameraSettingsTable,
    cascade: RecognitionCascade | None = None,
) -> WatchPipeline:
    """The per-batch pipeline over built parts, wired as the config says (cameras and their settings, tracker,
    snapshots, schedule, the recognition cascade)."""
    return WatchPipeline(
        analyzer,
        gallery,
        rules,
        sink,
        {camera.name: camera for camera in config.cameras},
        config.tracker,
        config.data_dir if config.alerts.snapshots else None,
        embed_schedule=build_embed_schedule(config),
        camera_settings=camera_settings,
        update_snapshot=config.alerts.update_snapshot,
        cascade=cascade,
    )


def check_inputs(config: VigilConfig, watchlist_path: Path) -> Watchlist:
    """What can be checked before any model loads (so a refusal costs no time and writes nothing): the data folder,
    the watchlist, and that its photo files leave someone to enrol (:func:`refuse_empty_watchlist`)."""
    problem = data_dir_problem(config.data_dir)
    if problem:
        raise ConfigError(f"data_dir: {problem}")
    watchlist = load_watchlist(watchlist_path)
    problems = file_problems(watchlist)
    refuse_empty_watchlist(config, watchlist, unusable_people(watchlist, problems), [str(p) for p in problems])
    return watchlist


def refuse_empty_watchlist(
    config: VigilConfig, watchlist: Watchlist, unenrolled: list[str], problems: list[str] | None = None
) -> None:
    """ConfigError when nobody on the watchlist can be watched, unless ``allow_empty_watchlist`` says so: a service
    that runs forever watching no one looks healthy and protects nobody. ``problems`` are logged first."""
    if config.allow_empty_watchlist or len(unenrolled) < len(watchlist.people):
        return
    for problem in problems or []:
        log.warning("%s", problem)
    if not watchlist.people:
        raise ConfigError(f"{watchlist.path}: people: the watchlist lists no one (allow_empty_watchlist: true starts)")
    raise ConfigError(
        f"{watchlist.path}: no one could be enrolled: none of the {len(watchlist.people)} people has a usable photo "
        "(see the warnings above; allow_empty_watchlist: true starts anyway)"
    )


def build_pipeline(config: VigilConfig, watchlist: Path, sink: Sink | None = None) -> Runtime:
    """Build every stage from ``config``, enrol ``watchlist``, and wire the pipeline.

    Refuses (ConfigError) a watchlist that enrols no one unless ``config.allow_empty_watchlist``; the cheap checks
    come first (:func:`check_inputs`). ``sink``: where events go; None builds the sinks ``config.alerts`` names
    (:meth:`AlertDispatcher.from_config`, after enrolment, so a failing model or watchlist leaves no half-opened
    sink). The returned runtime owns the sink: :meth:`Runtime.close` closes it.
    """
    checked = check_inputs(config, watchlist)
    models = resolve_models(config)
    analyzer = build_analyzer(config, models)
    enrollment = enroll(config, watchlist, analyzer, models)
    refuse_empty_watchlist(config, checked, enrollment.unenrolled)
    gallery, rules, settings = build_rules(config, enrollment, models)
    if sink is None:
        sink = AlertDispatcher.from_config(config.alerts, config.data_dir)
    cascade = build_cascade(config, models, analyzer)
    pipeline = new_watch_pipeline(config, analyzer, gallery, rules, sink, settings, cascade)
    return Runtime(config, models, analyzer, enrollment, gallery, rules, sink, pipeline, settings, cascade)
