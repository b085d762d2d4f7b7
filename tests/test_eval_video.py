"""Scoring alerts against a hand annotation: hits, delays and false alerts on a known table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vigil.errors import VigilError
from vigil.eval.video import VideoTruth, load_alerts, load_truth, score_alerts

REPO = Path(__file__).resolve().parent.parent
TRUTH = VideoTruth.model_validate(
    {
        "fps": 10.0,
        "frames": 100,
        "people": [
            {"id": "ann", "segments": [[0, 9], [50, 79]], "first_frame_40px": 50},
            {"id": "bob", "segments": [[20, 39]], "first_frame_40px": 20},
        ],
    }
)


def alert(person: str, stage: str, frame: int) -> dict:
    return {"type": "alert", "person_id": person, "stage": stage, "frame_index": frame, "score": 0.7, "track_id": 1}


CASES = [
    ("confirmed in segment", [alert("ann", "provisional", 52), alert("ann", "confirmed", 55)], {"ann": (True, 0.5)}, 0),
    ("alerted early on a small face", [alert("ann", "confirmed", 5)], {"ann": (True, -4.5)}, 0),
    ("provisional only is no hit", [alert("bob", "provisional", 25)], {"bob": (False, None)}, 0),
    ("right person, wrong time", [alert("bob", "confirmed", 60)], {"bob": (False, None)}, 1),
    ("stranger on the watchlist", [alert("eve", "confirmed", 30)], {"ann": (False, None)}, 1),
    ("first confirmed counts", [alert("bob", "confirmed", 30), alert("bob", "confirmed", 22)], {"bob": (True, 0.2)}, 0),
]


@pytest.mark.parametrize("case, alerts, expected, false_count", CASES, ids=[c[0] for c in CASES])
def test_score_alerts(case, alerts, expected, false_count):
    score = score_alerts(alerts, TRUTH)
    by_id = {p.person_id: p for p in score.people}
    for person_id, (hit, delay) in expected.items():
        assert by_id[person_id].hit is hit
        assert by_id[person_id].delay_s == (None if delay is None else pytest.approx(delay))
    assert score.false_alert_count == false_count


def test_committed_hamilton_truth_is_valid():
    truth = load_truth(REPO / "examples/hamilton/truth.yaml")
    assert truth.frames == 275
    lin = truth.person("lin-manuel-miranda")
    assert lin is not None and lin.first_frame_40px == 0  # on stage in the wide shot, face box 40-47 px


def test_events_file_errors_name_the_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(alert("ann", "confirmed", 1)) + "\n{broken\n", encoding="utf-8")
    with pytest.raises(VigilError, match=r"events.jsonl: line 2: not a JSON object"):
        load_alerts(path)
