"""`vigil eval video --events EVENTS.jsonl --truth TRUTH.yaml [--json OUT]`: score alerts against a hand annotation.

Truth file (see ``examples/hamilton/truth.yaml``)::

    fps: 29.97
    frames: 275
    people:
      - id: lin-manuel-miranda
        segments: [[0, 19], [82, 210]]     # inclusive frame ranges where the person is visible
        first_frame_40px: 82               # first frame where the face is >= 40 px wide (delay is measured from here)

Per person of the truth: ``hit`` (a confirmed alert for that person inside one of its segments), ``provisional_hit``,
``delay_s`` from ``first_frame_40px`` to the first confirmed true alert (negative: alerted earlier, on a smaller face),
and the counts. An alert is *false* when its person is not in the truth or the frame lies outside that person's
segments (a wrong identity or a wrong time). People in the events but not in the truth are listed as false alerts.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vigil.config import format_validation_error, read_yaml_mapping
from vigil.errors import ConfigError, VigilError


class TruthPerson(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    segments: list[tuple[int, int]] = Field(min_length=1)
    first_frame_40px: int | None = None


class VideoTruth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    video: str | None = None
    fps: float = Field(gt=0)
    frames: int = Field(gt=0)
    people: list[TruthPerson] = Field(default_factory=list)

    def person(self, person_id: str) -> TruthPerson | None:
        return next((p for p in self.people if p.id == person_id), None)


@dataclass
class PersonScore:
    person_id: str
    hit: bool = False
    provisional_hit: bool = False
    first_confirmed_frame: int | None = None
    delay_s: float | None = None
    true_alerts: int = 0


@dataclass
class VideoScore:
    people: list[PersonScore]
    false_alerts: list[dict] = field(default_factory=list)
    alerts: int = 0

    @property
    def false_alert_count(self) -> int:
        return len(self.false_alerts)


def load_truth(path: Path) -> VideoTruth:
    raw = read_yaml_mapping(path, "truth")
    try:
        return VideoTruth.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None


def load_alerts(path: Path) -> list[dict]:
    """The ``type: alert`` records of a JSONL events file (other event types are ignored)."""
    if not path.is_file():
        raise VigilError(f"{path}: events file not found")
    alerts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise VigilError(f"{path}: line {number}: not a JSON object") from None
        if record.get("type") == "alert":
            if "person_id" not in record or "frame_index" not in record or "stage" not in record:
                raise VigilError(f"{path}: line {number}: alert without person_id, frame_index or stage")
            alerts.append(record)
    return alerts


def in_segments(frame: int, segments: list[tuple[int, int]]) -> bool:
    return any(start <= frame <= end for start, end in segments)


def score_alerts(alerts: list[dict], truth: VideoTruth) -> VideoScore:
    """Pure scoring: hits, delays and false alerts (see the module docstring)."""
    scores = {p.id: PersonScore(p.id) for p in truth.people}
    false_alerts = []
    for alert in sorted(alerts, key=lambda a: a["frame_index"]):
        person = truth.person(alert["person_id"])
        frame = int(alert["frame_index"])
        if person is None or not in_segments(frame, person.segments):
            false_alerts.append({k: alert.get(k) for k in ("person_id", "stage", "frame_index", "score", "track_id")})
            continue
        score = scores[person.id]
        score.true_alerts += 1
        if alert["stage"] == "provisional":
            score.provisional_hit = True
        elif alert["stage"] == "confirmed" and not score.hit:
            score.hit = score.provisional_hit = True
            score.first_confirmed_frame = frame
            if person.first_frame_40px is not None:
                score.delay_s = round((frame - person.first_frame_40px) / truth.fps, 3)
    return VideoScore(list(scores.values()), false_alerts, len(alerts))


def format_score(score: VideoScore) -> str:
    lines = [f"{'person':<24} {'confirmed':>9} {'provisional':>11} {'first frame':>11} {'delay s':>8} {'alerts':>6}"]
    for p in score.people:
        first = "-" if p.first_confirmed_frame is None else str(p.first_confirmed_frame)
        delay = "-" if p.delay_s is None else f"{p.delay_s:.2f}"
        lines.append(
            f"{p.person_id:<24} {'HIT' if p.hit else 'miss':>9} {'yes' if p.provisional_hit else 'no':>11} "
            f"{first:>11} {delay:>8} {p.true_alerts:>6}"
        )
    lines.append(f"false alerts: {score.false_alert_count} of {score.alerts} alerts")
    for alert in score.false_alerts:
        lines.append(f"  false: {alert}")
    return "\n".join(lines)


def run_cli(args: argparse.Namespace) -> int:
    truth = load_truth(args.truth)
    score = score_alerts(load_alerts(args.events), truth)
    print(format_score(score))
    if args.json:
        report = {
            "events": str(args.events),
            "truth": str(args.truth),
            "alerts": score.alerts,
            "false_alerts": score.false_alert_count,
            "people": [asdict(p) for p in score.people],
            "false_alert_records": score.false_alerts,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0
