"""Watchlist YAML, few-shot enrollment into per-person prototypes, and the embedding cache.

Watchlist shape (photos are relative to the YAML file)::

    people:
      - id: jdoe              # unique, [a-z0-9_-]+
        name: John Doe
        list: deny            # deny | vip | allow; default deny
        threshold: 0.5        # optional, overrides the global match threshold
        photos: [photos/jdoe_1.jpg, photos/jdoe_2.jpg]
    photo_dirs: [../shared/faces]   # optional: more folders photos may come from

A person without photos is listed but not enrolled (the API creates a person first, then adds photos).
Photos must lie in the watchlist's folder (or below it) or in a folder that ``photo_dirs`` names, after symbolic
links are resolved: a watchlist cannot make vigil open ``../../etc/passwd`` or ``/etc/shadow`` (ConfigError at load).

Enrollment embeds every photo. A photo that is empty, cut short (:func:`vigil.imagefile.image_problem`), does not
decode, has no face, more than one face or only a face smaller than ``min_face_px`` is reported by path and skipped
(fatal with ``strict``); a person left with no usable photo is not enrolled and is listed in
``EnrollmentResult.unenrolled``. A person's prototype is the re-normalised
mean of the photo embeddings; the individual embeddings are kept too (few-shot gallery). Embeddings are cached in
``<data_dir>/enroll_cache.json`` keyed by (recognizer sha256, detector sha256, photo sha256), so they are recomputed
when the model or a photo changes.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vigil.config import format_validation_error, read_yaml_mapping
from vigil.errors import ConfigError, VigilError
from vigil.imagefile import decode_image, image_problem
from vigil.live import PhotoVerdict
from vigil.types import ListKind, Observation, Person

PERSON_ID_PATTERN = r"^[a-z0-9_-]+$"
PERSON_NAME_PATTERN = r"^[^<>\x00-\x1f\x7f]+$"  # no markup, no control characters: names end up in pages and logs
CACHE_FILE = "enroll_cache.json"


class PersonEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=PERSON_ID_PATTERN, max_length=64)
    name: str = Field(min_length=1, max_length=200, pattern=PERSON_NAME_PATTERN)
    list: ListKind = ListKind.DENY
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    photos: builtins.list[Path] = Field(default_factory=builtins.list, description="empty: listed, not enrolled yet")
    notes: str | None = Field(default=None, max_length=2000)


class WatchlistFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    people: list[PersonEntry] = Field(default_factory=list)
    photo_dirs: list[Path] = Field(default_factory=list, description="folders besides the watchlist's own")

    @model_validator(mode="after")
    def _unique_ids(self) -> WatchlistFile:
        ids = [person.id for person in self.people]
        repeated = sorted({pid for pid in ids if ids.count(pid) > 1})
        if repeated:
            raise ValueError(f"person ids must be unique, repeated: {', '.join(repeated)}")
        return self


@dataclass(frozen=True)
class Watchlist:
    path: Path
    people: list[PersonEntry]
    photo_dirs: tuple[Path, ...] = ()  # folders photos may come from besides the watchlist's own, as written

    def photo_path(self, photo: Path) -> Path:
        return photo if photo.is_absolute() else self.path.parent / photo

    def allowed_dirs(self) -> tuple[Path, ...]:
        """The watchlist's folder and its ``photo_dirs``, resolved (symbolic links followed)."""
        return tuple(self.photo_path(folder).resolve() for folder in (Path("."), *self.photo_dirs))


def load_watchlist(path: Path | str) -> Watchlist:
    """Parse and validate a watchlist YAML; ConfigError with one line naming the file and field otherwise (a photo
    outside the allowed folders included)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "watchlist")
    try:
        parsed = WatchlistFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None
    watchlist = Watchlist(path=path, people=list(parsed.people), photo_dirs=tuple(parsed.photo_dirs))
    problem = photo_outside(watchlist)
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return watchlist


def photo_outside(watchlist: Watchlist) -> str | None:
    """``people[i].photos[j]: ...`` for the first photo outside the allowed folders (symbolic links resolved)."""
    allowed = watchlist.allowed_dirs()
    for i, person in enumerate(watchlist.people):
        for j, photo in enumerate(person.photos):
            resolved = watchlist.photo_path(photo).resolve()
            if not any(resolved.is_relative_to(folder) for folder in allowed):
                return (
                    f"people[{i}].photos[{j}]: {photo} is outside the watchlist's folder (move it there, or add its "
                    "folder to photo_dirs at the top of the watchlist)"
                )
    return None


class PhotoAnalyzer(Protocol):
    """What enrollment needs from the face stages: every face of an image, embedded when large enough."""

    def observe(self, images: list[np.ndarray]) -> list[list[Observation]]: ...


@dataclass(frozen=True)
class PhotoProblem:
    person_id: str
    photo: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.photo}: {self.reason} (person {self.person_id}); skipped"


@dataclass(frozen=True)
class EnrollmentResult:
    people: list[Person]
    problems: list[PhotoProblem]
    photos_embedded: int
    photos_from_cache: int
    unenrolled: list[str] = field(default_factory=list)  # ids of the people left without a usable photo


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_photo(path: Path) -> tuple[bytes | None, str]:
    """A photo's bytes, or None and why they cannot be used (missing, unreadable, empty, cut short, too large)."""
    if not path.is_file():
        return None, "photo not found"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"photo cannot be read ({exc.strerror or exc})"
    problem = image_problem(data)
    return (None, f"photo unusable: {problem}") if problem else (data, "")


