"""The model card's regime table: rows from metrics.json and eval-lfw reports; missing files stay '-'."""

from __future__ import annotations

import json

import pytest

from pipelines.recognizer import regimes_table as rt


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _metrics(best_degraded: float) -> dict:
    history = [
        {"epoch": 0, "clean_auc": 0.98, "degraded_auc": 0.84},
        {"epoch": 1, "train_samples_per_s": 30.0, "clean_auc": 0.97, "degraded_auc": best_degraded},
    ]
    return {"trainable_parameters": 1234, "best_epoch": 1, "train_wall_s": 60.0, "history": history, "best": history[1]}


@pytest.mark.parametrize(
    "lfw_files, expected_cells",
    [
        ({}, ["-", "-", "-", "-", "-", "-"]),
        (
            {
                "c_full_clean.json": {
                    "accuracy_mean": 0.9812,
                    "accuracy_std": 0.005,
                    "tar_at_far_1e-3": 0.9,
                    "auc": 0.999,
                }
            },
            ["98.12 ± 0.50", "90.00", "0.9990", "-", "-", "-"],
        ),
    ],
)
def test_rows_from_metrics_and_reports(tmp_path, lfw_files, expected_cells):
    _write(tmp_path / "runs" / "c_full" / "metrics.json", _metrics(0.88))
    for name, report in lfw_files.items():
        _write(tmp_path / "lfw" / name, report)
    table = rt.markdown(rt.build_rows(tmp_path / "runs", tmp_path / "lfw", ["c_full"]))
    source_line, regime_line = table.strip().splitlines()[2:]
    assert source_line.split(" | ")[5:7] == ["0.9800", "0.8400"]  # the source's validation is epoch 0
    cells = [c.strip(" |") for c in regime_line.split(" | ")]
    assert cells[:7] == ["c_full", "1,234", "1", "60", "30", "0.9700", "0.8800"]
    assert cells[7:] == expected_cells
