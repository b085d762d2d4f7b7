"""Editing the watchlist YAML: the file stays the source of truth, every change is atomic, the last version kept.

A change is read-modify-write under one lock: read and validate the current file (a broken hand edit refuses API
edits until it is fixed), apply the change to the validated model, validate the result, then
:func:`write_atomically`: the new text goes to a temporary file in the same folder, is fsync'ed, the current file
is copied to ``<name>.prev`` (also atomically), and the temporary file is renamed over the original (POSIX
``rename`` is atomic), then the folder is fsync'ed. A process killed at any instant leaves the old or the new file,
never a torn one (tests/test_watchlist_edit.py kills a writer with SIGKILL to check).

Photos added through the API go beside the file, ``photos/<person id>/<sha256 prefix>.<ext>``, named by their content
(never by the uploaded file name), written atomically before the YAML names them. Deleting a person or a photo
deletes the files that lie inside the watchlist's folder; a photo listed from elsewhere (``../shared/...``) is left
alone and reported. Comments in a hand-written file are not preserved by an API edit (``<name>.prev`` keeps them).
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

from vigil.errors import ConfigError
from vigil.store.db import ConflictError, NotFoundError
from vigil.watchlist import PersonEntry, Watchlist, load_watchlist

PHOTOS_DIRNAME = "photos"
PHOTO_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


class WatchlistFileError(ConflictError):
    """The watchlist on disk is invalid (a bad hand edit): API edits wait until it is fixed."""


@dataclass(frozen=True)
class DeletedPerson:
    entry: PersonEntry
    removed: list[Path]  # photo files deleted
    kept: list[Path]  # photos outside the watchlist's folder, not ours to delete


def photo_id(photo: Path | str) -> str:
    """A stable id for a photo as the YAML lists it (16 hex): URLs never carry a path."""
    return hashlib.sha256(str(photo).encode("utf-8")).hexdigest()[:16]


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, keep_previous: bool = False) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new content."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_previous and path.exists():
            write_atomically(path.with_name(path.name + ".prev"), path.read_bytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def dump_watchlist(people: list[PersonEntry], photo_dirs: tuple[Path, ...] = ()) -> bytes:
    """The file's text: ``photo_dirs`` (the folders photos may come from besides the file's own) kept as written."""
    entries = [person.model_dump(mode="json", exclude_none=True) for person in people]
    content: dict = {"photo_dirs": [str(folder) for folder in photo_dirs]} if photo_dirs else {}
    text = "# vigil watchlist (written by vigil's API; the previous version is in the .prev file beside it)\n"
    return (text + yaml.safe_dump({**content, "people": entries}, sort_keys=False, allow_unicode=True)).encode("utf-8")


class WatchlistEditor:
    """All changes to one watchlist file; thread-safe within the process."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.folder = self.path.parent.resolve()
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], Watchlist] | None = None

    def read(self) -> Watchlist:
        """The file as it is now (parsed again only when its size, mtime or inode changed)."""
        try:
            stat = self.path.stat()
            key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        except OSError:
            key = (0, 0, 0)
        cached = self._cache
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            watchlist = load_watchlist(self.path)
        except ConfigError as exc:
            raise WatchlistFileError(f"the watchlist file is invalid, fix it by hand first: {exc}") from None
        self._cache = (key, watchlist)
        return watchlist

    def person(self, person_id: str) -> PersonEntry:
        return self._find(self.read().people, person_id)

    def create(self, person: PersonEntry) -> PersonEntry:
        with self._lock:
            people = self.read().people
            if any(p.id == person.id for p in people):
                raise ConflictError(f"person {person.id!r} already exists")
            self._write([*people, person.model_copy(update={"photos": []})])
        return self.person(person.id)

    def update(self, person_id: str, changes: dict) -> PersonEntry:
        """Change name, list, threshold or notes (validated as the file is)."""
        with self._lock:
            people = self.read().people
            current = self._find(people, person_id)
            updated = PersonEntry.model_validate({**current.model_dump(), **changes})
            self._write([updated if p.id == person_id else p for p in people])
        return updated

    def delete(self, person_id: str) -> DeletedPerson:
        with self._lock:
            watchlist = self.read()
            entry = self._find(watchlist.people, person_id)
            self._write([p for p in watchlist.people if p.id != person_id])
        removed: list[Path] = []
        kept: list[Path] = []
        for photo in entry.photos:
            (removed if self._remove_file(watchlist.photo_path(photo)) else kept).append(photo)
        person_dir = self.folder / PHOTOS_DIRNAME / person_id
        if person_dir.is_dir() and not any(person_dir.iterdir()):
            person_dir.rmdir()
        return DeletedPerson(entry, removed, kept)

    def add_photo(self, person_id: str, data: bytes, suffix: str) -> Path:
        """Store a (validated) photo beside the file and list it; returns its path as the YAML lists it."""
        if suffix not in PHOTO_SUFFIXES:
            raise ValueError(f"photo suffix {suffix!r} is not one of {sorted(PHOTO_SUFFIXES)}")
        relative = Path(PHOTOS_DIRNAME) / person_id / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
        with self._lock:
            people = self.read().people
            current = self._find(people, person_id)
            if relative in current.photos:
                raise ConflictError(f"person {person_id!r}: this photo is already enrolled ({relative})")
            target = self.folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(target, data)
            updated = current.model_copy(update={"photos": [*current.photos, relative]})
            self._write([updated if p.id == person_id else p for p in people])
        return relative

    def remove_photo(self, person_id: str, photo_key: str) -> tuple[Path, bool]:
        """Unlist the photo whose :func:`photo_id` is ``photo_key``; (its path, whether the file was deleted)."""
        with self._lock:
            watchlist = self.read()
            current = self._find(watchlist.people, person_id)
            photo = self._find_photo(current, photo_key)
            updated = current.model_copy(update={"photos": [p for p in current.photos if p != photo]})
            self._write([updated if p.id == person_id else p for p in watchlist.people])
        return photo, self._remove_file(watchlist.photo_path(photo))

    def photo_file(self, person_id: str, photo_key: str) -> Path:
        """The file of one listed photo (any photo the YAML lists: the file is the admin's)."""
        watchlist = self.read()
        photo = self._find_photo(self._find(watchlist.people, person_id), photo_key)
        return watchlist.photo_path(photo)

    # ---- helpers ----
    def _write(self, people: list[PersonEntry]) -> None:
        write_atomically(self.path, dump_watchlist(people, self.read().photo_dirs), keep_previous=True)

    def _remove_file(self, path: Path) -> bool:
        """Delete a photo file only when it lies inside the watchlist's folder."""
        target = path.resolve()
        if not target.is_relative_to(self.folder) or not target.is_file():
            return False
        target.unlink()
        return True

    @staticmethod
    def _find(people: list[PersonEntry], person_id: str) -> PersonEntry:
        for person in people:
            if person.id == person_id:
                return person
        raise NotFoundError(f"person {person_id!r} is not on the watchlist")

    @staticmethod
    def _find_photo(person: PersonEntry, photo_key: str) -> Path:
        for photo in person.photos:
            if photo_id(photo) == photo_key:
                return photo
        raise NotFoundError(f"person {person.id!r} has no photo {photo_key!r}")
