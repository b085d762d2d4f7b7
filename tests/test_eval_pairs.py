"""`vigil eval pairs` on a tiny CSV of LFW images, with a fake detector and embedder (real models when shipped)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from vigil import cli
from vigil.align import Aligner
from vigil.errors import VigilError
from vigil.eval import pairs as pairs_mod
from vigil.eval.face_source import RecognizerParts, centre_face
from vigil.types import Face

# A plausible 150 px template (only its geometry matters for the fakes).
TEMPLATE = np.array([[55.0, 62.0], [95.0, 62.0], [75.0, 85.0], [59.0, 105.0], [91.0, 105.0]], np.float32)
IMAGES = (
    "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
    "Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
    "Abel_Pacheco/Abel_Pacheco_0001.jpg",
    "Abel_Pacheco/Abel_Pacheco_0004.jpg",
)


class FakeEmbedder:
    """8 x 8 grey thumbnail of the chip, mean-centred and unit norm (64-d)."""

    input_size = 150

    def embed(self, chips: np.ndarray) -> np.ndarray:
        grey = [cv2.resize(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY), (8, 8), interpolation=cv2.INTER_AREA) for c in chips]
        vectors = np.stack(grey).reshape(len(chips), -1).astype(np.float32)
        vectors -= vectors.mean(axis=1, keepdims=True)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)


def fake_detect(images: list[np.ndarray]):
    """One confident face at LFW's mean position, none on a flat (blank) image."""
    faces = []
    for image in images:
        fixed = centre_face(image.shape)
        faces.append([] if image.std() < 1.0 else [Face(box=fixed.box, score=0.9, landmarks=fixed.landmarks)])
    return faces


@pytest.fixture
def pairs_root(tmp_path, shared_data):
    lfw = shared_data("lfw")
    root = tmp_path / "root"
    for rel in IMAGES:
        if not (lfw / rel).is_file():
            pytest.skip(f"{lfw / rel} not found")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lfw / rel, root / rel)
    cv2.imwrite(str(root / "blank.jpg"), np.full((120, 100, 3), 128, np.uint8))
    (root / "broken.jpg").write_text("not an image")
    return root


@pytest.fixture
def fake_models(monkeypatch):
    parts = RecognizerParts(
        aligner=Aligner(TEMPLATE, 150), embedder=FakeEmbedder(), label="fake@000000000000", path=Path("fake.onnx")
    )
    monkeypatch.setattr(pairs_mod, "build_recognizer", lambda model, flip_average, refine_landmarks=False: parts)
    monkeypatch.setattr(pairs_mod, "build_detector", lambda detector: (fake_detect, "fake-detector"))


def _csv(tmp_path: Path, rows: list[str], header: str = "img1,img2,same") -> Path:
    path = tmp_path / "pairs.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_report_keys_and_skipped_pairs(tmp_path, pairs_root, fake_models):
    a1, a2, b1, b2 = IMAGES
    csv_path = _csv(tmp_path, [f"{a1},{a2},1", f"{a1},{b1},0", f"{b1},blank.jpg,0", f"{b1},{b2},1", f"{a2},{b2},0"])
    out = tmp_path / "out" / "report.json"
    assert cli.main(["eval", "pairs", "--root", str(pairs_root), "--pairs", str(csv_path), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for key in ("accuracy", "threshold", "auc", "pairs_scored", "pairs_skipped"):
        assert key in report
    assert report["pairs_scored"] == 4 and report["pairs_skipped"] == 1 and report["skipped_rows"] == [3]
    assert report["images_without_face"] == ["blank.jpg"]
    assert 0.5 <= report["accuracy"] <= 1.0 and 0.0 <= report["auc"] <= 1.0
    assert out.with_suffix(".png").stat().st_size > 1000


@pytest.mark.parametrize(
    "rows, header, fragment",
    [
        (["a.jpg,b.jpg,1", "a.jpg,b.jpg,2"], "img1,img2,same", "row 2 (line 3): same must be 0 or 1"),
        (["a.jpg,b.jpg"], "img1,img2,same", "row 1 (line 2): expected 3 fields"),
        (["a.jpg,,0"], "img1,img2,same", "row 1 (line 2): empty image path"),
        (["a.jpg,b.jpg,1"], "left,right,label", "line 1: expected the header"),
    ],
)
def test_bad_row_is_one_line_naming_the_row(tmp_path, capsys, rows, header, fragment):
    csv_path = _csv(tmp_path, rows, header)
    code = cli.main(
        ["eval", "pairs", "--root", str(tmp_path), "--pairs", str(csv_path), "--json", str(tmp_path / "r.json")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and str(csv_path) in err and fragment in err


def test_unreadable_image_names_file_and_row(tmp_path, pairs_root, fake_models, capsys):
    a1 = IMAGES[0]
    csv_path = _csv(tmp_path, [f"{a1},{IMAGES[1]},1", f"{a1},broken.jpg,0"])
    code = cli.main(
        ["eval", "pairs", "--root", str(pairs_root), "--pairs", str(csv_path), "--json", str(tmp_path / "r.json")]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(errors) == 1
    assert "broken.jpg" in errors[0] and "row 2" in errors[0]


def test_missing_image_raises_vigil_error(tmp_path, pairs_root, fake_models):
    csv_path = _csv(tmp_path, [f"{IMAGES[0]},nobody/nobody_0001.jpg,0"])
    with pytest.raises(VigilError, match=r"nobody_0001\.jpg.*row 1"):
        pairs_mod.run_cli(_args(pairs_root, csv_path, tmp_path / "r.json"))


def _args(root: Path, csv_path: Path, out: Path, model: Path | None = None):
    import argparse

    return argparse.Namespace(
        root=root, pairs=csv_path, json=out, model=model, detector=None, flip_average=True, refine_landmarks=True
    )


@pytest.mark.parametrize(
    "recognizer_file",
    [
        None,
        "recognizer/dlib-resnet-v1.onnx",
        "recognizer/dlib-resnet-v1-scene-int8.onnx",
        "recognizer/sface-2021dec.onnx",
        "recognizer/dlib-scene-sface.yaml",
    ],
)
def test_real_models_same_pairs_score_higher(tmp_path, pairs_root, recognizer_file):
    """With the shipped detector and each shipped recognizer (None: the default; skipped until the manifest has it)."""
    from vigil.models import ModelRegistry
    from vigil.paths import models_dir

    try:
        registry = ModelRegistry()
        registry.default("recognizer"), registry.default("detector")
    except VigilError as exc:
        pytest.skip(f"shipped models not available: {exc}")
    a1, a2, b1, b2 = IMAGES
    csv_path = _csv(tmp_path, [f"{a1},{a2},1", f"{b1},{b2},1", f"{a1},{b1},0", f"{a2},{b2},0"])
    out = tmp_path / "real.json"
    model = None if recognizer_file is None else models_dir() / recognizer_file
    assert pairs_mod.run_cli(_args(pairs_root, csv_path, out, model)) == 0
    report = json.loads(out.read_text())
    assert report["pairs_scored"] == 4 and report["auc"] == 1.0
