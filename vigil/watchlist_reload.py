"""Hot reload of the watchlist, and the enrolment checks the server asks for; both run in the pipeline thread.

`vigil run` calls :meth:`WatchlistReloader.step` between batches. It first answers the photo checks queued by the
server (:class:`vigil.live.PhotoCheckQueue`) with the same face stages the pipeline uses, then, at most every
``interval_s`` or at once when the server asks (after an API edit), looks whether the watchlist file or one of its
photos changed (stat only: size, mtime, inode). On a change it re-enrols (the embedding cache makes unchanged photos
free), swaps the gallery into the pipeline, and tells the rules to forget only the people whose entry changed. A file
that does not load keeps the last good watchlist running; the error is logged once and shown in health.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np

from vigil.alerts import utc_timestamp
from vigil.errors import VigilError
from vigil.live import LiveHub, PhotoVerdict, WatchlistState
from vigil.types import Person
from vigil.watchlist import EnrollmentResult, PhotoAnalyzer, enrollable_face, load_watchlist

log = logging.getLogger("vigil.watchlist")
Fingerprint = tuple[tuple[str, int, int, int], ...]


class PeopleTarget(Protocol):
    def set_people(self, people: list[Person], changed: set[str]) -> None: ...


def file_fingerprint(paths: list[Path]) -> Fingerprint:
    """(path, size, mtime_ns, inode) per file; a missing file reads as zeros."""
    out = []
    for path in paths:
        try:
            stat = path.stat()
            out.append((str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino))
        except OSError:
            out.append((str(path), 0, 0, 0))
    return tuple(out)


def changed_people(before: dict[str, Person], after: list[Person]) -> set[str]:
    """Ids added, removed, or whose name, list, threshold or embeddings differ."""
    now = {person.id: person for person in after}
    changed = set(before) ^ set(now)
    for person_id in set(before) & set(now):
        old, new = before[person_id], now[person_id]
        if (old.name, old.list, old.threshold) != (new.name, new.list, new.threshold) or not (
            old.photo_embeddings.shape == new.photo_embeddings.shape
            and np.array_equal(old.photo_embeddings, new.photo_embeddings)
        ):
            changed.add(person_id)
    return changed


def photo_checker(analyzer: PhotoAnalyzer, min_face_px: int) -> Callable[[np.ndarray], PhotoVerdict]:
    """A photo's enrolment verdict through the face stages (the same rule as :class:`vigil.watchlist.Enroller`)."""

    def check(image: np.ndarray) -> PhotoVerdict:
        return enrollable_face(analyzer.observe([image])[0], min_face_px)[1]

    return check


class WatchlistReloader:
    def __init__(
        self,
        path: Path,
        enroll: Callable[[Path], EnrollmentResult],
        check_photo: Callable[[np.ndarray], PhotoVerdict],
        hub: LiveHub,
        enrollment: EnrollmentResult,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._enroll = enroll
        self._check_photo = check_photo
        self.hub = hub
        self.interval_s = interval_s
        self._clock = clock
        self._next_s = clock() + interval_s
        self._people = {person.id: person for person in enrollment.people}
        self._photo_files: list[Path] = []
        self._fingerprint = self._current_fingerprint(reparse=True)
        self.reloads = 0
        self._publish(enrollment)

    def step(self, target: PeopleTarget) -> bool:
        """Serve photo checks; reload when due and changed. True when a new watchlist was swapped in."""
        self._serve_photo_checks()
        now = self._clock()
        if not self.hub.reload_requested.is_set() and now < self._next_s:
            return False
        self._next_s = now + self.interval_s
        self.hub.reload_requested.clear()
        fingerprint = self._current_fingerprint()
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        return self._reload(target)

    def _reload(self, target: PeopleTarget) -> bool:
        try:
            result = self._enroll(self.path)
        except VigilError as exc:
            log.error("watchlist reload failed, the last good watchlist stays in use: %s", exc)
            self.hub.set_watchlist(replace(self.hub.watchlist, error=str(exc)))
            return False
        changed = changed_people(self._people, result.people)
        target.set_people(result.people, changed)
        self._people = {person.id: person for person in result.people}
        self.reloads += 1
        self._fingerprint = self._current_fingerprint(reparse=True)  # the reload may have read a newer file
        self._publish(result)
        log.info(
            "watchlist reloaded: %d people enrolled, changed: %s",
            len(result.people),
            ", ".join(sorted(changed)) or "none",
        )
        return True

    def _serve_photo_checks(self) -> None:
        for check in self.hub.photo_checks.take():
            if not check.future.set_running_or_notify_cancel():
                continue  # the server gave up waiting
            try:
                check.future.set_result(self._check_photo(check.image))
            except Exception as exc:  # a bad photo must not stop the pipeline
                check.future.set_exception(exc)

    def _current_fingerprint(self, reparse: bool = False) -> Fingerprint:
        """The file's and its photos' stats; the photo list is re-read only after a reload (polls only stat)."""
        if reparse:
            try:
                watchlist = load_watchlist(self.path)
                self._photo_files = [watchlist.photo_path(p) for person in watchlist.people for p in person.photos]
            except VigilError:
                self._photo_files = []
        return file_fingerprint([self.path, *self._photo_files])

    def _publish(self, result: EnrollmentResult) -> None:
        results: dict[str, dict[str, str]] = {}
        for person in result.people:
            results.setdefault(person.id, {})
        for problem in result.problems:
            results.setdefault(problem.person_id, {})[str(problem.photo)] = problem.reason
        self.hub.set_watchlist(
            WatchlistState(
                path=str(self.path),
                people=len(result.people),
                loaded_at=utc_timestamp(),
                error="",
                photo_results=results,
                enrolled=frozenset(person.id for person in result.people),
            )
        )
