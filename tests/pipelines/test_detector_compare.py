"""pipelines.detector.compare: every detector scored by the same code, on mosaics and with tiles too."""

from __future__ import annotations

import json

import numpy as np

from pipelines.detector.compare import FrameSetup, main, tiled_teacher
from vigil.eval.wider import MosaicSpec
from vigil.tiling import TileSpec
from vigil.types import Face


def test_frame_setup_names_and_records_the_setup():
    assert FrameSetup().suffix() == ""
    setup = FrameSetup(mosaic=MosaicSpec(4, 2), tiling=TileSpec(240, 64))
    assert setup.suffix() == "_m4x2_t240o64"
    assert setup.row_fields() == {"mosaic": "4x2", "tile_px": 240, "tile_overlap_px": 64}


def test_tiled_teacher_runs_a_one_image_detector_on_the_tiles():
    seen = []

    def detect(image):
        seen.append(image.shape[:2])
        return [Face(box=np.asarray([5, 5, 15, 15], np.float32), score=0.5, landmarks=np.full((5, 2), 5, np.float32))]

    assert tiled_teacher(detect, None, 0.5) is detect
    faces = tiled_teacher(detect, TileSpec(100, 20), 0.5)(np.zeros((100, 180, 3), np.uint8))
    assert seen == [(100, 180), (100, 100), (100, 100)]  # the whole image, then tiles at x = 0 and 80
    assert sorted(int(f.box[0]) for f in faces) == [5, 85]  # the whole image's face merges with the first tile's


def test_compare_scores_a_teacher_on_tiled_mosaics(shared_data, tmp_path):
    shared_data("weights")
    data = shared_data("wider200", "data.yaml")
    out = tmp_path / "compare"
    args = [
        "--data",
        str(data),
        "--teachers",
        "yunet",
        "--limit",
        "4",
        "--mosaic",
        "2x1",
        "--tile-px",
        "208",
        "--tile-overlap-px",
        "32",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    row = json.loads((out / "yunet_m2x1_t208o32.json").read_text())
    assert (row["images"], row["frames"], row["mosaic"], row["tile_px"]) == (4, 2, "2x1", 208)
    assert row["ap50"] > 0.1
    assert "2x1" in (out / "table.md").read_text()
