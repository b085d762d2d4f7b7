"""Decision policy: who is this face, and does it deserve an alert now?

Small pure functions plus one stateful :class:`RulesEngine` that owns per-track decision state and the cooldown
table. No I/O, no threads, no clock reads: every time is passed in (``now_mono_s`` from ``time.monotonic()``,
``now_wall`` a local-time ``datetime`` used only for schedules), so tests drive it with a fake clock.

Policy, in order, for each hit (one call of :meth:`RulesEngine.decide` = one frame in which a track got an embedding):

1. A hit whose face quality is below ``rules.min_quality`` is ignored (no vote).
2. The hit *qualifies* for its best person P when ``score >= threshold(P)`` (per-person threshold, else the
   camera's, else the global ``match_threshold``) **and** ``margin >= rules.margin``. Its vote is P if it qualifies,
   else ``None`` (nobody). A camera with ``overrides`` decides with its own threshold, margin and unknown-face
   setting (:mod:`vigil.camera_settings`; the engine takes them as ``camera_rules``).
3. Gates: the camera's schedule must be active and the track's box centre inside one of its zones (no zones = the
   whole frame). A gated hit still votes; it only cannot alert now (it may alert on a later, ungated hit).
4. *provisional*: P has ``>= min_hits`` qualifying hits on the track. *confirmed*: P has ``>= confirm_hits``
   qualifying hits **and** ``>= confirm_vote_fraction`` of the track's votes (over the whole track, or over the last
   ``vote_window_hits`` votes when the engine is given a window). Each stage fires at most once per track and person;
   a confirmed alert that fires before its provisional one supersedes it (no provisional is sent afterwards).
5. Lists: ``allow`` never alerts (but its votes still count, so an allowed person is not an "unknown face");
   ``vip`` alerts with label ``"vip"``; ``deny`` with label ``"watchlist"``.
6. Cooldown per (camera, person): after a confirmed alert at time t, no other confirmed alert for the pair before
   ``t + cooldown_s``; a provisional alert is suppressed while *any* alert (either stage) for the pair is within its
   cooldown. So a track's own confirmed alert always follows its provisional one, and a person re-tracked seconds
   after being confirmed does not produce a fresh provisional alert. A suppressed stage is not marked as fired:
   if the same track is still there when the cooldown ends, it alerts then.
7. Unknown faces (``rules.unknown_events``): one ``unknown`` event per track once the track has ``>= confirm_hits``
   votes, ``>= confirm_vote_fraction`` of them for nobody, and no person reached ``min_hits``. Not subject to
   cooldown (there is no person to key it by), but subject to zones and schedules.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from vigil.config import WEEKDAYS, CameraConfig, RulesConfig, ScheduleWindow, ZoneConfig
from vigil.errors import VigilError
from vigil.types import AlertStage, Decision, DecisionKind, ListKind, Match, Person, Track

# --------------------------------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gallery:
    """The enrolled people as matrices, built once per watchlist (``Gallery.from_people``).

    Scoring (see :func:`match_embedding`): a person's score is
    ``max(cos(query, prototype), max_k cos(query, photo_k))``.
    The prototype (mean of the photos) is the robust centre; the per-photo maximum rescues a query that resembles
    one enrolled view (e.g. a profile photo) better than the mean of frontal and profile views. The maximum over
    K+1 vectors lifts impostor scores slightly versus the prototype alone, so thresholds must be calibrated with
    this same function (``vigil eval`` does).
    """

    people: tuple[Person, ...]
    prototypes: np.ndarray  # (P, D) float32, unit rows
    photos: np.ndarray  # (N, D) float32, unit rows: every person's photo embeddings stacked
    photo_owner: np.ndarray  # (N,) int64: index into ``people`` for each row of ``photos``

    @classmethod
    def from_people(cls, people: Sequence[Person]) -> Gallery:
        """Stack prototypes and photo embeddings; rows are re-normalised (cosine needs unit vectors)."""
        people = tuple(people)
        if not people:
            return cls(people, np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), np.zeros(0, np.int64))
        dim = int(np.asarray(people[0].prototype).shape[-1])
        for person in people:
            _check_dim(person, dim)
        prototypes = _unit_rows(np.stack([np.asarray(p.prototype, np.float32).reshape(dim) for p in people]))
        photo_rows = [np.asarray(p.photo_embeddings, np.float32).reshape(-1, dim) for p in people]
        owner = np.concatenate([np.full(len(rows), i, np.int64) for i, rows in enumerate(photo_rows)])
        photos = _unit_rows(np.concatenate(photo_rows)) if len(owner) else np.zeros((0, dim), np.float32)
        return cls(people, prototypes, photos, owner)

    @property
    def dim(self) -> int:
        return int(self.prototypes.shape[1]) if self.people else 0

    def __len__(self) -> int:
        return len(self.people)


def _check_dim(person: Person, dim: int) -> None:
    proto_dim = int(np.asarray(person.prototype).shape[-1])
    photos = np.asarray(person.photo_embeddings)
    photo_dim = int(photos.shape[-1]) if photos.size else dim
    if proto_dim != dim or photo_dim != dim:
        raise VigilError(
            f"watchlist: person {person.id!r}: embedding size {proto_dim}/{photo_dim} differs from {dim} "
            "(enrolled with another model? re-run `vigil enroll`)"
        )


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


def person_scores(vector: np.ndarray, gallery: Gallery) -> np.ndarray:
    """Cosine score of ``vector`` (D,) against every person: (P,) float32, max over prototype and photos."""
    query = np.asarray(vector, np.float32).reshape(-1)
    if query.shape[0] != gallery.dim:
        raise ValueError(f"embedding has {query.shape[0]} dimensions, the gallery {gallery.dim}")
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    scores = gallery.prototypes @ query
    if len(gallery.photo_owner):
        np.maximum.at(scores, gallery.photo_owner, gallery.photos @ query)
    return scores


def match_embedding(vector: np.ndarray, gallery: Gallery) -> Match:
    """Best person for one embedding; margin = best minus second-best *person* (the score itself if only one)."""
    if len(gallery) == 0:
        return Match(person_id=None, score=0.0, margin=0.0)
    scores = person_scores(vector, gallery)
    best = int(np.argmax(scores))
    best_score = float(scores[best])
    if len(scores) == 1:
        return Match(person_id=gallery.people[best].id, score=best_score, margin=best_score)
    second = float(np.partition(scores, -2)[-2])
    return Match(person_id=gallery.people[best].id, score=best_score, margin=best_score - second)


def threshold_for(person: Person, rules: RulesConfig) -> float:
    """The person's own threshold when set, else the global ``match_threshold`` (cosine)."""
    if person.threshold is not None:
        return float(person.threshold)
    if rules.match_threshold is None:
        raise ValueError("rules.match_threshold is unresolved: pass the rules through runtime.effective_rules first")
    return rules.match_threshold


