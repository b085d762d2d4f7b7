"""pipelines.recognizer.lfw_chip_parity: two files of a recognizer compared on the same real LFW chips."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.recognizer.lfw_chip_parity import compare, cosine_summary, evenly_spaced
from vigil.errors import VigilError
from vigil.paths import repo_path


@pytest.mark.parametrize(
    ("items", "count", "expected"),
    [
        (["d", "a", "c", "b"], 2, ["a", "c"]),
        (["b", "a"], 5, ["a", "b"]),
        ([str(i) for i in range(10)], 3, ["0", "3", "6"]),
    ],
)
def test_evenly_spaced(items, count, expected) -> None:
    assert evenly_spaced(items, count) == expected


def test_cosine_summary_is_row_wise() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    b = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    assert cosine_summary(a, b) == {"chips": 3, "cosine_mean": 0.6, "cosine_min": 0.0, "cosine_p01": 0.016}


def test_a_file_matches_itself_and_not_a_retrained_model(shared_data, tmp_path) -> None:
    shared_data("lfw")
    source = repo_path("models/recognizer/dlib-resnet-v1.onnx")
    same = compare(source, source, images=6, detections_cache=tmp_path)
    other = compare(
        source, repo_path("models/recognizer/dlib-resnet-v1-scene.onnx"), images=6, detections_cache=tmp_path
    )
    for variant in ("clean", "degraded"):
        assert same[variant]["chips"] == 6 and same[variant]["cosine_min"] > 0.99999
        assert other[variant]["cosine_mean"] < 0.999  # the fine-tune moved the embedding


def test_a_missing_other_file_is_one_clear_error(tmp_path) -> None:
    with pytest.raises(VigilError, match="model file not found"):
        compare(repo_path("models/recognizer/dlib-resnet-v1.onnx"), tmp_path / "none.onnx", 6, tmp_path)
