"""The recognition cascade (vigil/cascade.py): the fast member settles clear strangers, everyone else gets exactly the
ensemble's embedding, person votes come only from the ensemble, and the pipeline's alerts do not change."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_pipeline import PEOPLE, ScriptedAnalyzer, basis, frames_showing, unit
from vigil.alerts import AlertDispatcher, JsonlSink
from vigil.analyzer import StageTimes
from vigil.camera_settings import CameraSettings, CameraSettingsTable
from vigil.cascade import RecognitionCascade, best_scores, fast_gallery, needs_full
from vigil.config import RulesConfig, TrackerConfig
from vigil.embed import unit_rows
from vigil.pipeline import WatchPipeline
from vigil.rules import Gallery, RulesEngine, person_scores
from vigil.types import AlignedFace

FAST_DIMS = 4  # the scripted "fast member" sees the first four dimensions of the scripted 8-d embeddings


def scripted_vector(code: int) -> np.ndarray:
    """The 8-d ensemble embedding tests/test_pipeline.py gives a face showing ``code``."""
    return unit(basis(code - 1) + 0.1 * basis(5)) if code != 9 else unit(basis(6) + basis(7))


class ScriptedEnsemble:
    """Chips carry their code in pixel (0, 0); the fast member's embedding is the first FAST_DIMS dimensions."""

    def __init__(self) -> None:
        self.completed = 0

    def embed_fast(self, chips: np.ndarray) -> np.ndarray:
        return self.fast_part(np.stack([scripted_vector(int(c[0, 0, 0])) for c in chips]))

    def complete(self, chips: np.ndarray, fast: np.ndarray) -> np.ndarray:
        self.completed += len(chips)
        return np.stack([scripted_vector(int(c[0, 0, 0])) for c in chips])

    def fast_part(self, vectors: np.ndarray) -> np.ndarray:
        return unit_rows(np.asarray(vectors, np.float32)[:, :FAST_DIMS])


class AligningAnalyzer(ScriptedAnalyzer):
    times = StageTimes()

    def align_faces(self, items):
        chips = []
        for image, face in items:
            chip = np.zeros((8, 8, 3), np.uint8)
            chip[0, 0, 0] = image[0, 0, 0]
            chips.append(AlignedFace(face, chip, 0.8))
        return chips


def test_best_scores_is_the_gallerys_best_person_score():
    gallery = Gallery.from_people(PEOPLE)
    queries = unit_rows(np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32))
    expected = [person_scores(q, gallery).max() for q in queries]
    np.testing.assert_allclose(best_scores(queries, gallery), expected, atol=1e-6)
    assert best_scores(queries, Gallery.from_people([])).tolist() == [-1.0] * 5
    assert needs_full(np.array([0.2, 0.5, 0.7]), 0.5).tolist() == [False, True, True]


def test_only_faces_at_or_above_the_reject_cosine_run_the_whole_ensemble():
    embedder = ScriptedEnsemble()
    cascade = RecognitionCascade(embedder, reject_cosine=0.3)
    chips = [np.full((8, 8, 3), code, np.uint8) for code in (1, 9, 2, 9)]
    aligned = [AlignedFace(None, chip, 0.8) for chip in chips]  # type: ignore[arg-type]
    out = cascade.embed(aligned, Gallery.from_people(PEOPLE))
    assert [e is not None for e in out] == [True, False, True, False] and embedder.completed == 2
    np.testing.assert_allclose(out[0].vector, scripted_vector(1))  # type: ignore[union-attr]
    assert fast_gallery(Gallery.from_people(PEOPLE), embedder).prototypes.shape == (3, FAST_DIMS)


def run(tmp_path, codes, cascade: bool, unknown: bool = False, camera_threshold: float | None = None):
    rules = RulesConfig(
        match_threshold=0.5, margin=0.05, min_hits=2, confirm_hits=4, cooldown_s=60, unknown_events=unknown
    )
    default = CameraSettings(0.5, 0.05, 20, unknown)
    own = {} if camera_threshold is None else {"cam": CameraSettings(camera_threshold, 0.05, 20, unknown)}
    events_path = tmp_path / f"events-{cascade}.jsonl"
    pipeline = WatchPipeline(
        AligningAnalyzer(),
        Gallery.from_people(PEOPLE),
        RulesEngine(rules, PEOPLE),
        AlertDispatcher([JsonlSink(events_path)]),
        {},
        TrackerConfig(),
        None,
        cascade=RecognitionCascade(ScriptedEnsemble(), 0.3) if cascade else None,
        camera_settings=CameraSettingsTable(default, own),
    )
    frames = frames_showing(codes)
    for start in range(0, len(frames), 4):
        pipeline.process(frames[start : start + 4])
    pipeline.close()
    return [json.loads(line) for line in events_path.read_text().splitlines()], pipeline.counters


@pytest.mark.parametrize(
    "codes", [[1] * 8, [2] * 8, [3] * 8, [1] * 8 + [2] * 8], ids=["deny", "vip", "allow", "switch"]
)
def test_the_cascade_leaves_the_alerts_unchanged(tmp_path, codes):
    with_cascade, counters = run(tmp_path, codes, cascade=True)
    without, _ = run(tmp_path, codes, cascade=False)
    key = lambda e: (e["person_id"], e["stage"], e["frame_index"], e["track_id"])  # noqa: E731
    assert [key(e) for e in with_cascade] == [key(e) for e in without]
    assert counters.cascade_fast_only == 0 and counters.cascade_full == len(codes)


def test_a_stranger_is_settled_by_the_fast_member_and_still_raises_an_unknown_face_event(tmp_path):
    events, counters = run(tmp_path, [9] * 8, cascade=True, unknown=True)
    assert counters.cascade_fast_only == 8 and counters.cascade_full == 0
    assert [(e["type"], e["frame_index"], e["score"]) for e in events] == [("unknown", 3, 0.0)]


@pytest.mark.parametrize("camera_threshold, fast_only", [(0.4, 0), (0.5, 8), (0.6, 8)])
def test_a_camera_with_a_lower_own_threshold_skips_the_cascade(tmp_path, camera_threshold, fast_only):
    """The reject cosine is calibrated at the global threshold: a camera that lowers its own (overrides) embeds
    every face with the whole ensemble; one that keeps or raises it goes through the cascade."""
    _, counters = run(tmp_path, [9] * 8, cascade=True, unknown=True, camera_threshold=camera_threshold)
    assert counters.cascade_fast_only == fast_only and counters.embeddings == 8


@pytest.mark.slow
def test_the_shipped_ensemble_completes_its_fast_members_embedding_exactly():
    from vigil.models import ModelRegistry
    from vigil.recognizer import build_embedder

    embedder = build_embedder(
        ModelRegistry().resolve("recognizer", None), providers=["CPUExecutionProvider"], flip_average=True
    )
    chips = np.random.default_rng(3).integers(0, 256, (3, embedder.input_size, embedder.input_size, 3), np.uint8)
    whole = embedder.embed(chips)
    fast = embedder.embed_fast(chips)  # type: ignore[union-attr]
    np.testing.assert_allclose(embedder.complete(chips, fast), whole, atol=1e-6)  # type: ignore[union-attr]
    np.testing.assert_allclose(embedder.fast_part(whole), fast, atol=1e-5)  # type: ignore[union-attr]
