"""pipelines.manifest: entries are written with the file's checksum; thresholds come only from matching reports."""

from __future__ import annotations

import pytest
import yaml

from pipelines.manifest import add_entry, set_thresholds, threshold_fields
from vigil.models import sha256_of


def _report(sha: str, flip: bool, probes: str = "clean", t4: float = 0.78) -> dict:
    return {
        "model": f"m@{sha[:12]}{'+flip' if flip else ''}",
        "flip_average": flip,
        "probes": probes,
        "people": 1000,
        "detector": "det@abc",
        "impostor_pairs": 1660120,
        "command": "python -m pipelines.recognizer.calibrate --x",
        "thresholds": [
            {"far": 1e-3, "threshold": t4 - 0.02, "tar": 0.98},
            {"far": 1e-4, "threshold": t4, "tar": 0.97},
            {"far": 1e-5, "threshold": t4 + 0.02, "tar": 0.95},
        ],
    }


@pytest.fixture()
def root(tmp_path):
    (tmp_path / "recognizer").mkdir()
    (tmp_path / "recognizer" / "m.onnx").write_bytes(b"weights")
    add_entry(tmp_path, "m", "recognizer", "recognizer/m.onnx", {"input_size": [112, 112]}, make_default=True)
    return tmp_path


def test_add_entry_records_the_files_checksum_and_default(root):
    manifest = yaml.safe_load((root / "manifest.yaml").read_text())
    assert manifest["models"]["m"]["sha256"] == sha256_of(root / "recognizer" / "m.onnx")
    assert manifest["models"]["m"]["input_size"] == [112, 112] and manifest["defaults"] == {"recognizer": "m"}


def test_set_thresholds_writes_both_modes_and_keeps_the_rest(root):
    sha = sha256_of(root / "recognizer" / "m.onnx")
    entry = set_thresholds(root, "m", _report(sha, True, t4=0.7833), _report(sha, False, t4=0.78))
    assert (entry["match_threshold_flip_average"], entry["match_threshold"]) == (0.7833, 0.78)
    assert "--x" in entry["match_threshold_source"] and "FAR 1e-05: 0.8000" in entry["match_threshold_source"]
    stored = yaml.safe_load((root / "manifest.yaml").read_text())["models"]["m"]
    assert stored["input_size"] == [112, 112] and stored["match_threshold"] == 0.78


@pytest.mark.parametrize(
    "flip_report, single_report, message",
    [
        (_report("f" * 64, True), _report("f" * 64, False), "not this file"),  # another file's calibration
        ("swap", None, "flip_average"),  # the two modes swapped
        ("degraded", None, "clean probes"),  # the watchlist-case report is not a calibration
    ],
)
def test_threshold_fields_refuses_reports_that_do_not_match(root, flip_report, single_report, message):
    entry = yaml.safe_load((root / "manifest.yaml").read_text())["models"]["m"]
    sha = entry["sha256"]
    if flip_report == "swap":
        flip_report, single_report = _report(sha, False), _report(sha, True)
    elif flip_report == "degraded":
        flip_report, single_report = _report(sha, True), _report(sha, False, probes="degraded")
    with pytest.raises(SystemExit, match=message):
        threshold_fields(entry, flip_report, single_report)
