"""Rules engine: matching, threshold, margin, hits, votes, cooldown, zones, schedules, lists (fake clock)."""

from __future__ import annotations

import hashlib
from datetime import datetime, time

import numpy as np
import pytest

from vigil.config import CameraConfig, RulesConfig, ScheduleWindow, ZoneConfig
from vigil.errors import VigilError
from vigil.rules import (
    Gallery,
    RulesEngine,
    cooldown_allows,
    in_zones,
    is_active,
    match_embedding,
    passes_margin,
    passes_threshold,
    qualifies,
    record_alert,
)
from vigil.types import AlertStage, DecisionKind, ListKind, Match, Person, Track

DIM = 8
FRAME = (360, 640, 3)
MONDAY_NOON = datetime(2026, 11, 23, 12, 0, 0)  # a Monday
P, C = AlertStage.PROVISIONAL, AlertStage.CONFIRMED


def unit(values) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


def axis(i: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[i] = 1.0
    return v


def stable_axis_index(pid: str) -> int:
    """An axis per person id that is the same in every run (``hash()`` of a str changes with PYTHONHASHSEED)."""
    return int(hashlib.sha256(pid.encode()).hexdigest(), 16) % DIM


def person(pid: str, kind: ListKind = ListKind.DENY, threshold: float | None = None, photos=None, proto=None) -> Person:
    proto = axis(stable_axis_index(pid)) if proto is None else proto
    photos = np.stack([proto]) if photos is None else np.stack(photos)
    return Person(pid, pid.title(), kind, threshold, proto, photos)


def camera(name: str = "cam1", zones=(), schedule=()) -> CameraConfig:
    return CameraConfig(name=name, source="clip.mp4", zones=list(zones), schedule=list(schedule))


def track(track_id: int = 1, cam: str = "cam1", box=(300, 150, 340, 200)) -> Track:
    return Track(cam, track_id, np.asarray(box, np.float32), 0, 0, 0.0)


RULES = RulesConfig(
    match_threshold=0.5, margin=0.05, min_hits=2, confirm_hits=4, confirm_vote_fraction=0.6, cooldown_s=60.0
)
GOOD = 0.8  # a qualifying score with a qualifying margin


def hit(pid: str | None, score: float = GOOD, margin: float = 0.3) -> Match:
    return Match(pid, score, margin)


def feed(engine, matches, cam=None, trk=None, t0=0.0, dt=0.04, when=MONDAY_NOON, frame=FRAME):
    """Feed one match per frame; return per frame the list of (kind, stage, person id) decided."""
    cam = cam or camera()
    trk = trk or track(cam=cam.name)
    out = []
    for i, m in enumerate(matches):
        decisions = engine.decide(cam, trk, m, frame, t0 + i * dt, when)
        out.append([(d.kind.value, d.stage, d.person.id if d.person else None) for d in decisions])
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Matching


def test_empty_gallery_matches_nobody():
    assert match_embedding(axis(0), Gallery.from_people([])) == Match(None, 0.0, 0.0)


def test_single_person_margin_is_score():
    m = match_embedding(axis(0), Gallery.from_people([person("a", proto=axis(0))]))
    assert m.person_id == "a" and m.score == pytest.approx(1.0) and m.margin == pytest.approx(1.0)


def test_margin_is_best_minus_second_person():
    gallery = Gallery.from_people([person("a", proto=axis(0)), person("b", proto=axis(1)), person("c", proto=axis(2))])
    query = unit([0.8, 0.6, 0, 0, 0, 0, 0, 0])
    m = match_embedding(query, gallery)
    assert m.person_id == "a"
    assert m.score == pytest.approx(0.8, abs=1e-5) and m.margin == pytest.approx(0.2, abs=1e-5)


def test_person_score_is_max_of_prototype_and_photos():
    # b's prototype is far from the query, but one of b's photos is the query itself: b wins on that photo.
    a = person("a", proto=unit([1, 1, 0, 0, 0, 0, 0, 0]))
    b = person("b", proto=axis(3), photos=[axis(3), axis(5)])
    m = match_embedding(axis(5), Gallery.from_people([a, b]))
    assert m.person_id == "b" and m.score == pytest.approx(1.0)


def test_gallery_rejects_mixed_dimensions():
    bad = Person("x", "X", ListKind.DENY, None, np.ones(4, np.float32), np.ones((1, 4), np.float32))
    with pytest.raises(VigilError, match="'x'"):
        Gallery.from_people([person("a"), bad])


@pytest.mark.parametrize(
    "score, person_threshold, global_threshold, expected",
    [
        (0.55, None, 0.5, True),
        (0.45, None, 0.5, False),
        (0.50, None, 0.5, True),  # inclusive
        (0.55, 0.6, 0.5, False),  # per-person stricter
        (0.45, 0.4, 0.5, True),  # per-person looser
    ],
)
def test_threshold_global_and_per_person(score, person_threshold, global_threshold, expected):
    rules = RulesConfig(match_threshold=global_threshold)
    p = person("a", threshold=person_threshold)
    assert passes_threshold(Match("a", score, 0.5), p, rules) is expected


@pytest.mark.parametrize("margin, required, expected", [(0.10, 0.05, True), (0.05, 0.05, True), (0.04, 0.05, False)])
def test_margin(margin, required, expected):
    assert passes_margin(Match("a", 0.9, margin), RulesConfig(margin=required)) is expected


def test_match_for_someone_else_does_not_qualify():
    assert not qualifies(Match("b", 0.9, 0.5), person("a"), RULES)


# ---------------------------------------------------------------------------------------------------------------------
# Hits and votes


@pytest.mark.parametrize(
    "rules, matches, expected",
    [
        # provisional on the 2nd qualifying hit, confirmed on the 4th (vote share 1.0)
        (RULES, [hit("a")] * 5, [[], [P], [], [C], []]),
        # a below-threshold hit is no vote for a: provisional after 2 qualifying, confirmed once 4 of 5 = 0.8 share
        (RULES, [hit("a"), hit("a", score=0.4), hit("a"), hit("a"), hit("a")], [[], [], [P], [], [C]]),
        # a small margin does not qualify
        (RULES, [hit("a", margin=0.01)] * 5, [[]] * 5),
        # votes split a/b: a has 4 hits but only 4/8 = 0.5 < 0.6 share -> provisional only, never confirmed
        (RULES, [hit("a"), hit("b")] * 4, [[], [], [P], [P], [], [], [], []]),
        # share recovers: 4 a-hits of 6 votes = 0.67 -> confirmed on the 6th
        (RULES, [hit("b"), hit("a"), hit("a"), hit(None), hit("a"), hit("a")], [[], [], [P], [], [], [C]]),
        # min_hits == confirm_hits: confirmed fires alone, no provisional afterwards
        (RulesConfig(match_threshold=0.5, min_hits=3, confirm_hits=3), [hit("a")] * 4, [[], [], [C], []]),
        # min_hits 1: provisional on the first frame
        (RulesConfig(match_threshold=0.5, min_hits=1, confirm_hits=2), [hit("a")] * 3, [[P], [C], []]),
    ],
)
def test_hits_and_votes(rules, matches, expected):
    people = [person("a"), person("b", proto=axis(7))]
    got = feed(RulesEngine(rules, people), matches)
    assert [[stage for _, stage, _ in frame] for frame in got] == expected


def test_unknown_person_id_in_match_is_ignored():
    got = feed(RulesEngine(RULES, [person("a")]), [hit("ghost")] * 6)
    assert got == [[]] * 6


def test_low_quality_hits_do_not_vote():
    rules = RulesConfig(match_threshold=0.5, min_hits=2, confirm_hits=2, min_quality=0.5)
    engine = RulesEngine(rules, [person("a")])
    cam, trk = camera(), track()
    low = [engine.decide(cam, trk, hit("a"), FRAME, i, MONDAY_NOON, quality=0.2) for i in range(5)]
    assert low == [[]] * 5
    assert engine.decide(cam, trk, hit("a"), FRAME, 6, MONDAY_NOON, quality=0.9) == []
    assert [d.stage for d in engine.decide(cam, trk, hit("a"), FRAME, 7, MONDAY_NOON, quality=0.9)] == [C]


def test_vote_window_lets_a_late_clear_view_confirm():
    # 10 non-qualifying far-away hits, then the person comes close: whole-track share stays low for long,
    # a window of 6 votes confirms on the 4th good hit (4/6 >= 0.6).
    matches = [hit(None)] * 10 + [hit("a")] * 5
    whole = feed(RulesEngine(RULES, [person("a")]), matches)
    windowed = feed(RulesEngine(RULES, [person("a")], vote_window_hits=6), matches)
    assert C not in [s for frame in whole for _, s, _ in frame]
    assert [s for _, s, _ in windowed[13]] == [C]


def test_forget_resets_track_state():
    engine = RulesEngine(RulesConfig(match_threshold=0.5, min_hits=2, confirm_hits=2, cooldown_s=0.0), [person("a")])
    cam, trk = camera(), track(7)
    assert feed(engine, [hit("a")] * 2, cam, trk)[1] == [("alert", C, "a")]
    engine.forget("cam1", 7)
    assert engine.active_tracks == 0
    assert feed(engine, [hit("a")] * 2, cam, trk, t0=10)[1] == [("alert", C, "a")]


def test_forget_idle_drops_stale_tracks():
    engine = RulesEngine(RULES, [person("a")])
    feed(engine, [hit("a")], trk=track(1), t0=0.0)
    feed(engine, [hit("a")], trk=track(2), t0=9.0)
    assert engine.forget_idle(now_mono_s=10.0, max_idle_s=5.0) == 1
    assert engine.active_tracks == 1


# ---------------------------------------------------------------------------------------------------------------------
# Cooldown


@pytest.mark.parametrize(
    "recorded, query_stage, now, expected",
    [
        ([], P, 0.0, True),
        ([("cam1", "a", P, 0.0)], P, 59.9, False),
        ([("cam1", "a", P, 0.0)], P, 60.0, True),  # expired
        ([("cam1", "a", P, 0.0)], C, 1.0, True),  # confirmed after provisional
        ([("cam1", "a", C, 0.0)], P, 1.0, False),  # no provisional right after a confirmed
        ([("cam1", "a", C, 0.0)], C, 30.0, False),
        ([("cam2", "a", C, 0.0)], C, 1.0, True),  # other camera
        ([("cam1", "b", C, 0.0)], C, 1.0, True),  # other person
    ],
)
def test_cooldown_table(recorded, query_stage, now, expected):
    table = {}
    for cam, pid, stage, t in recorded:
        record_alert(table, cam, pid, stage, t)
    assert cooldown_allows(table, "cam1", "a", query_stage, now, 60.0) is expected


@pytest.mark.parametrize(
    "second_track_camera, second_person, start_s, expected_stages",
    [
        ("cam1", "a", 10.0, []),  # same pair within cooldown: nothing
        ("cam1", "a", 61.0, [P, C]),  # after expiry: both again
        ("cam2", "a", 10.0, [P, C]),  # per camera
        ("cam1", "b", 10.0, [P, C]),  # per person
    ],
)
def test_cooldown_across_tracks(second_track_camera, second_person, start_s, expected_stages):
    engine = RulesEngine(RULES, [person("a"), person("b", proto=axis(7))])
    first = feed(engine, [hit("a")] * 4, camera("cam1"), track(1, "cam1"), t0=0.0)
    assert [s for frame in first for _, s, _ in frame] == [P, C]
    cam2 = camera(second_track_camera)
    second = feed(engine, [hit(second_person)] * 6, cam2, track(2, second_track_camera), t0=start_s)
    assert [s for frame in second for _, s, _ in frame] == expected_stages


def test_suppressed_stage_fires_when_cooldown_ends_on_the_same_track():
    engine = RulesEngine(RulesConfig(match_threshold=0.5, min_hits=1, confirm_hits=1, cooldown_s=5.0), [person("a")])
    feed(engine, [hit("a")], trk=track(1), t0=0.0)
    late = feed(engine, [hit("a")] * 8, trk=track(2), t0=1.0, dt=1.0)  # t = 1..8 s
    assert [i for i, frame in enumerate(late) if frame] == [4]  # t = 5 s


# ---------------------------------------------------------------------------------------------------------------------
# Zones and schedules

SQUARE_LEFT = ZoneConfig(name="left", points_norm=[(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)])
TRIANGLE = ZoneConfig(name="tri", points_norm=[(0.5, 0.0), (1.0, 1.0), (0.5, 1.0)])


@pytest.mark.parametrize(
    "box, zones, expected",
    [
        ((100, 100, 140, 150), [], True),  # no zones: everywhere
        ((100, 100, 140, 150), [SQUARE_LEFT], True),  # centre x=120 of 640
        ((400, 100, 440, 150), [SQUARE_LEFT], False),  # centre x=420 > 320
        ((440, 300, 460, 340), [TRIANGLE], True),  # centre (0.70, 0.89): left of the diagonal x = 0.5 + y/2
        ((600, 20, 620, 40), [TRIANGLE], False),  # centre (0.95, 0.08): right of it
        ((600, 20, 620, 40), [TRIANGLE, SQUARE_LEFT], False),
        ((100, 20, 140, 40), [TRIANGLE, SQUARE_LEFT], True),  # any zone
    ],
)
def test_zones(box, zones, expected):
    assert in_zones(np.asarray(box, np.float32), zones, FRAME) is expected


def test_face_outside_zone_does_not_alert_until_it_enters():
    engine = RulesEngine(RULES, [person("a")])
    cam = camera(zones=[SQUARE_LEFT])
    outside = feed(engine, [hit("a")] * 4, cam, track(1, box=(400, 100, 440, 150)))
    inside = feed(engine, [hit("a")], cam, track(1, box=(100, 100, 140, 150)), t0=1.0)
    assert outside == [[]] * 4
    assert inside == [[("alert", C, "a")]]  # confirmed supersedes the provisional that was gated


NIGHT = ScheduleWindow(start=time(22, 0), end=time(6, 0))  # every day, spans midnight
OFFICE = ScheduleWindow(days=["mon", "tue", "wed", "thu", "fri"], start=time(8, 0), end=time(18, 0))
FRIDAY_NIGHT = ScheduleWindow(days=["fri"], start=time(22, 0), end=time(2, 0))


@pytest.mark.parametrize(
    "schedule, when, expected",
    [
        ([], datetime(2026, 11, 23, 3, 0), True),  # empty = always
        ([OFFICE], datetime(2026, 11, 23, 12, 0), True),  # Monday noon
        ([OFFICE], datetime(2026, 11, 23, 7, 59, 59), False),
        ([OFFICE], datetime(2026, 11, 23, 18, 0, 0, 500_000), True),  # end inclusive to the second
        ([OFFICE], datetime(2026, 11, 28, 12, 0), False),  # Saturday
        ([NIGHT], datetime(2026, 11, 23, 23, 30), True),
        ([NIGHT], datetime(2026, 11, 23, 2, 0), True),  # after midnight
        ([NIGHT], datetime(2026, 11, 23, 12, 0), False),
        ([FRIDAY_NIGHT], datetime(2026, 11, 27, 23, 0), True),  # Friday 23:00
        ([FRIDAY_NIGHT], datetime(2026, 11, 28, 1, 0), True),  # Saturday 01:00 belongs to Friday's window
        ([FRIDAY_NIGHT], datetime(2026, 11, 28, 23, 0), False),  # Saturday 23:00
        ([FRIDAY_NIGHT], datetime(2026, 11, 27, 1, 0), False),  # Friday 01:00 belongs to Thursday
        ([OFFICE, NIGHT], datetime(2026, 11, 28, 23, 0), True),  # any window
    ],
)
def test_schedules(schedule, when, expected):
    assert is_active(schedule, when) is expected


def test_inactive_schedule_blocks_alerts():
    engine = RulesEngine(RULES, [person("a")])
    cam = camera(schedule=[OFFICE])
    assert feed(engine, [hit("a")] * 5, cam, when=datetime(2026, 11, 28, 12, 0)) == [[]] * 5


# ---------------------------------------------------------------------------------------------------------------------
# Lists and unknown faces


@pytest.mark.parametrize(
    "kind, expected_labels",
    [(ListKind.DENY, ["watchlist", "watchlist"]), (ListKind.VIP, ["vip", "vip"]), (ListKind.ALLOW, [])],
)
def test_list_labels_and_allow_never_alerts(kind, expected_labels):
    engine = RulesEngine(RULES, [person("a", kind=kind)])
    cam, trk = camera(), track()
    labels = [d.label for i in range(8) for d in engine.decide(cam, trk, hit("a"), FRAME, i * 0.04, MONDAY_NOON)]
    assert labels == expected_labels


def test_decision_carries_person_score_and_margin():
    engine = RulesEngine(RulesConfig(match_threshold=0.5, min_hits=1, confirm_hits=2), [person("a")])
    cam, trk = camera(), track(3)
    (d,) = engine.decide(cam, trk, hit("a", score=0.71, margin=0.2), FRAME, 0.0, MONDAY_NOON)
    assert (d.kind, d.camera, d.track_id, d.person.id, d.score, d.margin) == (
        DecisionKind.ALERT,
        "cam1",
        3,
        "a",
        0.71,
        0.2,
    )


@pytest.mark.parametrize(
    "unknown_events, matches, expected_unknown_frames",
    [
        (True, [hit(None, 0.2, 0.01)] * 6, [3]),  # once, at confirm_hits votes
        (False, [hit(None, 0.2, 0.01)] * 6, []),
        (True, [hit("a")] * 6, []),  # a known person is not unknown
        (True, [hit("a", 0.3)] * 6, [3]),  # below threshold = nobody
        (True, [hit("a"), hit("a")] + [hit(None)] * 6, []),  # someone reached min_hits on this track
    ],
)
def test_unknown_events(unknown_events, matches, expected_unknown_frames):
    rules = RULES.model_copy(update={"unknown_events": unknown_events})
    got = feed(RulesEngine(rules, [person("a")]), matches)
    frames = [i for i, frame in enumerate(got) for kind, _, _ in frame if kind == "unknown"]
    assert frames == expected_unknown_frames


def test_allow_listed_person_is_not_unknown():
    rules = RULES.model_copy(update={"unknown_events": True})
    got = feed(RulesEngine(rules, [person("a", kind=ListKind.ALLOW)]), [hit("a")] * 6)
    assert got == [[]] * 6


def test_engine_refuses_an_unresolved_threshold():
    with pytest.raises(ValueError, match="match_threshold"):
        RulesEngine(RulesConfig(match_threshold=None), [person("a")])