def passes_threshold(match: Match, person: Person, rules: RulesConfig) -> bool:
    """``match.score >= threshold_for(person)``; False when the match is for someone else."""
    return match.person_id == person.id and match.score >= threshold_for(person, rules)


def passes_margin(match: Match, rules: RulesConfig) -> bool:
    """Best-minus-second-best person margin is large enough to tell the two apart."""
    return match.margin >= rules.margin


def qualifies(match: Match, person: Person, rules: RulesConfig) -> bool:
    """A qualifying hit for ``person``: threshold and margin both pass."""
    return passes_threshold(match, person, rules) and passes_margin(match, rules)


def alert_label(kind: ListKind) -> str | None:
    """The alert label for a list, or None when that list never alerts (``allow``)."""
    return {ListKind.DENY: "watchlist", ListKind.VIP: "vip"}.get(kind)


# --------------------------------------------------------------------------------------------------------------------
# Zones and schedules
# --------------------------------------------------------------------------------------------------------------------


def box_center(box: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Centre (x, y) in pixels of an ``x1, y1, x2, y2`` box."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return (x1 + x2) / 2.0, (y1 + y2) / 2.0


def point_in_polygon(x: float, y: float, polygon: Sequence[tuple[float, float]]) -> bool:
    """Even-odd ray casting; any consistent answer on the border is fine for zones."""
    inside = False
    count = len(polygon)
    for i in range(count):
        xi, yi = polygon[i]
        xj, yj = polygon[i - 1]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
    return inside


def in_zones(box: Sequence[float] | np.ndarray, zones: Sequence[ZoneConfig], frame_shape: Sequence[int]) -> bool:
    """True when the box centre lies in any zone (polygons in normalised coordinates); no zones = everywhere.

    ``frame_shape`` is the image's ``(height, width[, channels])`` in pixels.
    """
    if not zones:
        return True
    height, width = int(frame_shape[0]), int(frame_shape[1])
    cx, cy = box_center(box)
    x_norm, y_norm = cx / max(width, 1), cy / max(height, 1)
    return any(point_in_polygon(x_norm, y_norm, zone.points_norm) for zone in zones)


def is_active(schedule: Sequence[ScheduleWindow], local: datetime) -> bool:
    """Whether a camera may alert at local time ``local``; an empty schedule means always.

    A window with ``start <= end`` covers ``[start, end]`` on each listed day (``end`` inclusive to the second).
    A window with ``end < start`` spans midnight: it starts on a listed day at ``start`` and runs into the next
    day until ``end``; the part after midnight belongs to the day the window started on.
    """
    if not schedule:
        return True
    now = local.time().replace(microsecond=0, tzinfo=None)
    today = WEEKDAYS[local.weekday()]
    yesterday = WEEKDAYS[(local - timedelta(days=1)).weekday()]
    for window in schedule:
        if window.start <= window.end:
            if today in window.days and window.start <= now <= window.end:
                return True
        elif (today in window.days and now >= window.start) or (yesterday in window.days and now <= window.end):
            return True
    return False


# --------------------------------------------------------------------------------------------------------------------
# Cooldown
# --------------------------------------------------------------------------------------------------------------------

CooldownKey = tuple[str, str, AlertStage]  # (camera, person_id, stage)
CooldownTable = dict[CooldownKey, float]  # -> monotonic seconds of the last alert


def cooldown_allows(
    table: CooldownTable, camera: str, person_id: str, stage: AlertStage, now_mono_s: float, cooldown_s: float
) -> bool:
    """Whether an alert of ``stage`` for (camera, person) may fire at ``now_mono_s``.

    Confirmed: no confirmed alert for the pair in the last ``cooldown_s``. Provisional: no alert of either stage.
    """
    stages = (AlertStage.CONFIRMED,) if stage is AlertStage.CONFIRMED else tuple(AlertStage)
    for blocking in stages:
        last = table.get((camera, person_id, blocking))
        if last is not None and now_mono_s < last + cooldown_s:
            return False
    return True


def record_alert(table: CooldownTable, camera: str, person_id: str, stage: AlertStage, now_mono_s: float) -> None:
    """Remember that ``stage`` fired for (camera, person) at ``now_mono_s``."""
    table[(camera, person_id, stage)] = now_mono_s


# --------------------------------------------------------------------------------------------------------------------
# Per-track state and the engine
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class TrackDecisionState:
    """Votes and fired stages of one (camera, track id). ``votes[None]`` counts hits that qualified for nobody."""

    vote_window_hits: int | None = None
    votes: Counter = field(default_factory=Counter)  # person id | None -> qualifying hits on the whole track
    recent: deque = field(default_factory=deque)  # last votes, only kept when a window is set
    total_votes: int = 0
    last_scores: dict[str, tuple[float, float]] = field(default_factory=dict)  # person -> latest (score, margin)
    fired: set[tuple[str, AlertStage]] = field(default_factory=set)
    unknown_fired: bool = False
    last_mono_s: float = 0.0

    def add_vote(self, person_id: str | None) -> None:
        self.votes[person_id] += 1
        self.total_votes += 1
        if self.vote_window_hits is not None:
            self.recent.append(person_id)
            while len(self.recent) > self.vote_window_hits:
                self.recent.popleft()

    def share(self, person_id: str | None) -> float:
        """Fraction of the (windowed) votes held by ``person_id``."""
        if self.vote_window_hits is not None:
            return sum(1 for vote in self.recent if vote == person_id) / max(len(self.recent), 1)
        return self.votes[person_id] / max(self.total_votes, 1)

    def hits_for(self, person_id: str) -> int:
        return self.votes[person_id]


def provisional_ready(state: TrackDecisionState, person_id: str, rules: RulesConfig) -> bool:
    return state.hits_for(person_id) >= rules.min_hits


def confirmed_ready(state: TrackDecisionState, person_id: str, rules: RulesConfig) -> bool:
    return state.hits_for(person_id) >= rules.confirm_hits and state.share(person_id) >= rules.confirm_vote_fraction


def unknown_ready(state: TrackDecisionState, rules: RulesConfig) -> bool:
    someone = any(pid is not None and n >= rules.min_hits for pid, n in state.votes.items())
    return state.total_votes >= rules.confirm_hits and state.share(None) >= rules.confirm_vote_fraction and not someone


class RulesEngine:
    """Owns per-track decision state and the cooldown table; one instance per process (all cameras).

    Not thread-safe: call it from the one thread that consumes tracks.
    """

    def __init__(
        self,
        rules: RulesConfig,
        people: Iterable[Person],
        vote_window_hits: int | None = None,
        camera_rules: Mapping[str, RulesConfig] | None = None,
    ) -> None:
        """``vote_window_hits``: count the confirm vote share over the last N votes only (None: whole track).
        ``camera_rules``: each configured camera's rules, its overrides applied (:mod:`vigil.camera_settings`); a
        camera not in it decides with ``rules``."""
        if vote_window_hits is not None and vote_window_hits < 1:
            raise ValueError("vote_window_hits must be >= 1")
        camera_rules = dict(camera_rules or {})
        unresolved = [name for name, own in camera_rules.items() if own.match_threshold is None]
        if rules.match_threshold is None or unresolved:
            where = f"camera {unresolved[0]}: " if unresolved else ""
            raise ValueError(
                f"{where}rules.match_threshold is unresolved: pass the rules through runtime.effective_rules first"
            )
        self.rules = rules
        self.match_threshold: float = rules.match_threshold  # the global threshold, resolved
        self.camera_rules = camera_rules
        self.vote_window_hits = vote_window_hits
        self._people: dict[str, Person] = {}
        self._tracks: dict[tuple[str, int], TrackDecisionState] = {}
        self._cooldown: CooldownTable = {}
        self.set_people(people)

    def set_people(self, people: Iterable[Person]) -> None:
        """Replace the watchlist (e.g. after re-enrolment); track and cooldown state are kept."""
        self._people = {person.id: person for person in people}

    def forget_people(self, person_ids: Iterable[str]) -> None:
        """Drop every track's votes and fired stages for these people (re-enrolled or removed): their earlier
        votes were cast against another gallery entry. Other people's state is untouched; cooldowns are kept (the
        person is the same, a re-enrolment must not re-alert at once)."""
        gone = set(person_ids)
        for state in self._tracks.values():
            for person_id in gone & set(state.votes):
                state.total_votes -= state.votes.pop(person_id)
                state.last_scores.pop(person_id, None)
            state.recent = deque((v for v in state.recent if v not in gone), maxlen=state.recent.maxlen)
            state.fired = {(pid, stage) for pid, stage in state.fired if pid not in gone}

    def rules_for(self, camera: str) -> RulesConfig:
        """The rules ``camera`` decides with: its own when it has overrides, else the global ones."""
        return self.camera_rules.get(camera, self.rules)

    @property
    def active_tracks(self) -> int:
        return len(self._tracks)

    def decide(
        self,
        camera: CameraConfig,
        track: Track,
        match: Match,
        frame_shape: Sequence[int],
        now_mono_s: float,
        now_wall: datetime,
        quality: float | None = None,
        box: np.ndarray | None = None,
    ) -> list[Decision]:
        """Count one hit of ``track`` (with its gallery ``match``) and return the alerts due now (usually none).

        ``frame_shape``: (height, width[, channels]) in pixels; ``now_mono_s``: monotonic seconds; ``now_wall``:
        local wall-clock time for schedules; ``quality``: this hit's face quality in [0, 1] (None: not gated);
        ``box``: this hit's face box for the zone test (default: the track's last box).
        """
        rules = self.rules_for(camera.name)
        state = self._state(camera.name, track.track_id)
        state.last_mono_s = now_mono_s
        if quality is not None and quality < rules.min_quality:
            return []
        person = self._people.get(match.person_id) if match.person_id is not None else None
        vote = person.id if person is not None and qualifies(match, person, rules) else None
        state.add_vote(vote)
        if vote is not None:
            state.last_scores[vote] = (match.score, match.margin)
        if not (
            is_active(camera.schedule, now_wall)
            and in_zones(track.box if box is None else box, camera.zones, frame_shape)
        ):
            return []
        decisions = [
            decision
            for person_id in [pid for pid in state.votes if pid is not None]
            if (decision := self._person_decision(camera.name, track.track_id, state, person_id, now_mono_s, rules))
        ]
        if rules.unknown_events and not state.unknown_fired and unknown_ready(state, rules):
            state.unknown_fired = True
            decisions.append(
                Decision(
                    DecisionKind.UNKNOWN, camera.name, track.track_id, None, None, "unknown", match.score, match.margin
                )
            )
        return decisions

    def _person_decision(
        self,
        camera: str,
        track_id: int,
        state: TrackDecisionState,
        person_id: str,
        now_mono_s: float,
        rules: RulesConfig,
    ) -> Decision | None:
        """At most one alert for one person on one hit: confirmed if due and allowed, else provisional."""
        person = self._people.get(person_id)
        label = alert_label(person.list) if person is not None else None
        if person is None or label is None:
            return None
        for stage, ready in (
            (AlertStage.CONFIRMED, confirmed_ready(state, person_id, rules)),
            (AlertStage.PROVISIONAL, provisional_ready(state, person_id, rules)),
        ):
            if not ready or (person_id, stage) in state.fired:
                continue
            if not cooldown_allows(self._cooldown, camera, person_id, stage, now_mono_s, rules.cooldown_s):
                continue
            state.fired.add((person_id, stage))
            if stage is AlertStage.CONFIRMED:
                state.fired.add((person_id, AlertStage.PROVISIONAL))  # a confirmed alert supersedes a late provisional
            record_alert(self._cooldown, camera, person_id, stage, now_mono_s)
            score, margin = state.last_scores.get(person_id, (0.0, 0.0))
            return Decision(DecisionKind.ALERT, camera, track_id, stage, person, label, score, margin)
        return None

    def _state(self, camera: str, track_id: int) -> TrackDecisionState:
        key = (camera, track_id)
        state = self._tracks.get(key)
        if state is None:
            state = self._tracks[key] = TrackDecisionState(vote_window_hits=self.vote_window_hits)
        return state

    def forget(self, camera: str, track_id: int) -> None:
        """Drop the state of a track that ended (its id will not come back on this camera)."""
        self._tracks.pop((camera, track_id), None)

    def forget_idle(self, now_mono_s: float, max_idle_s: float) -> int:
        """Drop tracks with no hit for ``max_idle_s`` (a safety net if ``forget`` was missed); returns how many."""
        stale = [key for key, state in self._tracks.items() if now_mono_s - state.last_mono_s > max_idle_s]
        for key in stale:
            del self._tracks[key]
        self._prune_cooldown(now_mono_s)
        return len(stale)

    def _prune_cooldown(self, now_mono_s: float) -> None:
        expired = [key for key, t in self._cooldown.items() if now_mono_s >= t + self.rules.cooldown_s]
        for key in expired:
            del self._cooldown[key]