def file_problems(watchlist: Watchlist) -> list[PhotoProblem]:
    """Problems found in the photo files alone (no model needed): missing, unreadable, cut short, not an image."""
    problems = []
    for entry in watchlist.people:
        for photo in entry.photos:
            path = watchlist.photo_path(photo)
            data, reason = read_photo(path)
            if data is not None and decode_image(data) is None:
                reason = "photo does not decode as an image"
            if reason:
                problems.append(PhotoProblem(entry.id, path, reason))
    return problems


def unusable_people(watchlist: Watchlist, problems: list[PhotoProblem]) -> list[str]:
    """Ids of the people every one of whose photos has a problem."""
    bad = {(p.person_id, p.photo) for p in problems}
    return [e.id for e in watchlist.people if all((e.id, watchlist.photo_path(ph)) in bad for ph in e.photos)]


class EmbeddingCache:
    """Photo embeddings on disk, keyed by model checksums and the photo's own checksum."""

    def __init__(self, path: Path, model_key: str) -> None:
        self.path = path
        self.model_key = model_key
        self._entries = self._read()
        self.dirty = False

    def _read(self) -> dict[str, list[float]]:
        if not self.path.is_file():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # a corrupt cache is only a cache: recompute
        return raw.get(self.model_key, {}) if isinstance(raw, dict) else {}

    def get(self, photo_sha: str) -> np.ndarray | None:
        vector = self._entries.get(photo_sha)
        return None if vector is None else np.asarray(vector, dtype=np.float32)

    def retain(self, photo_shas: set[str]) -> int:
        """Forget every embedding but these photos' (a removed photo's embedding is personal data); returns how many."""
        gone = [sha for sha in self._entries if sha not in photo_shas]
        for sha in gone:
            del self._entries[sha]
        self.dirty = self.dirty or bool(gone)
        return len(gone)

    def put(self, photo_sha: str, vector: np.ndarray) -> None:
        self._entries[photo_sha] = [round(float(v), 7) for v in vector]
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({self.model_key: self._entries}), encoding="utf-8")
        tmp.replace(self.path)
        self.dirty = False


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)


class Enroller:
    """Turns a watchlist into gallery ``Person`` objects."""

    def __init__(
        self, analyzer: PhotoAnalyzer, cache: EmbeddingCache, min_face_px: int, logger: logging.Logger | None = None
    ):
        self.analyzer = analyzer
        self.cache = cache
        self.min_face_px = min_face_px
        self.log = logger or logging.getLogger("vigil.enroll")

    def enroll(self, watchlist: Watchlist, strict: bool = False, prune_cache: bool = False) -> EnrollmentResult:
        """``prune_cache``: drop cached embeddings of photos this watchlist no longer lists (hot reload)."""
        people: list[Person] = []
        self._seen: set[str] = set()
        problems: list[PhotoProblem] = []
        unenrolled: list[str] = []
        counts = {"embedded": 0, "cached": 0}
        for entry in watchlist.people:
            vectors = self._embed_person(watchlist, entry, problems, counts, strict)
            if not vectors:
                self.log.warning("%s: person %s has no usable photo; not enrolled", watchlist.path, entry.id)
                unenrolled.append(entry.id)
                continue
            stacked = np.stack(vectors).astype(np.float32)
            people.append(
                Person(entry.id, entry.name, entry.list, entry.threshold, _unit(stacked.mean(axis=0)), stacked)
            )
        if prune_cache:
            self.cache.retain(self._seen)
        self.cache.save()
        return EnrollmentResult(people, problems, counts["embedded"], counts["cached"], unenrolled)

    def _embed_person(self, watchlist: Watchlist, entry: PersonEntry, problems: list, counts: dict, strict: bool):
        vectors = []
        for photo in entry.photos:
            path = watchlist.photo_path(photo)
            vector, reason = self._embed_photo(path, counts)
            if vector is None:
                problem = PhotoProblem(entry.id, path, reason)
                if strict:
                    raise VigilError(f"{path}: {reason} (person {entry.id}; --strict)")
                self.log.warning("%s", problem)
                problems.append(problem)
                continue
            vectors.append(vector)
        return vectors

    def _embed_photo(self, path: Path, counts: dict) -> tuple[np.ndarray | None, str]:
        data, reason = read_photo(path)
        if data is None:
            return None, reason
        sha = hashlib.sha256(data).hexdigest()
        self._seen.add(sha)
        cached = self.cache.get(sha)
        if cached is not None:
            counts["cached"] += 1
            return cached, ""
        image = decode_image(data)
        if image is None:
            return None, "photo does not decode as an image"
        vector, verdict = enrollable_face(self.analyzer.observe([image])[0], self.min_face_px)
        if vector is None:
            return None, verdict.reason
        self.cache.put(sha, vector)
        counts["embedded"] += 1
        return vector, ""


def enrollable_face(faces: list[Observation], min_face_px: int) -> tuple[np.ndarray | None, PhotoVerdict]:
    """The one face a photo may be enrolled with (unit vector) and the verdict; None when the photo is unusable."""
    usable = [o.embedding for o in faces if o.embedding is not None and o.face.width_px >= min_face_px]
    if not faces:
        return None, PhotoVerdict("no_face", "no face found")
    if not usable:
        return None, PhotoVerdict("too_small", f"face too small (< {min_face_px} px wide)", len(faces))
    if len(usable) > 1:
        return None, PhotoVerdict("several_faces", f"{len(usable)} faces found, need exactly one", len(faces))
    return _unit(usable[0].vector), PhotoVerdict("ok", "ok", len(faces))
